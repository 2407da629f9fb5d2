"""One chat call, whatever the provider: parse, find the model, inject a fault, answer, pace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from .completion import ChatRequest, Completion, complete
from .scenario import Action, FaultRule, ModelSpec
from .state import EmulatorState, Pacing
from .wire.base import ErrorKind, Wire

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_FAULTS: dict[Action, ErrorKind] = {
    "rate_limit": ErrorKind.RATE_LIMIT,
    "server_error": ErrorKind.SERVER_ERROR,
    "overloaded": ErrorKind.OVERLOADED,
}


def chat_endpoint(wire: Wire, state: EmulatorState) -> Handler:
    async def handle(http: web.Request) -> web.StreamResponse:
        if wire.requires_key and not _has_api_key(http):
            return wire.error(ErrorKind.UNAUTHORIZED, "send x-api-key or Authorization: Bearer")
        try:
            chat = wire.parse(json.loads(await http.read()))
        except ValueError as exc:  # invalid JSON, or a body the provider would reject
            return wire.error(ErrorKind.BAD_REQUEST, str(exc))
        spec = state.scenario.models.get(chat.model)
        if spec is None or wire.provider not in spec.providers:
            state.stats.record(wire.provider, chat.model, "not_found")
            return wire.error(ErrorKind.NOT_FOUND, chat.model)
        state.stats.in_flight += 1
        try:
            return await _serve(http, wire, state, chat, spec)
        finally:
            state.stats.in_flight -= 1

    return handle


async def _serve(
    http: web.Request, wire: Wire, state: EmulatorState, chat: ChatRequest, spec: ModelSpec
) -> web.StreamResponse:
    rule = state.pick_fault(wire.provider, chat.model, chat.prompt)
    action: Action = rule.action if rule else "ok"
    if action in _ERROR_FAULTS:
        state.stats.record(wire.provider, chat.model, action)
        refusal = wire.error(_ERROR_FAULTS[action], chat.model)
        if rule and action == "rate_limit":
            refusal.headers["retry-after"] = str(rule.retry_after_s)
        return refusal
    if rule and action == "hang":
        state.stats.record(wire.provider, chat.model, action)
        return await _hang(http, rule)

    completion = complete(chat, spec, action)
    outcome = completion.verdict if action == "ok" else action
    state.stats.record(wire.provider, chat.model, outcome)
    pacing = state.pacing()
    malformed = action == "malformed"
    response: web.StreamResponse
    if chat.stream:
        response = await _stream(http, wire, chat, completion, pacing, malformed)
    else:
        await _pause(pacing.total_s(completion.completion_tokens))  # a client gone: no bill
        response = wire.respond(chat, completion)
        if malformed and isinstance(response.body, bytes):
            response = web.Response(body=response.body[: len(response.body) // 2],
                                    content_type="application/json")
    if not malformed and completion.report_usage:  # what the client can be billed for
        state.stats.charge(wire.provider, chat.model, completion.prompt_tokens,
                           completion.completion_tokens)
    return response


async def _stream(
    http: web.Request,
    wire: Wire,
    chat: ChatRequest,
    completion: Completion,
    pacing: Pacing,
    malformed: bool,
) -> web.StreamResponse:
    """Headers go out at once; tokens follow at the scenario's pace, like a real provider."""
    frames = wire.stream(chat, completion)
    response = web.StreamResponse(
        headers={"Content-Type": wire.stream_content_type, "Cache-Control": "no-cache"}
    )
    await response.prepare(http)
    await _pause(pacing.first_token_s)
    if malformed:
        await response.write(b"".join(frames.head) + wire.malformed_frame)
    elif pacing.per_token_s:
        await _write(response, b"".join(frames.head))
        for frame in frames.tokens:
            await asyncio.sleep(pacing.per_token_s)
            await response.write(frame)
        await _write(response, b"".join(frames.tail))
    else:
        await _write(response, b"".join([*frames.head, *frames.tokens, *frames.tail]))
    await response.write_eof()
    return response


async def _hang(http: web.Request, rule: FaultRule) -> web.StreamResponse:
    """Say nothing, then drop the connection; without `hang_s`, wait until the client leaves."""
    if rule.hang_s is None:
        await asyncio.Event().wait()  # cancelled by aiohttp when the client disconnects
    else:
        await asyncio.sleep(rule.hang_s)
    if http.transport is not None:
        http.transport.close()
    return web.Response()


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _write(response: web.StreamResponse, data: bytes) -> None:
    if data:
        await response.write(data)


def _has_api_key(http: web.Request) -> bool:
    headers = http.headers
    return bool(headers.get("x-api-key")) or headers.get("authorization", "").startswith("Bearer ")
