"""The emulator's own difficulty and language guesses, which decide who answers well."""



from __future__ import annotations

import pytest

from emulator.heuristics import profile
from emulator.language import detect_language, key_terms
from emulator.tokens import estimate_prompt_tokens, split_tokens


@pytest.mark.parametrize(
    ("prompt", "difficulty"),
    [
        ("What is the capital of France?", 1),
        ("Who wrote Hamlet?", 1),
        ("How many legs does a spider have?", 1),
        ("Explain how a hash map works.", 2),
        ("Write a function that reverses a linked list.", 2),
        ("Compare Python and Go for web services.", 2),
        ("Summarize this article in three bullet points.", 2),
        ("Write an email to my landlord about the broken heater.", 2),
        ("Prove that there are infinitely many primes.", 3),
        ("Design a system for distributed rate limiting.", 3),
        ("What are the trade-offs of optimistic concurrency control?", 3),
        ("Derive the gradient of the softmax cross-entropy loss.", 3),
        ("¿Cuál es la capital de Francia?", 1),
        ("Explica cómo funciona un motor eléctrico.", 2),
        ("Demuestra que la raíz de dos es irracional.", 3),
        ("Explique le fonctionnement de la photosynthèse.", 2),
        ("Démontre le théorème de Pythagore.", 3),
        ("Erkläre, wie ein Transistor funktioniert.", 2),
        ("Entwirf ein System für verteilte Transaktionen.", 3),
        ("Explique como funciona a fotossíntese.", 2),
        ("Spiega come funziona un transistor.", 2),
        ("Dimostra che la radice di due è irrazionale.", 3),
        ("Какая столица Франции?", 1),
        ("Объясни, как работает двигатель.", 2),
        ("Спроектируй распределённую систему очередей.", 3),
        ("法国的首都是哪里？", 1),
        ("解释一下光合作用。", 2),
        ("设计一个分布式系统来处理支付。", 3),
        ("フランスの首都はどこですか？", 1),
        ("光合作用の仕組みを説明してください。", 2),
        ("分散システムを設計してください。", 3),
        ("ما هي عاصمة فرنسا؟", 1),
        ("اشرح كيف تعمل الطاقة الشمسية.", 2),
        ("أثبت أن الجذر التربيعي لاثنين عدد غير نسبي.", 3),
    ],
)
def test_difficulty(prompt: str, difficulty: int) -> None:
    assert profile(prompt).difficulty == difficulty


def test_a_long_plain_question_is_at_least_medium() -> None:
    question = "Tell me about the history of the town where I grew up near the river " * 6

    assert profile(question).difficulty == 2


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the weather like in the mountains today?", "en"),
        ("¿Qué tiempo hace hoy en las montañas?", "es"),
        ("Quel temps fait-il aujourd'hui dans les montagnes ?", "fr"),
        ("Wie ist das Wetter heute in den Bergen?", "de"),
        ("Como está o tempo hoje nas montanhas?", "pt"),
        ("Che tempo fa oggi in montagna?", "it"),
        ("Какая сегодня погода в горах?", "ru"),
        ("今天山里的天气怎么样？", "zh"),
        ("今日の山の天気はどうですか？", "ja"),
        ("كيف هو الطقس اليوم في الجبال؟", "ar"),
    ],
)
def test_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_topic_words_skip_function_words_and_keep_phrases() -> None:
    assert key_terms("Explain how TCP congestion control works, please.", "en") == (
        "TCP congestion control",
    )
    assert key_terms("What is it?", "en") == ("your question",)


def test_profiles_are_cached() -> None:
    prompt = "A prompt asked twice by a benchmark."
    profile(prompt)
    hits = profile.cache_info().hits

    profile(prompt)

    assert profile.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    "text", ["Hello, world!  Two spaces.\n\nNew paragraph.", "你好，世界。", "", "  padded  "]
)
def test_tokens_join_back_into_the_text(text: str) -> None:
    assert "".join(split_tokens(text)) == text


def test_prompt_tokens_are_about_four_bytes_each() -> None:
    assert estimate_prompt_tokens(["a" * 400]) == 100 + 4
    assert estimate_prompt_tokens(["你好"]) == 2 + 4  # six UTF-8 bytes
