"""The emulator's own guess at how hard a prompt is: keyword lists in ten languages plus length.

Deliberately independent of the router's classifier, so the router is judged against a
different opinion of difficulty, as it would be against real models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .language import detect_language, key_terms

# A trailing "*" marks a stem; other entries must end on a word boundary. Latin and Cyrillic
# entries must also start on one; Chinese, Japanese and Arabic ones match anywhere, because
# those scripts glue words and particles together.
_COMPLEX: dict[str, str] = {
    "en": "prove|proof|derive|derivation|design a system|system design|architect*|distributed|"
    "trade-off*|tradeoff*|concurren*|consensus|scalab*|theorem|rigorous*|formally|asymptotic*|"
    "race condition*|deadlock*|fault-toleran*|fault toleran*|lock-free|in depth|end-to-end",
    "es": "demuestra|demostrar|demostración|deriva|derivar|diseña un sistema|diseñar un sistema|"
    "distribuid*|compensaciones|concurrencia|escalabilidad|teorema|tolerancia a fallos|consenso",
    "fr": "prouve|prouver|démontre|démontrer|démonstration|dériver|concevoir un système|"
    "conçois un système|distribué*|compromis|concurrence|scalabilité|théorème|"
    "tolérance aux pannes",
    "de": "beweise|beweisen|herleiten|herleitung|entwirf ein system|entwerfen sie ein system|"
    "systemdesign|verteilt*|abwägung*|zielkonflikt*|nebenläufig*|parallelität|skalierbar*|"
    "theorem|fehlertoleran*|konsens",
    "pt": "provar|demonstre|demonstrar|derivar|projete um sistema|projetar um sistema|"
    "distribuíd*|compensações|concorrência|escalabilidade|teorema|tolerância a falhas",
    "it": "dimostra|dimostrare|dimostrazione|derivare|progetta un sistema|"
    "progettare un sistema|distribuit*|compromessi|concorrenza|scalabilità|teorema|"
    "tolleranza ai guasti",
    "ru": "докажи|доказать|доказательств*|выведи|вывести|спроектируй*|спроектировать|"
    "проектирование систем*|распределённ*|распределенн*|компромисс*|параллелизм*|"
    "конкурентност*|масштабируем*|теорем*|отказоустойчив*|консенсус*",
    "zh": "证明|推导|设计一个系统|系统设计|架构|分布式|权衡|并发|可扩展|定理|容错|共识",
    "ja": "証明|導出|システムを設計|システム設計|アーキテクチャ|分散|トレードオフ|並行|並列|"
    "スケーラブル|定理|耐障害|フォールトトレラン|合意形成",
    "ar": "أثبت|برهن|برهان|اشتق|صمم نظام|تصميم نظام|موزع|المفاضل|التزامن|قابلية التوسع|"
    "مبرهنة|تحمل الأخطاء",
}
_MEDIUM: dict[str, str] = {
    "en": "explain|describe|write a function|write a program|write code|write a script|"
    "implement|compare|summari*|summary|email|e-mail|letter|essay|outline|analy*|"
    "difference between|pros and cons|how does|how do|why does|why is|translate|refactor|"
    "debug|review|step by step|recommend",
    "es": "explica|explicar|describe|describir|escribe una función|escribe un programa|"
    "implementa|compara|comparar|resume|resumir|resumen|correo|carta|ensayo|analiza|"
    "diferencia entre|ventajas y desventajas|cómo funciona|por qué|traduce",
    "fr": "explique|expliquer|décris|décrire|écris une fonction|écrire une fonction|"
    "implémente|compare|comparer|résume|résumer|résumé|e-mail|courriel|lettre|essai|"
    "analyse|différence entre|avantages et inconvénients|comment fonctionne|pourquoi|traduis",
    "de": "erkläre|erklären|beschreibe|beschreiben|schreibe eine funktion|"
    "schreib eine funktion|implementiere|vergleiche|vergleichen|fasse zusammen|"
    "zusammenfassung|e-mail|einen brief|aufsatz|analysiere|unterschied zwischen|"
    "vor- und nachteile|wie funktioniert|warum|übersetze",
    "pt": "explique|explicar|descreva|descrever|escreva uma função|escreva um programa|"
    "implemente|compare|comparar|resuma|resumir|resumo|e-mail|carta|redação|analise|"
    "diferença entre|prós e contras|como funciona|por que|traduza",
    "it": "spiega|spiegare|descrivi|descrivere|scrivi una funzione|scrivi un programma|"
    "implementa|confronta|confrontare|riassumi|riassumere|riassunto|email|lettera|saggio|"
    "analizza|differenza tra|pro e contro|come funziona|perché|traduci",
    "ru": "объясни|объяснить|опиши|описать|напиши функцию|напиши программу|реализуй|сравни|"
    "сравнить|кратко изложи|резюмируй|перескажи|письмо|эссе|проанализируй|разница между|"
    "плюсы и минусы|как работает|почему|переведи",
    "zh": "解释|说明|描述|写一个函数|编写|实现|比较|对比|总结|概括|摘要|邮件|文章|分析|区别|优缺点|"
    "为什么|翻译",
    "ja": "説明|解説|関数を書|プログラムを書|実装|比較|要約|まとめ|メール|手紙|エッセイ|分析|違い|"
    "長所と短所|メリットとデメリット|仕組み|なぜ|翻訳",
    "ar": "اشرح|وضح|اكتب دالة|اكتب برنامج|قارن|لخص|ملخص|بريد|رسالة|مقال|حلل|الفرق بين|"
    "المزايا والعيوب|كيف يعمل|لماذا|ترجم",
}
_UNBOUNDED = frozenset(("zh", "ja", "ar"))

LABELS = {1: "simple", 2: "medium", 3: "complex"}
_MEDIUM_WORDS = 60  # a question this long is rarely a one-liner
_LONG_WORDS = 300  # ... and this long adds a level on top of its keywords


def _compile(table: dict[str, str]) -> re.Pattern[str]:
    alternatives = []
    for language, entries in table.items():
        for entry in entries.split("|"):
            stem = entry.endswith("*")
            body = re.escape(entry.rstrip("*"))
            if language not in _UNBOUNDED:
                body = r"\b" + body + ("" if stem else r"\b")
            alternatives.append(body)
    return re.compile("|".join(alternatives))


_COMPLEX_PATTERN = _compile(_COMPLEX)
_MEDIUM_PATTERN = _compile(_MEDIUM)


@dataclass(frozen=True, slots=True)
class PromptProfile:
    difficulty: int
    confidence: float
    language: str
    terms: tuple[str, ...]

    @property
    def label(self) -> str:
        return LABELS[self.difficulty]


@lru_cache(maxsize=8192)
def profile(prompt: str) -> PromptProfile:
    """Difficulty, confidence, language and topic words of a prompt; cached for repeats."""
    language = detect_language(prompt)
    difficulty, confidence = _estimate(prompt.lower(), _word_count(prompt, language))
    return PromptProfile(difficulty, confidence, language, key_terms(prompt, language))


def _estimate(text: str, words: int) -> tuple[int, float]:
    complex_hits = len(_COMPLEX_PATTERN.findall(text))
    medium_hits = len(set(_MEDIUM_PATTERN.findall(text)))
    if complex_hits:
        level, confidence = 3, min(0.95, 0.8 + 0.05 * complex_hits)
    elif medium_hits >= 3 and words >= 40:
        level, confidence = 3, 0.65
    elif medium_hits:
        level, confidence = 2, min(0.9, 0.75 + 0.05 * medium_hits)
    elif words >= _MEDIUM_WORDS:
        level, confidence = 2, 0.6
    else:
        level, confidence = 1, 0.85 if words <= 12 else 0.7
    if words >= _LONG_WORDS and level < 3:
        level, confidence = level + 1, 0.6
    return level, round(confidence, 2)


def _word_count(text: str, language: str) -> int:
    if language in ("zh", "ja"):
        return len(text) // 2  # about two characters a word
    return len(text.split())
