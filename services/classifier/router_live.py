"""The router model as the classifier service runs it: loaded from the file named in
`classifier.router_model`, reloaded when that file changes, and turned into a routing level with
two thresholds calibrated on the model's training prompts from the configured shares of
traffic (routing.strong_share to the complex tier's level, routing.medium_share to the medium's).

Not thread-safe by design: the classifier calls it from its one model thread.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from cachetools import LRUCache

from shared.config import Difficulty

from .router_model import SHIPPED_PATH, Featurizer, Router, RouterModel

log = structlog.get_logger(__name__)

SHIPPED = "shipped"  # the value of classifier.router_model that names the packaged model
RELOAD_CHECK_S = 1.0
PROBE = "What is the capital of France, and why is it there?"  # scored before a model is used
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class RouterVerdict:
    strong_score: float
    level: Difficulty  # the routing table's row this score starts at


def model_path(setting: str) -> Path:
    return SHIPPED_PATH if setting == SHIPPED else Path(setting)


class LiveRouter:
    def __init__(self, path: Path, featurizer: Featurizer, strong_share: float,
                 medium_share: float) -> None:
        """Loads the model now: a router model named in config that cannot load stops start-up
        with the reason, rather than routing on the tag while the operator believes otherwise."""
        self._path = path
        self._featurizer = featurizer
        self._shares = (strong_share, strong_share + medium_share)
        self._cache: LRUCache[bytes, RouterVerdict] = LRUCache(CACHE_SIZE)
        self._checked_at = time.monotonic()
        self._stamp = self._file_stamp()
        self._router, self._thresholds = self._load()

    @property
    def model(self) -> RouterModel:
        return self._router.model

    def judge(self, text: str) -> RouterVerdict:
        self._reload_if_changed()
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            raw = self._router.raw(text)
            verdict = RouterVerdict(float(self._router.model.strong_scores(np.array([raw]))[0]),
                                    self._level(raw))
            self._cache[key] = verdict
        return verdict

    def warm_up(self) -> None:
        self._router.strong_score("warm up")

    def _level(self, raw: float) -> Difficulty:
        top, middle = self._thresholds
        return "complex" if raw >= top else "medium" if raw >= middle else "simple"

    def _load(self) -> tuple[Router, tuple[float, float]]:
        """The model in the file, tried on a prompt first: one that loads but cannot score
        (its weights one feature short of the features it names) would fail every request."""
        model = RouterModel.load(self._path)
        router = Router(model, self._featurizer)
        try:
            probe = router.strong_score(PROBE)
        except Exception as exc:
            raise ValueError(f"the router model {self._path} cannot score a prompt: "
                             f"{type(exc).__name__}: {exc}") from None
        if not 0.0 <= probe <= 1.0:
            raise ValueError(f"the router model {self._path} scores a prompt {probe}")
        log.info("router_model.loaded", path=str(self._path), kind=model.kind,
                 trained_at=model.meta.get("trained_at"), data=model.meta.get("data"))
        top, middle = model.thresholds(self._shares)
        return router, (top, middle)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def _reload_if_changed(self) -> None:
        """At most one stat a second; a file that is gone or cannot load keeps the model in use
        (and says so once per change)."""
        now = time.monotonic()
        if now - self._checked_at < RELOAD_CHECK_S:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._router, self._thresholds = self._load()
        except ValueError as exc:
            log.error("router_model.reload_failed", path=str(self._path), reason=str(exc))
            return
        self._cache.clear()
