"""The HTTP API: the seed's /v1/chat, /v1/health and /v1/stats, /v1/feedback, and OpenAI's
/v1/chat/completions and /v1/models, each a thin translation onto a NATS request.

/v1/chat passes the body to router.v1.chat untouched and the reply back untouched: the
classifier validates it, so both doors refuse the same requests with the same messages, and the
gateway spends no time re-encoding what the router already encoded.

With API keys (GATEWAY_API_KEYS_FILE, api_keys.py), every route but /v1/health needs
`Authorization: Bearer <key>`, and the key's tenant is the request's: the gateway names it in
the body it sends on the shared subject, where its own NATS identity is trusted to name tenants.
A caller without a valid key is refused here, so it can neither reach a provider nor write a row
in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import hosts
from shared.config import RouterConfig
from shared.errors import ErrorCode, RouterError
from shared.health import Counters
from shared.messages import (
    MAX_FEEDBACK_BYTES,
    ChatReply,
    ChatRequest,
    ErrorReply,
    Feedback,
    FeedbackAck,
)

from . import errors, openai_api
from .api_keys import ApiKeys
from .link import RouterLink, RouterStream, Unavailable

log = structlog.get_logger(__name__)

JSON = "application/json"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorReply}
    for status in (400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504)}


class Refused(Exception):
    """A request refused before the router sees it: its error reply, status and headers."""

    def __init__(self, reply: dict[str, Any], status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reply["error"]["message"])
        self.reply, self.status, self.headers = reply, status, headers

    def response(self, request: Request) -> Response:
        return errors.for_route(request.url.path, self.reply, self.status, self.headers)


async def caller(request: Request) -> str | None:
    """The tenant the request's API key names; None when the gateway has no keys."""
    keys: ApiKeys | None = request.app.state.keys
    if keys is None:
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    try:
        tenant = keys.tenant(key) if scheme.lower() == "bearer" and key else None
    except ValueError:  # logged when the file changed
        raise RouterError(ErrorCode.INTERNAL, "the gateway cannot read its API key file "
                          "(its log says why)") from None
    if tenant is None:  # neither the key nor the header is ever logged
        log.warning("gateway.unauthenticated", path=request.url.path,
                    reason="unknown key" if key else "no bearer key",
                    client=request.client.host if request.client else None)
        raise RouterError(ErrorCode.INVALID_API_KEY, "unknown API key" if key else
                          "this gateway needs an API key: 'Authorization: Bearer <key>'")
    return tenant


Tenant = Annotated[str | None, Depends(caller)]
AUTHENTICATED = [Depends(caller)]


def create_app(link: RouterLink, cfg: RouterConfig, counters: Counters,
               keys: ApiKeys | None = None, body_timeout_s: float = 30.0,
               served_hosts: frozenset[str] = hosts.served("127.0.0.1", ())) -> FastAPI:
    app = FastAPI(
        title="Smart Router",
        summary="Routes each prompt to the cheapest model tier that answers it well.",
        version="1",
    )
    app.state.keys = keys
    app.add_middleware(ServedHosts, served=served_hosts)
    limit = cfg.limits.max_request_bytes
    too_large = errors.error_reply(ErrorCode.PROMPT_TOO_LARGE, f"the request is over {limit} "
                                   "bytes (limits.max_request_bytes)")
    feedback_too_large = errors.error_reply(
        ErrorCode.INVALID_REQUEST, f"the feedback is over {MAX_FEEDBACK_BYTES} bytes")

    @app.exception_handler(RouterError)
    async def refused(request: Request, exc: RouterError) -> Response:
        """A request refused before its handler ran (its key), in its route's error shape."""
        return errors.for_route(request.url.path, errors.error_reply(exc.code, exc.message))

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own refusals (no such path, a method the path does not take) as coded
        errors, not its {"detail": ...}."""
        message = (f"no route {request.method} {request.url.path} (see /docs)"
                   if exc.status_code == 404 else f"{request.method} {request.url.path}: "
                   f"{exc.detail}")
        return errors.for_route(request.url.path,
                                errors.error_reply(ErrorCode.INVALID_REQUEST, message),
                                exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        """A query parameter FastAPI refused (`days` on /v1/stats): 400 invalid_request."""
        problems = "; ".join(f"'{'.'.join(str(p) for p in e['loc'][1:])}': {e['msg']}"
                             for e in exc.errors())
        return errors.for_route(request.url.path,
                                errors.error_reply(ErrorCode.INVALID_REQUEST, problems), 400)

    @app.post("/v1/chat", responses={200: {"model": ChatReply}, **ERROR_RESPONSES},
              summary="Route one prompt (the seed's API)")
    async def chat(request: Request, tenant: Tenant) -> Response:
        """The body is a ChatRequest: `{"prompt": ...}` or `{"messages": [...]}` with the
        router's optional fields. The reply adds the router's figures to the seed's fields."""
        try:
            body = await _body(request, limit, body_timeout_s, too_large)
            if tenant is not None:
                body = _as_tenant(body, tenant)
            if _STREAM_KEY.search(body) and _asks_stream(body):
                raise RouterError(ErrorCode.INVALID_REQUEST, "'stream': /v1/chat answers whole; "
                                  "stream with POST /v1/chat/completions")
        except Refused as refused:
            return refused.response(request)
        except RouterError as exc:
            return errors.router_error(errors.error_reply(exc.code, exc.message))
        with _counted(counters):
            return await _relayed(link.chat(body, tenant),
                                  lambda reply: {"x-request-id": reply["request_id"]})

    @app.get("/v1/health", summary="Which services are up (503 when one is not)")
    async def health() -> JSONResponse:
        report = await link.health()
        return JSONResponse(report, 200 if report["ok"] else errors.UNAVAILABLE)

    @app.get("/v1/stats", summary="Costs and savings from the ledger",
             dependencies=AUTHENTICATED)
    async def stats(days: int = Query(30, ge=1, le=3660)) -> Response:
        """Every tenant's figures: with API keys on, a key (one tenant's) may not read them."""
        if keys is not None:
            return errors.router_error(errors.error_reply(
                ErrorCode.PERMISSION_DENIED, "the stats cover every tenant: an API key may not "
                "read them (the operator's `smart-router stats` and dashboard do)"))
        return await _relayed(link.stats(days))

    @app.post("/v1/feedback", responses={200: {"model": FeedbackAck}, **ERROR_RESPONSES},
              summary="Record a verdict on an answer (router.v1.feedback)")
    async def feedback(request: Request, tenant: Tenant) -> Response:
        """The body is a Feedback: `{"request_id": ..., "score": 0..1}`, optional `tenant` and
        `comment` (with API keys on, the key's tenant). 404 `unknown_request` when the tenant
        has no answered request of that id."""
        try:
            body = await _body(request, MAX_FEEDBACK_BYTES, body_timeout_s,
                               feedback_too_large)
            if tenant is not None:
                body = _as_tenant(body, tenant)
        except Refused as refused:
            return refused.response(request)
        except RouterError as exc:
            return errors.router_error(errors.error_reply(exc.code, exc.message))
        return await _relayed(link.feedback(body))

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES,
              summary="OpenAI-compatible chat completion")
    async def chat_completions(request: Request, tenant: Tenant) -> Response:
        """model `auto` routes; a tier name starts at that tier; a model id pins its tier.
        The router's facts come in x-router-* headers. With API keys on, the key's tenant is
        the request's."""
        param = None
        try:
            body = await _body(request, limit, body_timeout_s, too_large)
            completion_request = openai_api.parse_completion_request(body)
            param = "model"
            router_body = openai_api.to_router_request(completion_request, cfg)
            param = None
            if tenant is not None:
                _check_tenant(router_body.get("tenant"), tenant)
                router_body["tenant"] = tenant
            if completion_request.stream:
                include_usage = bool(completion_request.stream_options
                                     and completion_request.stream_options.include_usage)
                with _counted(counters):
                    return await _streamed(request, link, {**router_body, "stream": True},
                                           include_usage, tenant)
            with _counted(counters):
                reply, _ = await link.chat(_encoded(router_body), tenant)
        except Refused as refused:
            return refused.response(request)
        except RouterError as exc:
            return errors.openai_error(errors.error_reply(exc.code, exc.message), param=param)
        except Unavailable as exc:
            return errors.openai_error(errors.error_reply(ErrorCode.INTERNAL, str(exc)),
                                       errors.UNAVAILABLE)
        if "error" in reply:
            return errors.openai_error(reply)
        return JSONResponse(openai_api.completion(reply), headers=openai_api.router_headers(reply))

    @app.get("/v1/models", summary="What `model` may name", dependencies=AUTHENTICATED)
    async def models() -> JSONResponse:
        return JSONResponse(openai_api.model_list(cfg))

    @app.get("/v1/models/{model_id}", summary="One entry of /v1/models",
             dependencies=AUTHENTICATED)
    async def model(model_id: str) -> JSONResponse:
        for entry in openai_api.model_list(cfg)["data"]:
            if entry["id"] == model_id:
                return JSONResponse(entry)
        return JSONResponse({"error": {"message": f"unknown model '{model_id}'",
                                       "type": "invalid_request_error", "param": "model",
                                       "code": "model_not_found"}}, 404)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _streamed(request: Request, link: RouterLink, body: dict[str, Any],
                    include_usage: bool, tenant: str | None) -> Response:
    """Server-sent events from the router's pieces. The response waits for the first piece (or
    the reply), so a request that fails before any text gets its HTTP error status; a client
    that leaves meanwhile stops the call then, not when the first piece comes."""
    stream = await link.stream(_encoded(body), tenant)
    try:
        first = await _unless_gone(request, stream.next())
    except BaseException:
        stream.close(left=True)
        raise
    if first is None:
        stream.close(left=True)
        return Response(status_code=errors.STATUS[ErrorCode.CANCELLED])
    if "error" in first:
        stream.close(left=False)
        return errors.openai_error(first)
    if "delta" in first:
        headers = openai_api.stream_headers(first)
        chunks = openai_api.Chunks(first["request_id"], first["model"])
    else:  # answered whole: its text was never released as pieces (escalated past them)
        stream.close(left=False)
        headers = openai_api.router_headers(first)
        chunks = openai_api.Chunks(first["request_id"], first["model_used"])
    return StreamingResponse(_events(stream, chunks, first, include_usage),
                             media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache"})


async def _unless_gone(request: Request,
                       answer: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """`answer`, or None if the client disconnects first (its body is read, so the next
    message uvicorn gives is the disconnect)."""
    answered = asyncio.ensure_future(answer)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answered, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answered.done():
            answered.cancel()
    return answered.result() if answered.done() and not answered.cancelled() else None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(stream: RouterStream, chunks: openai_api.Chunks, first: dict[str, Any],
                  include_usage: bool) -> AsyncIterator[bytes]:
    """Role, each piece as it comes, whatever of the answer was not streamed, the finish (with
    the router's facts), usage, [DONE]. A client that leaves before the end stops the call. A
    reply whose answer does not start with the pieces sent (a stream started over) ends in an
    error: the client would otherwise see text twice."""
    done = "delta" not in first
    try:
        yield _sse(chunks.delta({"role": "assistant", "content": ""}))
        sent, message = [], first
        while "delta" in message:
            sent.append(message["delta"])
            yield _sse(chunks.delta({"content": message["delta"]}))
            message = await stream.next()
        done = True
        if "error" in message:
            yield _sse({"error": errors.openai_body(message["error"])})
            return
        streamed = "".join(sent)
        if not message["response"].startswith(streamed):  # resent, the text would repeat
            log.error("stream.not_its_reply", request_id=message.get("request_id"))
            raise RouterError(ErrorCode.UPSTREAM_ERROR, "the stream broke after it was released")
        rest = message["response"][len(streamed):]
        if rest:
            yield _sse(chunks.delta({"content": rest}))
        yield _sse(chunks.delta({}, openai_api.finish_reason(message),
                                x_router=openai_api.router_facts(message)))
        if include_usage:
            yield _sse(chunks.usage(message))
        yield b"data: [DONE]\n\n"
    except RouterError as exc:  # the router fell silent mid-stream, or started it over
        done = True
        yield _sse({"error": errors.openai_body({"code": exc.code, "message": exc.message})})
    finally:
        if "delta" in first:
            stream.close(left=not done)


async def _relayed(answer: Awaitable[tuple[dict[str, Any], bytes]],
                   headers: Callable[[dict[str, Any]], dict[str, str]] | None = None) -> Response:
    """A router subject's answer as the HTTP response: its JSON as sent (with the `headers` made
    from it), or its error with the code's status."""
    try:
        reply, raw = await answer
    except RouterError as exc:
        return errors.router_error(errors.error_reply(exc.code, exc.message))
    except Unavailable as exc:
        return errors.router_error(errors.error_reply(ErrorCode.INTERNAL, str(exc)),
                                   errors.UNAVAILABLE)
    if "error" in reply:
        return errors.router_error(reply)
    return Response(raw, media_type=JSON, headers=headers(reply) if headers else None)


def _encoded(body: dict[str, Any]) -> bytes:
    """A body rebuilt here, as compact as the caller's: json.dumps' defaults would escape every
    character outside ASCII, up to six bytes for one, so a request within the size limit could
    reach the router over it (or over NATS's max_payload)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _as_tenant(body: bytes, tenant: str) -> bytes:
    """The body naming the key's tenant: one that does not already gets it as its last field,
    its bytes otherwise untouched (no re-encoding). A body this gateway cannot read as a JSON
    object is refused here: passed on, it could name any tenant to a parser that reads it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise RouterError(ErrorCode.INVALID_REQUEST, "the body is not a JSON object "
                          "(a ChatRequest: see /docs)")
    _check_tenant(data.get("tenant"), tenant)
    if data.get("tenant") == tenant:  # the last `tenant` key is what json and pydantic keep
        return body
    head = body.rstrip()[:-1].rstrip()  # without the closing brace
    return b"%s%s\"tenant\":%s}" % (head, b"," if data else b"", json.dumps(tenant).encode())


def _check_tenant(named: Any, tenant: str) -> None:
    """A key's caller asks as its own tenant: naming it again is fine, another is refused."""
    if named is not None and named != tenant:
        raise RouterError(ErrorCode.PERMISSION_DENIED,
                          f"'tenant': this API key is tenant '{tenant}', not {json.dumps(named)}")


# The key "stream", each letter as itself or escaped (\u0073 for s...): a body without it is not
# parsed here (many clients escape every character outside ASCII, so "\u" alone is common).
_STREAM_KEY = re.compile(rb'"(?:s|\\u0073)(?:t|\\u0074)(?:r|\\u0072)(?:e|\\u0065)(?:a|\\u0061)'
                         rb'(?:m|\\u006[dD])"')


def _asks_stream(body: bytes) -> bool:
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(body)
        return isinstance(data, dict) and data.get("stream") is True
    return False


def _sse(frame: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(frame)}\n\n".encode()


async def _body(request: Request, limit: int, timeout_s: float,
                too_large: dict[str, Any]) -> bytes:
    """The body, refused unless it says it is JSON (a page on another site can post only text,
    forms or untyped bytes to this address without the browser asking first), as soon as it is
    known to be over `limit` bytes (before it is all read, when the client says its length),
    or once it has taken `timeout_s` to arrive (a client sending a byte now and then would hold
    its connection and memory for ever)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != JSON and not (kind.startswith("application/") and kind.endswith("+json")):
        raise Refused(errors.error_reply(ErrorCode.INVALID_REQUEST, "the body must be JSON, "
                                         "sent with 'Content-Type: application/json'"), 415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(too_large)
    parts, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise Refused(too_large)
                parts.append(part)
    except TimeoutError:
        # 408, and the connection closed after it (uvicorn reads `connection: close`): the
        # rest of a slow body is not worth waiting for.
        raise Refused(errors.error_reply(
            ErrorCode.TIMEOUT, f"the request's body took over {timeout_s:g} s to arrive "
            "(GATEWAY_BODY_TIMEOUT_S)"), 408, {"connection": "close"}) from None
    return b"".join(parts)


class ServedHosts:
    """Requests whose Host header names no served host are refused (shared/hosts.py): a page
    on another site rebinding its own name to this address would otherwise read the answers."""

    def __init__(self, app: ASGIApp, served: frozenset[str]) -> None:
        self.app, self.served = app, served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if hosts.host_name(header) not in self.served:
                reply = errors.error_reply(ErrorCode.INVALID_REQUEST, "this host name is not "
                                           "served here; add it to GATEWAY_ALLOWED_HOSTS")
                await errors.for_route(scope["path"], reply, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


@contextlib.contextmanager
def _counted(counters: Counters) -> Iterator[None]:
    """What `health` shows of this copy: requests handled, failed, in flight."""
    counters.in_flight += 1
    try:
        yield
    except Exception:
        counters.failed += 1
        raise
    else:
        counters.handled += 1
    finally:
        counters.in_flight -= 1


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the request bodies the handlers read themselves (they take the
    raw bytes, so FastAPI cannot see their models)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in (("/v1/chat", ChatRequest), ("/v1/feedback", Feedback),
                            ("/v1/chat/completions", openai_api.CompletionRequest)):
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True, "content": {JSON: {"schema": _component(components, model)}}}
        app.openapi_schema = schema
    return app.openapi_schema


def _component(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    ref = "#/components/schemas/{model}"
    model_schema = model.model_json_schema(ref_template=ref)
    components.update(model_schema.pop("$defs", {}))
    components[model.__name__] = model_schema
    return {"$ref": ref.format(model=model.__name__)}
