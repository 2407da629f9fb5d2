"""phi3:mini (or any configured model) on Ollama, asked for JSON, within a time budget.

When Ollama is unreachable or lacks the model, the backend stands aside for a while instead of
making every request wait for a refused connection; slow or nonsensical answers fall through to
the next backend.
"""

from __future__ import annotations

import json
import time

import structlog

from shared.config import DIFFICULTIES
from shared.providers import ProviderError, Providers

from .verdict import Verdict, excerpt

log = structlog.get_logger(__name__)

STAND_ASIDE_S = 30.0
INSTRUCTIONS = (
    "You rate how much work an AI assistant needs to answer a user's prompt well. Reply with "
    'JSON only: {"difficulty": "simple" | "medium" | "complex", "confidence": 0.0-1.0}.\n'
    "simple: one fact, one step or a mechanical transform; a short answer (capitals, dates, unit "
    "conversions, translating a word, small arithmetic, fixing a typo, greetings).\n"
    "medium: a paragraph of explanation, a standard snippet, a comparison, light reasoning in a "
    "few steps (explain with an example, a short email, a SQL query, a small function, pros and "
    "cons, one word problem, summarising a given passage).\n"
    "complex: multi-step reasoning, design under constraints, proofs, hard or long code, deep "
    "expert analysis with trade-offs.\n"
    "Judge the work, not the length or the language: a long pasted document with a simple "
    "question about it is simple. When torn, choose the higher."
)


class OllamaBackend:
    name = "ollama"

    def __init__(self, providers: Providers, model: str, timeout_s: float) -> None:
        self._providers = providers
        self._model = model
        self._timeout_s = timeout_s
        self._aside_until = 0.0
        # Until one call has answered, only one request at a time asks (the others go to the
        # next backend): a burst must not send hundreds of calls to an Ollama that is not there.
        self._answered = False
        self._probing = False

    def warm_up(self) -> None:
        """The SDK's import and client, now rather than on the first request's event loop."""
        self._providers.prepare({"ollama"})

    async def classify(self, text: str) -> Verdict | None:
        if time.monotonic() < self._aside_until or self._probing:
            return None
        probe = not self._answered
        self._probing = probe
        messages = [{"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": f"<prompt>{excerpt(text)}</prompt>"}]
        try:
            completion = await self._providers.get("ollama").complete(
                self._model, messages, max_tokens=40, temperature=0.0,
                timeout=self._timeout_s, logprobs=False, json_format=True,
            )
        except ProviderError as error:
            if error.kind in ("connection", "rejected"):
                self._aside_until = time.monotonic() + STAND_ASIDE_S
                self._answered = False
                log.info("classifier.ollama_unavailable", reason=error.reason,
                         retry_in_s=STAND_ASIDE_S)
            return None
        finally:
            if probe:
                self._probing = False
        self._answered = True
        return _parse(completion.text)


def _parse(answer: str) -> Verdict | None:
    try:
        data = json.loads(answer)
        difficulty = data["difficulty"]
        confidence = float(data.get("confidence", 0.6))
    except (ValueError, KeyError, TypeError):
        return None
    if difficulty not in DIFFICULTIES or not 0.0 <= confidence <= 1.0:
        return None
    return Verdict(difficulty, confidence, "ollama")
