"""The optional judge: a cheap model asked whether an answer addresses the prompt. It catches
what phrase lists cannot (a fluent answer to another question), at the price of one more call,
which is recorded as an attempt (outcome "judge") so its cost shows in the ledger."""

from __future__ import annotations

from shared.config import JudgeConfig, ModelRef
from shared.messages import Attempt, Outcome
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import Providers

from .calls import json_verdict, paid_call, tagged

EXCERPT_CHARS = 2000
VERDICT_TOKENS = 20
INSTRUCTIONS = (
    "You check an AI assistant's answer. Reply with JSON only: "
    '{"addresses": true} if the answer actually answers the question, or '
    '{"addresses": false} if it dodges it, hedges instead of answering, refuses, or answers '
    "something else."
)


class Judge:
    def __init__(self, config: JudgeConfig, providers: Providers, pricer: Pricer) -> None:
        self._config = config
        self._ref = ModelRef(provider=config.provider, model=config.model)
        self._providers = providers
        self._pricer = pricer

    async def addresses(self, prompt: str, answer: str, *, n: int, hop: int, tier: str,
                        seconds_left: float) -> tuple[bool | None, Attempt]:
        """Whether the answer addresses the prompt (None: the judge could not say), and the
        attempt that records the call, made within the request's `seconds_left`."""
        text, call = await paid_call(
            self._providers, self._pricer, self._ref, _messages(prompt, answer),
            outcome=Outcome.JUDGE, n=n, hop=hop, tier=tier, max_tokens=VERDICT_TOKENS,
            timeout=min(self._config.timeout_s, seconds_left), json_format=True)
        if text is None:  # the provider failed: its reason says why
            return None, call
        verdict = json_verdict(text, "addresses")
        return verdict, call.model_copy(update={"reason": {
            True: "addresses the prompt", False: "does not address the prompt",
            None: "unreadable verdict"}[verdict]})


    def worst_cost(self, prompt: str, answer: str) -> float:
        """What the call could cost at most: its whole input, and every verdict token."""
        contents = (m["content"] for m in _messages(prompt, answer))
        return self._pricer.cost(self._ref, worst_case_input_tokens(contents), VERDICT_TOKENS)


def _messages(prompt: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": tagged(question=prompt[:EXCERPT_CHARS],
                                           answer=answer[:EXCERPT_CHARS])},
    ]
