"""Groq: OpenAI's wire format under /openai/v1, plus Groq's timings and `x_groq` request id."""

from __future__ import annotations

from typing import Any

from ..completion import Completion
from ..scenario import Provider
from .base import random_id
from .openai import OpenAIWire

_TOKENS_PER_SECOND = 800.0  # what Groq's LPUs report for 70B-class models, near enough


class GroqWire(OpenAIWire):
    provider: Provider = "groq"
    fingerprint = "fp_emu0groq0"

    def extra(self) -> dict[str, Any]:
        return {"x_groq": {"id": "req_" + random_id(26).lower()}}

    def closing_fields(self, envelope: dict[str, Any], completion: Completion) -> dict[str, Any]:
        """The Groq SDK has no stream_options; usage rides on the last chunk's x_groq instead."""
        if not completion.report_usage:
            return {}
        return {"x_groq": {**envelope["x_groq"], "usage": self.usage(completion)}}

    def completion_id(self) -> str:
        return "chatcmpl-" + random_id(32).lower()

    def usage(self, completion: Completion) -> dict[str, Any]:
        prompt_time = round(completion.prompt_tokens / (_TOKENS_PER_SECOND * 20), 6)
        completion_time = round(completion.completion_tokens / _TOKENS_PER_SECOND, 6)
        return {
            "queue_time": 0.0,
            "prompt_tokens": completion.prompt_tokens,
            "prompt_time": prompt_time,
            "completion_tokens": completion.completion_tokens,
            "completion_time": completion_time,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            "total_time": round(prompt_time + completion_time, 6),
        }
