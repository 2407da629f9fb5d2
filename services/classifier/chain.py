"""The configured backends, tried in order: the first that answers decides; the keyword rules
answer when every other backend fails, so a request is never left untagged."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from cachetools import LRUCache

from shared.config import ClassifierConfig
from shared.health import Counters
from shared.messages import Features
from shared.providers import Providers

from . import rules
from .decision import decide
from .local_model import LocalModel
from .ollama_backend import OllamaBackend
from .router_live import LiveRouter, model_path
from .router_model import FEATURE_SETS, STORED_DTYPE, Featurizer, MemoEncoder, feature_set_of
from .verdict import Verdict

CACHE_SIZE = 10_000
T = TypeVar("T")


class Backend(Protocol):
    name: str

    async def classify(self, text: str) -> Verdict | None: ...


class LocalBackend:
    """Runs the model on one thread of its own: the event loop stays free while e5 computes
    (its engine releases the GIL), and the engine is never entered by two threads at once."""

    name = "local"

    def __init__(self, model: LocalModel, bias: float, thread: ModelThread) -> None:
        self._model = model
        self._bias = bias
        self._thread = thread

    def warm_up(self) -> None:
        self._model.warm_up()

    async def classify(self, text: str) -> Verdict:
        prediction = await self._thread.run(self._model.predict, text)
        difficulty, confidence = decide(prediction.probabilities, self._bias)
        return Verdict(difficulty, confidence, "local")


class RulesBackend:
    name = "rules"

    async def classify(self, text: str) -> Verdict:
        return rules.classify(text)


class NoVerdict(Exception):
    """No backend answered, and the keyword rules were told not to stand in."""


class ModelThread:
    """The one thread the models run on, and since when it has been on its current work:
    `counters.busy_since` goes in the heartbeat, so a thread wedged on one prompt (a hung read,
    a native deadlock) turns `health` red while the event loop beats on."""

    def __init__(self, counters: Counters | None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-classifier")
        self._counters = counters or Counters()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, work,
                                                                *args)

    def _timed(self, work: Callable[..., T], *args: Any) -> T:
        self._counters.busy_since = time.time()
        try:
            return work(*args)
        finally:
            self._counters.busy_since = None


class Classifier:
    def __init__(self, config: ClassifierConfig, providers: Providers | None = None,
                 local: LocalModel | None = None, rules_fallback: bool = True,
                 router_shares: tuple[float, float] = (0.2, 0.3),
                 store_features: bool = False, counters: Counters | None = None) -> None:
        """`rules_fallback=False` is for asking one backend alone (`classify --backend`): its
        silence is then an error, not a verdict from another backend. `router_shares` are
        routing.strong_share and routing.medium_share, for a configured router model.
        `store_features`: `features` is called for each request (ledger.store_features)."""
        self._rules_fallback = rules_fallback
        self._backends: list[Backend] = []
        # The local model and the router model share one thread (e5's engine is entered by one
        # thread at a time) and one e5 with a short memory (a prompt is embedded once for both).
        self._thread = ModelThread(counters)
        encoder = MemoEncoder()
        self._featurizer = (Featurizer(encoder) if config.router_model or store_features
                            else None)
        self._router = (LiveRouter(model_path(config.router_model), self._featurizer,
                                   *router_shares)
                        if config.router_model and self._featurizer else None)
        for name in config.backends:
            if name == "ollama":
                self._backends.append(OllamaBackend(providers or Providers(),
                                                    config.ollama_model, config.ollama_timeout_s))
            elif name == "local":
                self._backends.append(LocalBackend(local or LocalModel(encoder=encoder),
                                                   config.bias, self._thread))
            else:
                self._backends.append(RulesBackend())
        # A repeated prompt gets the same tag without paying for the models again; keyed by a
        # digest, so a cache full of huge prompts stays small.
        self._cache: LRUCache[bytes, Verdict] = LRUCache(CACHE_SIZE)

    async def classify(self, text: str) -> Verdict:
        started = time.perf_counter()
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._cache[key] = await self._first_answer(text)
        routed = None
        if self._router is not None:
            routed = await self._thread.run(self._router.judge, text)
        return Verdict(verdict.difficulty, verdict.confidence, verdict.backend,
                       (time.perf_counter() - started) * 1000,
                       routed.strong_score if routed else None, routed.level if routed else None)

    async def features(self, text: str) -> Features:
        """The prompt as the learned router sees it, for the ledger: the router model's own
        feature set when one is configured (its embedding is then already computed), else the
        lexical one (no e5: well under a millisecond)."""
        return await self._thread.run(self._features, text)

    def _features(self, text: str) -> Features:
        assert self._featurizer is not None, "built with store_features"
        parts = self._router.model.parts if self._router is not None else FEATURE_SETS["lexical"]
        vector = self._featurizer(text, parts).astype(STORED_DTYPE)
        return Features(feature_set=feature_set_of(parts), values=vector.tobytes())

    def warm_up(self) -> None:
        """Load the models now, not on the first request."""
        for backend in self._backends:
            if isinstance(backend, LocalBackend | OllamaBackend):
                backend.warm_up()
        if self._router is not None:
            self._router.warm_up()

    async def _first_answer(self, text: str) -> Verdict:
        for backend in self._backends:
            verdict = await backend.classify(text)
            if verdict is not None:
                return verdict
        if not self._rules_fallback:
            raise NoVerdict(f"no answer from {', '.join(b.name for b in self._backends)}")
        return rules.classify(text)
