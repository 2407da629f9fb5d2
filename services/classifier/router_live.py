"""The router model as the classifier service runs it: loaded from the file named in
`classifier.router_model`, reloaded when that file changes, and turned into a routing level with
two thresholds calibrated on the model's training prompts from the configured shares of
traffic (routing.strong_share to the complex tier's level, routing.medium_share to the medium's).

Not thread-safe by design: the classifier calls it from its one model thread. Only a changed
file is read elsewhere, on a loader thread of its own, so a large or stalled file (a hung mount)
does not hold the prompts waiting for the model thread: the model in use serves them until the
new one is read, then it is probed and swapped in on the model thread.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import Future
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
# A read of a changed file taking longer is taken as stalled (a hung mount): a later change is
# then read on a new loader thread. A shorter one is waited for, then the file read again.
STALLED_READ_S = 10.0
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
        self._reading: Future[RouterModel] | None = None
        self._reading_since = 0.0
        self._router, self._thresholds = self._adopt(RouterModel.load(self._path))

    @property
    def model(self) -> RouterModel:
        return self._router.model

    @property
    def loading(self) -> bool:
        """A changed file is being read; the model in use still routes."""
        return self._reading is not None and not self._reading.done()

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

    def _adopt(self, model: RouterModel) -> tuple[Router, tuple[float, float]]:
        """A model read from the file, tried on a prompt first: one that loads but cannot score
        (its weights one feature short of the features it names) would fail every request."""
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
        """At most one stat a second; a changed file is read on a loader thread, and the model
        in use routes until it is in. A file that is gone or cannot load keeps the model in use
        (and says so once per change)."""
        if self._reading is not None and self._reading.done():
            read, self._reading = self._reading, None  # taken once, whatever its swap does
            self._swap(read)
        now = time.monotonic()
        if now - self._checked_at < RELOAD_CHECK_S:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        if self._reading is not None:
            if now - self._reading_since < STALLED_READ_S:
                return  # changed while read: read again once this read ends
            log.warning("router_model.read_stalled", path=str(self._path),
                        for_s=round(now - self._reading_since))
        # The older read, if stalled, is dropped when it ends: it keeps only its own thread.
        self._stamp = stamp
        self._reading, self._reading_since = _read_aside(self._path), now

    def _swap(self, read: Future[RouterModel]) -> None:
        try:
            self._router, self._thresholds = self._adopt(read.result())
        except ValueError as exc:
            log.error("router_model.reload_failed", path=str(self._path), reason=str(exc))
            return
        self._cache.clear()


def _read_aside(path: Path) -> Future[RouterModel]:
    """RouterModel.load on a daemon thread of its own: a read that never ends (a stalled mount)
    holds that thread only, and not the process's exit."""
    read: Future[RouterModel] = Future()

    def run() -> None:
        try:
            read.set_result(RouterModel.load(path))
        except BaseException as exc:  # handed to the model thread
            read.set_exception(exc)

    threading.Thread(target=run, name="router-model-reader", daemon=True).start()
    return read
