"""Keyword rules: the backend that needs nothing, used when every other backend is unavailable."""

from __future__ import annotations

import re

from .verdict import Verdict, excerpt

_COMPLEX = re.compile(
    r"\b(prove|proof|derive|design (a|an) .*(system|architecture|service)|distributed|"
    r"concurren\w*|race condition|deadlock|threat model|trade-?offs?|at scale|"
    r"architect\w*|optimi[sz]e .* (latency|throughput)|formal\w*|theorem)\b",
    re.IGNORECASE,
)
_MEDIUM = re.compile(
    r"\b(explain|why|how does|compare|difference between|write (a|an)|summari[sz]e|"
    r"function|query|sql|script|email|pros and cons|example|implement|debug|review)\b",
    re.IGNORECASE,
)


def classify(text: str) -> Verdict:
    sample = excerpt(text)
    if _COMPLEX.search(sample):
        return Verdict("complex", 0.6, "rules")
    if _MEDIUM.search(sample):
        return Verdict("medium", 0.55, "rules")
    return Verdict("simple", 0.5, "rules")
