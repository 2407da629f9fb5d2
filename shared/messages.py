"""The messages that cross process boundaries: the public request and reply, the envelope that
carries a request's whole state between services, and the events the ledger stores.

Public models forbid unknown fields and coerce nothing, so a caller's typo or wrong type gets a
clear `invalid_request` instead of a silently ignored option. Internal models ignore unknown
fields, so a rolling upgrade can add one without stopping older services.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.config import Difficulty, Limits, Provider, Signal
from shared.errors import ErrorCode, RouterError

# Request and job ids become NATS subject tokens and KV keys: keep them to a safe alphabet.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
Token = Annotated[str, StringConstraints(pattern=TOKEN_RE.pattern)]
# Names the ledger stores as text (tenant, metadata keys): PostgreSQL cannot hold NUL, and no
# control character belongs in a name.
PRINTABLE_RE = re.compile(r"^[^\x00-\x1f\x7f]+$")
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE_RE.pattern)]
MAX_METADATA_BYTES = 4096
# A user's verdict on an answer (router.v1.feedback): a short note at most, the body bounded.
Comment = Annotated[str, StringConstraints(min_length=1, max_length=500,
                                           pattern=PRINTABLE_RE.pattern)]
MAX_FEEDBACK_BYTES = 4096
# The learned router's feature sets (services/classifier/router_model.py FEATURE_SETS), and the
# largest vector the ledger keeps: float16, so 2 bytes a feature (the widest set has 4,486).
FeatureSet = Literal["embedding", "lexical", "both"]
MAX_FEATURE_BYTES = 2 * 8192
FeatureBytes = Annotated[bytes, Field(min_length=2, max_length=MAX_FEATURE_BYTES)]

# What chose a request's starting tier: the learned router's score, the difficulty tag, or the
# caller's own `tier`.
DecidedBy = Literal["router_model", "difficulty", "request"]
# Why a model stopped: done, max_tokens reached, refused; "other" for any other reason.
FinishReason = Literal["stop", "length", "refusal", "other"]
RequestStatus = Literal["ok", "error"]


class Outcome(StrEnum):
    """What became of one call: an Attempt's outcome (the ledger's attempts.outcome column)."""

    OK = "ok"  # an answer
    WEAK = "weak"  # an answer the escalator found weak (set on the same attempt afterwards)
    ERROR = "error"  # the provider failed, or the stream was stopped
    SKIPPED = "skipped"  # not made: it could have taken the request past max_cost_usd
    JUDGE = "judge"  # the escalator's judge call
    VERIFY = "verify"  # one of the escalator's verify calls
    # Judge sampling: the top tier's answer to a request served lower, and the judge's
    # comparison of the two; paid outside the request's own cost (stats: sampling_cost_usd).
    SAMPLE = "sample"


class SampleVerdict(StrEnum):
    """The judge's comparison of a sampled served answer with the top tier's: the reason on the
    comparison's attempt, which `train-router --from-ledger` reads as a label."""

    AS_GOOD = "sample: as good as the top tier's"
    FELL_SHORT = "sample: fell short of the top tier's"
    NONE = "sample: no verdict"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """What an online caller sends on router.v1.chat and a batch system on router.v1.jobs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    request_id: Token | None = None
    job_id: Token | None = None
    tenant: Name | None = None
    tier: str | None = None
    max_tier: str | None = None
    # A configured model (its id as GET /v1/models lists it, or provider:model): only that model
    # answers, on the first tier that lists it, with no escalation.
    model: Name | None = None
    # JSON's Infinity and 1e400 parse as inf, which would serialise as null: no budget at all.
    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    metadata: dict[Name, Any] | None = None
    # Online only: the answer's pieces come to the reply subject as they are made, before the
    # reply itself (README, "Streaming").
    stream: bool = False

    @model_validator(mode="after")
    def _one_prompt(self) -> ChatRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if not any(m.role == "user" for m in self.chat):
            raise ValueError("'messages' needs at least one user message")
        if not self.prompt_text.strip():
            raise ValueError("the prompt is empty")
        if self.metadata is not None and len(json.dumps(self.metadata)) > MAX_METADATA_BYTES:
            raise ValueError(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes")
        return self

    @property
    def chat(self) -> list[ChatMessage]:
        if self.messages is not None:
            return self.messages
        return [ChatMessage(role="user", content=self.prompt or "")]

    @property
    def prompt_text(self) -> str:
        """The text the classifier judges: the last user turn."""
        return next(m.content for m in reversed(self.chat) if m.role == "user")

    @property
    def total_chars(self) -> int:
        return sum(len(m.content) for m in self.chat)


def parse_request(body: bytes, limits: Limits) -> ChatRequest:
    """Bytes off the wire to a valid request, or a RouterError that says what is wrong.

    Size is measured in bytes, before parsing: what must travel between the stages is bytes, and
    a character can take four of them."""
    if len(body) > limits.max_request_bytes:
        raise RouterError(
            ErrorCode.PROMPT_TOO_LARGE,
            f"the request is {len(body)} bytes; the limit is {limits.max_request_bytes}",
        )
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RouterError(ErrorCode.INVALID_REQUEST, describe_validation_error(exc)) from None
    if request.messages is not None and len(request.messages) > limits.max_messages:
        raise RouterError(
            ErrorCode.PROMPT_TOO_LARGE,
            f"the request has {len(request.messages)} messages; the limit is "
            f"{limits.max_messages}",
        )
    return request


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "json_invalid":
            parts.append("the body is not valid JSON")
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        elif where:
            parts.append(f"'{where}': {error['msg']}")
        else:
            parts.append(error["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


def new_request_id() -> str:
    return uuid.uuid4().hex


class _Internal(BaseModel):
    # bytes travel as base64 in JSON (a feature vector); in Python they are the bytes themselves.
    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")


# What stages pass each other, bounded as the ledger's columns are: a forged or buggy message
# cannot carry a negative, infinite or overflowing figure on to a bill.
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Ordinal = Annotated[int, Field(ge=1, le=2**15 - 1)]  # the first is 1; smallint in the ledger
Money = Annotated[float, Field(ge=0, lt=1e10, allow_inf_nan=False)]
Duration = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Instant = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # seconds since the epoch


class Claim(_Internal):
    """An idempotency key a request holds (shared/idempotency.py): where its reply is kept."""

    key: str
    fingerprint: str


class Origin(_Internal):
    """Where the answer goes: an online caller's inbox, or a batch job's results subject."""

    kind: Literal["online", "batch"]
    # The tenant the connection is vouched to be (its per-tenant subject), else the body's; a
    # batch job's results subject is under it.
    tenant: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    job_id: str | None = None
    # Where the classifier that admitted an online request hears it is done (admission control).
    done_subject: str | None = None
    claim: Claim | None = None


class Classification(_Internal):
    difficulty: Difficulty
    confidence: float
    backend: str
    latency_ms: float
    # The learned router's score when a router model is configured, and what chose the
    # starting tier: the model's score, or the difficulty tag.
    strong_score: float | None = None
    decided_by: DecidedBy = "difficulty"


class Features(_Internal):
    """A prompt as the learned router sees it, kept in the ledger instead of its text when
    `ledger.store_features` is on: the feature set's vector as float16, little-endian. Its
    length is fixed by the set, so the envelope grows by a bounded amount."""

    feature_set: FeatureSet
    values: FeatureBytes

    @model_validator(mode="after")
    def _whole(self) -> Features:
        if len(self.values) % 2:
            raise ValueError(f"'values' must be whole float16 values, not {len(self.values)} "
                             "bytes")
        return self


class Attempt(_Internal):
    """One call to one model. `call_id` is new for every call really made, so a call repeated
    after a crash is an attempt of its own in the ledger, which keys attempts on it."""

    call_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    n: Ordinal
    hop: Ordinal
    model: str
    provider: Provider
    tier: str
    outcome: Outcome
    reason: str = ""
    input_tokens: Count = 0
    output_tokens: Count = 0
    cost_usd: Money = 0.0
    latency_ms: Duration = 0.0
    emulated: bool = False


class Answer(_Internal):
    """A model's answer, with what the escalator needs to judge it."""

    text: str
    attempt: Ordinal
    tier_index: Count
    finish_reason: FinishReason
    logprob_mean: float | None = None
    score: float | None = None
    signals: list[Signal] = []


class Envelope(_Internal):
    """A request's whole state. It travels with the message, so no service keeps any."""

    request_id: Token
    # Unique per intake, unlike a caller's request_id: it names this request's hops for dedup
    # (and their keys in the hop-record bucket).
    trace_id: Token
    request: ChatRequest
    origin: Origin
    received_at: Instant
    deadline: Instant
    classification: Classification
    start_tier: str
    tier_index: Count
    max_tier_index: Count
    hop: Ordinal = 1
    attempts: list[Attempt] = []
    answer: Answer | None = None
    best: Answer | None = None
    # A streamed answer: when its first piece reached the caller (ms after received_at). Once
    # released, a stream is never replaced. `cancelled`: the caller left in the middle of it.
    ttft_ms: float | None = None
    cancelled: bool = False
    # ledger.store_features: the prompt's features for `train-router --from-ledger`.
    features: Features | None = None

    @model_validator(mode="after")
    def _within_tiers(self, info: ValidationInfo) -> Envelope:
        """A stage reads an envelope as if it came from outside: its tier must lie within the
        request's bounds and, given `context={"tiers": n}`, within the configured tiers; its
        answers must be answers of its own attempts."""
        tiers = (info.context or {}).get("tiers")
        if self.tier_index > self.max_tier_index:
            raise ValueError(f"tier_index {self.tier_index} is above max_tier_index "
                             f"{self.max_tier_index}")
        if tiers is not None and self.max_tier_index >= tiers:
            raise ValueError(f"max_tier_index {self.max_tier_index} is beyond the {tiers} "
                             "configured tiers")
        made = {a.n for a in self.attempts}
        for name, answer in (("answer", self.answer), ("best", self.best)):
            if answer is not None and answer.attempt not in made:
                raise ValueError(f"{name} names attempt {answer.attempt}, which is not among "
                                 "the envelope's attempts")
        return self

    @classmethod
    def read(cls, body: bytes, tiers: int) -> Envelope:
        """The envelope in `body`, checked against the `tiers` configured."""
        return cls.model_validate_json(body, context={"tiers": tiers})

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    def seconds_left(self) -> float:
        return self.deadline - time.time()


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    # With `overloaded`: how long to wait before trying again.
    retry_after_s: float | None = None


class ErrorReply(BaseModel):
    request_id: str | None
    job_id: str | None = None
    error: ErrorBody


class AttemptView(BaseModel):
    model: str
    provider: Provider
    tier: str
    outcome: Outcome
    reason: str
    cost_usd: float
    latency_ms: float


class ClassifierView(BaseModel):
    backend: str
    confidence: float
    latency_ms: float
    strong_score: float | None = None
    decided_by: DecidedBy = "difficulty"


class ChatReply(BaseModel):
    """The original README's response, plus what an operator needs to trust it."""

    request_id: str
    job_id: str | None = None
    response: str
    model_used: str
    provider: Provider
    difficulty_tag: Difficulty
    tier: str
    cost_usd: float
    baseline_cost_usd: float
    saved_usd: float
    input_tokens: int
    output_tokens: int
    latency_ms: float
    escalated: bool
    emulated: bool
    attempts: list[AttemptView]
    classifier: ClassifierView


class RequestEvent(_Internal):
    """The ledger's row for one request, success or failure. It is keyed on `trace_id` (one per
    intake): a refused reuse of a caller's request_id is a row of its own."""

    trace_id: str
    request_id: str
    received_at: float
    finished_at: float

    @model_validator(mode="before")
    @classmethod
    def _older_events(cls, data: Any) -> Any:
        """An event from before trace ids (a rolling upgrade, a replayed stream) is keyed on its
        request_id, as it was then."""
        if isinstance(data, dict) and "trace_id" not in data and "request_id" in data:
            data = {**data, "trace_id": data["request_id"]}
        return data
    tenant: str | None = None
    source: Literal["online", "batch"]
    job_id: str | None = None
    status: RequestStatus
    error_code: str | None = None
    difficulty: str | None = None
    classifier_backend: str | None = None
    classifier_confidence: float | None = None
    start_tier: str | None = None
    tier: str | None = None
    model_used: str | None = None
    provider: str | None = None
    escalated: bool = False
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    escalation_cost_usd: float = 0.0
    latency_ms: float = 0.0
    provider_latency_ms: float = 0.0
    ttft_ms: float | None = None  # streamed requests: time to the first piece released
    emulated: bool = False
    prompt_sha256: str | None = None
    prompt_chars: int = 0
    prompt_text: str | None = None
    features: FeatureBytes | None = None  # float16 (see Features), with its set
    feature_set: FeatureSet | None = None


class AttemptEvent(Attempt):
    trace_id: str
    request_id: str

    @model_validator(mode="before")
    @classmethod
    def _older_events(cls, data: Any) -> Any:
        """An event from before call ids is keyed as it was then: request and attempt number."""
        if isinstance(data, dict) and "request_id" in data:
            data = {"trace_id": data["request_id"],
                    "call_id": f"{data['request_id']}.{data.get('n')}", **data}
        return data
    tenant: str | None = None
    at: float


class DeadLetterEvent(_Internal):
    """A message no handler could settle after all its deliveries."""

    subject: str
    stream_seq: int
    deliveries: int
    reason: str
    request_id: str | None = None
    body_bytes: int
    at: float


SMALLEST_SCORE = 1e-6  # a feedback score below it is 0: a verdict needs no finer grain


class Feedback(BaseModel):
    """A user's verdict on an answer, on router.v1.feedback: 0 (useless) to 1 (just right). A
    label for the learned router (`train-router --from-ledger`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: Token
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    tenant: Name | None = None
    comment: Comment | None = None

    @field_validator("score")
    @classmethod
    def _storable(cls, score: float) -> float:
        """A score too small for the ledger's real column (PostgreSQL refuses 1e-50 there)
        is 0."""
        return 0.0 if score < SMALLEST_SCORE else score


class FeedbackAck(BaseModel):
    """The ledger has the verdict (the latest one for a request counts)."""

    request_id: str
    score: float
    recorded: Literal[True] = True


def fingerprint(text: str) -> tuple[str, int]:
    """A hash and a length: what the ledger keeps of a prompt unless told to keep the text."""
    return hashlib.sha256(text.encode()).hexdigest(), len(text)
