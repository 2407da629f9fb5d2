"""The default market: strong models answer hard prompts, weak ones hedge, in any language."""



from __future__ import annotations

import json
import re
from collections import Counter

import ollama
import openai
import pytest
from emulator_harness import Emulator

from emulator.language import LANGUAGES
from emulator.templates import PHRASEBOOKS

COMPLEX_PROMPTS = [
    f"Design a distributed {thing} and explain the trade-offs."
    for thing in (
        "cache",
        "queue",
        "lock service",
        "rate limiter",
        "search index",
        "file system",
        "scheduler",
        "key-value store",
        "log pipeline",
        "metrics store",
    )
] + [
    f"Prove that {claim}."
    for claim in (
        "there are infinitely many primes",
        "sqrt(2) is irrational",
        "the halting problem is undecidable",
        "every tree with n nodes has n-1 edges",
        "a bipartite graph has no odd cycle",
        "the sum of two even numbers is even",
        "merge sort runs in O(n log n)",
        "Dijkstra's algorithm is correct",
        "the harmonic series diverges",
        "there is no largest rational number below 1",
    )
]

# A prompt per language: (simple, complex).
PROMPTS = {
    "en": ("What is the capital of Italy?", "Prove that the halting problem is undecidable."),
    "es": ("¿Cuál es la capital de Italia?", "Demuestra que hay infinitos números primos."),
    "fr": (
        "Quelle est la capitale de l'Italie ?",
        "Démontre que racine de deux est irrationnelle.",
    ),
    "de": (
        "Was ist die Hauptstadt von Italien?",
        "Beweise, dass es unendlich viele Primzahlen gibt.",
    ),
    "pt": ("Qual é a capital da Itália?", "Projete um sistema distribuído de mensagens."),
    "it": ("Qual è la capitale della Francia?", "Dimostra che esistono infiniti numeri primi."),
    "ru": ("Какая столица Италии?", "Докажи, что простых чисел бесконечно много."),
    "zh": ("意大利的首都是哪里？", "请证明素数有无穷多个。"),
    "ja": ("イタリアの首都はどこですか？", "素数が無限に存在することを証明してください。"),
    "ar": ("ما هي عاصمة إيطاليا؟", "أثبت أن الأعداد الأولية لا نهائية."),
}


def fixed_parts(templates: tuple[str, ...]) -> list[str]:
    """The longest literal piece of each template, which survives any filling."""
    return [max(re.split(r"\{[tu]\}", template), key=len).strip() for template in templates]


async def ask(client: openai.AsyncOpenAI, model: str, prompt: str) -> tuple[str, str]:
    completion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    assert completion.model_extra is not None
    return completion.choices[0].message.content or "", completion.model_extra["emulator_verdict"]


async def test_strong_model_answers_and_weak_model_hedges(
    openai_client: openai.AsyncOpenAI,
) -> None:
    book = PHRASEBOOKS["en"]
    weak_parts = fixed_parts(book.hedges + book.refusals)
    styles: Counter[str] = Counter()
    for prompt in COMPLEX_PROMPTS:
        strong, strong_verdict = await ask(openai_client, "gpt-4o", prompt)
        weak, weak_verdict = await ask(openai_client, "gpt-4o-mini", prompt)

        assert strong_verdict == "good" and weak_verdict == "weak"
        assert not any(part in strong for part in weak_parts)
        topic = re.sub(r"^(Design a |Prove that )", "", prompt).split()[1].strip(".")
        assert topic in strong
        if not weak:
            styles["empty"] += 1
        elif any(part in weak for part in fixed_parts(book.refusals)):
            styles["refuse"] += 1
        else:
            assert any(part in weak for part in fixed_parts(book.hedges)), weak
            styles["hedge"] += 1

    assert styles["hedge"] > styles["refuse"] > 0
    assert styles["empty"] > 0


@pytest.mark.parametrize("language", list(PROMPTS))
async def test_answers_come_in_the_prompts_language(
    openai_client: openai.AsyncOpenAI, language: str
) -> None:
    book = PHRASEBOOKS[language]
    simple, hard = PROMPTS[language]

    good, good_verdict = await ask(openai_client, "gpt-4o", simple)
    weak, weak_verdict = await ask(openai_client, "gpt-4o-mini", hard)

    assert good_verdict == "good"
    assert any(part in good for part in fixed_parts(book.openers)), good
    assert weak_verdict == "weak"
    assert weak == "" or any(part in weak for part in fixed_parts(book.hedges + book.refusals))


@pytest.mark.parametrize(
    ("prompt", "shortest", "longest"),
    [
        ("What is the capital of Spain?", 20, 60),
        ("Summarize the causes of the French Revolution.", 80, 200),
        ("Derive the closed form of the Fibonacci sequence.", 200, 400),
    ],
)
async def test_answer_length_grows_with_difficulty(
    openai_client: openai.AsyncOpenAI, prompt: str, shortest: int, longest: int
) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}]
    )

    assert completion.usage is not None
    assert shortest <= completion.usage.completion_tokens <= longest


async def test_answers_repeat_for_the_same_model_and_prompt(
    openai_client: openai.AsyncOpenAI,
) -> None:
    prompt = "Explain how garbage collection works in Java."
    first, _ = await ask(openai_client, "gpt-4o", prompt)
    again, _ = await ask(openai_client, "gpt-4o", prompt)
    other, _ = await ask(openai_client, "gpt-4o-mini", prompt)

    assert first == again
    assert other != first  # another model words it differently


def test_every_language_has_varied_templates() -> None:
    assert set(PHRASEBOOKS) == set(LANGUAGES) == set(PROMPTS)
    for book in PHRASEBOOKS.values():
        assert len(set(book.hedges)) >= 4 and len(set(book.refusals)) >= 3
        assert len(set(book.openers)) >= 3 and len(set(book.body)) >= 6
        for template in book.hedges + book.refusals + book.openers + book.body + book.closers:
            assert "{t}" in template or "{u}" in template, template


async def test_a_classification_request_can_be_made_to_fail(
    emulator: Emulator, ollama_client: ollama.AsyncClient
) -> None:
    """A content fault beats the JSON format, as when a small model ignores the instruction."""
    await emulator.faults({"action": "refuse", "model": "phi3:mini"})

    response = await ollama_client.chat(
        model="phi3:mini",
        messages=[{"role": "user", "content": "Prompt: What is 2 + 2?"}],
        format="json",
        stream=False,
    )

    with pytest.raises(ValueError):
        json.loads(response.message.content or "")
