"""Every message the router publishes fits the server's max_payload, headers included.

nats-py checks only the body against max_payload; the server counts the headers too, answers an
oversized message with an error, and nats-py then closes the connection for good. So the size is
checked here, before sending, and an oversized message is an exception its caller turns into an
error outcome, never a dead connection or a redelivery loop.
"""

from __future__ import annotations

import json

from faststream.nats import NatsBroker
from nats.js.api import PubAck

from shared import subjects
from shared.config import Limits
from shared.messages import MAX_FEATURE_BYTES, Envelope

# FastStream's own headers (correlation_id, content-type) and the header block's framing.
HEADER_RESERVE = 512
# How long a JetStream publish waits for its storage receipt: FastStream's default (0.5 s) is
# shorter than a burst of thousands of publishes takes here, and a lost receipt fails a request.
RECEIPT_TIMEOUT_S = 5.0
# Room in one envelope for everything but the request and two answers (the latest and the best
# so far): classification, origin, attempts, ids. Measured: 15 KB with 30 attempts.
ENVELOPE_RESERVE = 65_536
# With ledger.store_features, the feature vector rides every envelope too: at most
# MAX_FEATURE_BYTES, base64 in JSON (21,848 bytes), and its field names.
FEATURES_RESERVE = 4 * -(-MAX_FEATURE_BYTES // 3) + 64


class TooLarge(Exception):
    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(f"a {size}-byte message to {subject} is over the server's "
                         f"max_payload of {limit} bytes")
        self.size = size
        self.limit = limit


def message_size(body: bytes, headers: dict[str, str] | None = None) -> int:
    """Bytes the server counts against max_payload (with a margin for FastStream's headers)."""
    framing = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in (headers or {}).items())
    return len(body) + framing + HEADER_RESERVE


def check(limit: int, subject: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    size = message_size(body, headers)
    if size > limit:
        raise TooLarge(subject, size, limit)


async def publish(
    broker: NatsBroker, body: bytes, subject: str, *, stream: str,
    headers: dict[str, str] | None = None,
) -> PubAck:
    """A JetStream publish, its storage receipt awaited; refused with TooLarge when the server
    would refuse it. Straight through nats-py: FastStream's publish path (middlewares, its own
    headers) cost more CPU than the rest of a refusal's work."""
    check(broker.connection.max_payload, subject, body, headers)
    js = broker.config.connection_state.stream
    return await js.publish(subject, body, timeout=RECEIPT_TIMEOUT_S, stream=stream,
                            headers=headers)


async def dispatch(broker: NatsBroker, envelope: Envelope) -> bool:
    """Hand an envelope to the dispatcher for its hop; False when it was handed on before. The
    message id names the trace and the hop, so a stage redelivered after this publish repeats
    nothing."""
    ack = await publish(broker, envelope.model_dump_json().encode(), subjects.DISPATCH,
                        headers={subjects.MSG_ID: f"{envelope.trace_id}.{envelope.hop}.d"},
                        stream=subjects.PIPELINE_STREAM)
    return not ack.duplicate


def check_limits(limits: Limits, max_payload: int, *, features: bool = False) -> None:
    """At start-up: a request at the byte limit, with two answers at theirs (and, with
    `features` (ledger.store_features), the largest feature vector), must travel between the
    stages in one message; a configuration that cannot is refused with what to change."""
    reserve = ENVELOPE_RESERVE + (FEATURES_RESERVE if features else 0)
    needed = limits.max_request_bytes + 2 * limits.max_answer_bytes + reserve
    if needed > max_payload:
        raise ValueError(
            f"limits.max_request_bytes ({limits.max_request_bytes}) + 2 x "
            f"limits.max_answer_bytes ({limits.max_answer_bytes}) + {reserve} bytes of "
            f"envelope{' and features' if features else ''} = {needed} bytes, over the NATS "
            f"server's max_payload ({max_payload}): lower the limits or raise the server's "
            "max_payload"
        )


def bound_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` cut to its longest prefix whose JSON string encoding fits in `max_bytes`, and
    whether it was cut. The longest, so that a stream cut as it goes (each piece's text so far)
    and its whole answer cut at the end agree.

    Measured as JSON, not UTF-8: a control character takes six bytes once escaped."""
    if json_size(text) <= max_bytes:
        return text, False
    fits, over = 0, min(len(text), max_bytes) + 1  # a character takes a byte at least
    while over - fits > 1:
        middle = (fits + over) // 2
        if json_size(text[:middle]) <= max_bytes:
            fits = middle
        else:
            over = middle
    return text[:fits], True


def json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode())
