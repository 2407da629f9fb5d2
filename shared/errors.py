"""Error codes of the public contract. Every failure a caller sees is one of these."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    PROMPT_TOO_LARGE = "prompt_too_large"
    NO_PROVIDER_AVAILABLE = "no_provider_available"
    BUDGET_EXCEEDED = "budget_exceeded"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    DEAD_LETTER = "dead_letter"
    OVERLOADED = "overloaded"
    DUPLICATE_REQUEST = "duplicate_request"
    UNKNOWN_REQUEST = "unknown_request"  # feedback on no answered request of the tenant's
    CANCELLED = "cancelled"  # the caller left a streamed request before its end
    # The HTTP gateway's own, with API keys on: never sent to the router, never in the ledger.
    INVALID_API_KEY = "invalid_api_key"
    PERMISSION_DENIED = "permission_denied"
    INTERNAL = "internal_error"


class RouterError(Exception):
    """A failure that becomes an error reply, not a crash or a redelivery."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
