"""Crude language detection and topic words, enough to answer a prompt in its own language."""

# ruff: noqa: RUF001  (the text is meant to be Cyrillic, CJK and Arabic)

from __future__ import annotations

import re

LANGUAGES = ("en", "es", "fr", "de", "pt", "it", "ru", "zh", "ja", "ar")

_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_WORD_OR_MARK = re.compile(_WORD.pattern + r"|[^\w\s]")
_MIN_WORD = 3
_MAX_PHRASE_WORDS = 3

# Function words and instruction verbs: they tell the language apart and are never topics.
_STOPWORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the is are was what how of and to in a an why does do you it this that with for can "
        "which who please write explain describe tell give me my about between from when "
        "should would could have has your its into than then there these those design build "
        "create make list show find calculate implement compare summarize prove derive work "
        "works using use them they we our us he she his her not all any some more most other "
        "such only so too very just also here where out over under on at by or if but as was "
        "were will may might must vs",
        "es": "el la los las es qué que cómo como por para una un del en y de con son está cuál "
        "cuáles puedes mi se lo al sobre entre cuando escribe explica describe dime dame "
        "porque también muy pero sus este esta hay hoy fue ser tiene hace dónde cuándo quién "
        "cuánto eso esto usted tú yo nos les su ya donde desde hasta sin",
        "fr": "le la les est quel quelle comment pour une un des du et de en avec sont qu que "
        "pourquoi je vous ce cette dans il elle sur entre quand écris explique décris "
        "donne moi mon au aux pas ne ils nous fait aujourd'hui où qui quoi ces mais ou leur "
        "très tout être avoir peut fait-il est-ce",
        "de": "der die das ist und wie was warum ein eine mit für von zu den dem sind ich nicht "
        "auf es sie wer welche zwischen wann schreibe erkläre beschreibe gib mir mein "
        "bitte einen einer auch oder dass gibt viele sehr haben wird kann heute im in bei über "
        "nach noch nur wo ob aber sich uns ihr werden hat war",
        "pt": "o a os as é que como por para uma um do da dos das em e com são não você qual "
        "quais meu se sobre entre quando escreva explique descreva me dê também muito mas "
        "seu sua de na no nas nos está hoje ao aos à às pelo pela isso isto esse essa onde "
        "quem tem foi há",
        "it": "il lo la gli le è che come perché per una un del della di e con sono non qual "
        "quale cosa mi si nel sul tra quando scrivi spiega descrivi dimmi dammi anche "
        "molto ma suo sua in oggi fa dove chi ci ha hanno questo questa quello essere alla "
        "alle dei delle nella nei più mio tuo",
        "ru": "и в во не что как почему на с со по для это из у о об от до ли же но или мне "
        "мой между когда напиши объясни опиши расскажи дай такое какой какая докажи выведи "
        "спроектируй сравни переведи",
        "ar": "في من على إلى عن ما ماذا كيف لماذا هل هو هي هذا هذه التي الذي و أو مع بين "
        "عندما اكتب اشرح صف أعطني",
    }.items()
}
_LATIN_LANGUAGES = ("en", "es", "fr", "de", "pt", "it")

# Han characters that glue a Chinese sentence together rather than name its topic.
_ZH_GLUE = re.compile(
    r"[^\u4e00-\u9fff]+|请|解释|说明|描述|什么|怎么|如何|为什么|一下|一个|是|的|了|吗|呢|吧|和|与|或|在|我|你"
)
_JA_TOPIC = re.compile(r"[\u4e00-\u9fff\u30a0-\u30ff]{2,}")
_JA_GLUE = frozenset(("説明", "解説", "教", "記述", "何", "場合", "方法"))

FALLBACK_TERMS: dict[str, tuple[str, str]] = {
    "en": ("your question", "the surrounding context"),
    "es": ("tu pregunta", "el contexto"),
    "fr": ("votre question", "le contexte"),
    "de": ("Ihre Frage", "der Kontext"),
    "pt": ("sua pergunta", "o contexto"),
    "it": ("la tua domanda", "il contesto"),
    "ru": ("ваш вопрос", "контекст"),
    "zh": ("这个问题", "相关背景"),
    "ja": ("この質問", "その背景"),
    "ar": ("سؤالك", "السياق"),
}

_MAX_TERMS = 6


def detect_language(text: str) -> str:
    """The script decides for zh/ja/ru/ar; stopword votes decide among Latin-script languages."""
    scripts = {
        "kana": len(_KANA.findall(text)),
        "han": len(_HAN.findall(text)),
        "ru": len(_CYRILLIC.findall(text)),
        "ar": len(_ARABIC.findall(text)),
        "latin": len(_LATIN.findall(text)),
    }
    script = max(scripts, key=scripts.__getitem__)
    if scripts[script] == 0 or script == "latin":
        return _vote_latin(text)
    if script in ("kana", "han"):
        return "ja" if scripts["kana"] else "zh"
    return script


def key_terms(text: str, language: str) -> tuple[str, ...]:
    """Up to six distinct topic words of the prompt, in order of appearance."""
    if language == "zh":
        candidates = [chunk[:6] for chunk in _ZH_GLUE.split(text) if len(chunk) >= 2]
    elif language == "ja":
        candidates = [run for run in _JA_TOPIC.findall(text) if run not in _JA_GLUE]
    else:
        candidates = _phrases(text, _STOPWORDS.get(language, frozenset()))
    terms = tuple(dict.fromkeys(candidates))[:_MAX_TERMS]
    return terms or FALLBACK_TERMS[language][:1]


def _phrases(text: str, stopwords: frozenset[str]) -> list[str]:
    """Runs of up to three content words ("TCP congestion control"), split at stopwords."""
    phrases: list[str] = []
    run: list[str] = []
    for match in _WORD_OR_MARK.finditer(text):
        word = match.group()
        if len(word) >= _MIN_WORD and word.lower() not in stopwords:
            run.append(word)
            if len(run) < _MAX_PHRASE_WORDS:
                continue
        if run:
            phrases.append(" ".join(run))
            run = []
    if run:
        phrases.append(" ".join(run))
    return phrases


def _vote_latin(text: str) -> str:
    votes = dict.fromkeys(_LATIN_LANGUAGES, 0)
    for word in _WORD.findall(text.lower()):
        for language in _LATIN_LANGUAGES:
            if word in _STOPWORDS[language]:
                votes[language] += 1
    best = max(votes, key=votes.__getitem__)  # ties keep the earlier, English first
    return best if votes[best] else "en"
