"""Admission control for online requests: a bound on how many one classifier holds in the
pipeline, so a burst is refused at once (`overloaded`) instead of queueing toward its deadline.

A request counts from intake until the stage that answers it says so on this classifier's own
done subject, or until its deadline, whichever comes first: a lost notice frees its slot at the
deadline instead of never.
"""

from __future__ import annotations

import time


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._deadlines: dict[str, float] = {}

    def admit(self, trace_id: str, deadline: float) -> bool:
        if not self.limit:  # nothing to count: keeping entries would only grow without bound
            return True
        if len(self._deadlines) >= self.limit:
            self._forget_expired()
            if len(self._deadlines) >= self.limit:
                return False
        self._deadlines[trace_id] = deadline
        return True

    def done(self, trace_id: str) -> None:
        self._deadlines.pop(trace_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._deadlines)

    def _forget_expired(self) -> None:
        now = time.time()
        for trace_id in [t for t, deadline in self._deadlines.items() if deadline <= now]:
            del self._deadlines[trace_id]
