"""The router's error codes as HTTP: a status per code, the seed's body or OpenAI's, and the
headers an HTTP client acts on (Retry-After; x-should-retry, which the OpenAI SDK obeys)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from shared.errors import ErrorCode

STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    # A budget is the caller's own request field (max_cost_usd): a request it cannot cover is
    # a bad request, not a payment the caller could make.
    ErrorCode.BUDGET_EXCEEDED: 400,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNKNOWN_REQUEST: 404,
    ErrorCode.DUPLICATE_REQUEST: 409,
    ErrorCode.PROMPT_TOO_LARGE: 413,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.DEAD_LETTER: 500,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NO_PROVIDER_AVAILABLE: 502,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,  # nobody reads it: the caller has left
}
# OpenAI's error types, by status.
OPENAI_TYPE = {400: "invalid_request_error", 401: "invalid_request_error",
               403: "permission_error", 404: "invalid_request_error",
               405: "invalid_request_error", 408: "invalid_request_error",
               415: "invalid_request_error",
               409: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error"}
# A router that is not running at all: nothing answers on router.v1.chat.
UNAVAILABLE = 503
# The routes that answer the router's own error reply; the others answer OpenAI's shape.
ROUTER_SHAPED = ("/v1/chat", "/v1/stats", "/v1/feedback")


def status_of(code: str) -> int:
    try:
        return STATUS[ErrorCode(code)]
    except ValueError:
        return 500


def headers_for(error: dict[str, Any], status: int) -> dict[str, str]:
    """Only an overloaded router is worth retrying as is: the router has retried its providers
    already, and a retried timeout or dead letter would pay for its calls again."""
    headers = {"x-should-retry": "true" if status == 429 else "false"}
    if status == 401:
        headers["www-authenticate"] = "Bearer"
    retry_after = error.get("retry_after_s")
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return headers


def router_error(reply: dict[str, Any], status: int | None = None) -> JSONResponse:
    """The router's own error reply ({request_id, error: {code, message, retry_after_s}}), as
    the seed's /v1/chat returns it."""
    error = reply["error"]
    status = status or status_of(error["code"])
    return JSONResponse(reply, status, headers=headers_for(error, status))


def openai_error(reply: dict[str, Any], status: int | None = None,
                 param: str | None = None) -> JSONResponse:
    """OpenAI's shape: {error: {message, type, param, code}}, the router's code as `code`."""
    error = reply["error"]
    status = status or status_of(error["code"])
    body = {"error": openai_body(error, status, param)}
    headers = headers_for(error, status)
    if reply.get("request_id"):
        headers["x-request-id"] = reply["request_id"]
    return JSONResponse(body, status, headers=headers)


def openai_body(error: dict[str, Any], status: int | None = None,
                param: str | None = None) -> dict[str, Any]:
    status = status or status_of(error["code"])
    return {"message": error["message"], "type": OPENAI_TYPE.get(status, "server_error"),
            "param": param, "code": error["code"]}


def for_route(path: str, reply: dict[str, Any], status: int | None = None,
              headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error in the shape of the route asked for: the router's on its own routes, OpenAI's
    on the others (and on a path that is no route)."""
    response = (router_error if path in ROUTER_SHAPED else openai_error)(reply, status)
    response.headers.update(headers or {})
    return response


def error_reply(code: ErrorCode, message: str, request_id: str | None = None,
                retry_after_s: float | None = None) -> dict[str, Any]:
    """An error the gateway itself answers, in the router's reply shape."""
    return {"request_id": request_id, "error": {"code": code.value, "message": message,
                                                "retry_after_s": retry_after_s}}
