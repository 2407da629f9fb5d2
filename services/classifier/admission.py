"""Admission control for online requests: a bound on how many one classifier holds in the
pipeline, so a burst is refused at once (`overloaded`) instead of queueing toward its deadline,
and a bound per tenant within it, so one tenant's burst leaves room for the others. When the
bound is nearly reached (its last tenth free or less), a tenant holding its fair share (the bound
divided among the tenants holding slots, itself included) or more is refused too, so the slots
freed then go to the tenants below theirs: without it two busy tenants could hold the whole bound
between them (150 and 50 of 200) and a third would be refused until one of them let up.

A request counts from intake until the stage that answers it says so on this classifier's own
done subject, or until its deadline, whichever comes first: a lost notice frees its slot at the
deadline instead of never. A request whose tenant is not known before its body is read (the
shared subject, without the gateway's tenant header) counts toward the whole bound only.
"""

from __future__ import annotations

import time
from collections import Counter
from enum import Enum
from typing import TypeVar

K = TypeVar("K")


class Refused(Enum):
    FULL = "full"  # the whole bound
    TENANT_FULL = "tenant_full"  # the request's tenant's share of it
    FAIR_SHARE = "fair_share"  # near the bound: the tenant's fair share of it


class Admission:
    def __init__(self, limit: int, per_tenant: int = 0) -> None:
        self.limit = limit  # 0: no limit
        self.per_tenant = per_tenant  # 0: none within the limit, and no fair shares
        self.contended = max(1, limit // 10)  # this many free or fewer: fair shares apply
        self._held: dict[str, tuple[float, str | None]] = {}  # trace id: deadline, tenant
        self._by_tenant: Counter[str] = Counter()

    def admit(self, trace_id: str, deadline: float, tenant: str | None = None) -> Refused | None:
        """None when admitted, else which bound refused it."""
        if not self.limit:  # nothing to count: keeping entries would only grow without bound
            return None
        refused = self._refusal(tenant)
        if refused:
            self._forget_expired()
            refused = self._refusal(tenant)
            if refused:
                return refused
        self._held[trace_id] = (deadline, tenant)
        if tenant is not None:
            self._by_tenant[tenant] += 1
        return None

    def done(self, trace_id: str) -> None:
        held = self._held.pop(trace_id, None)
        if held is not None:
            self._release(held[1])

    def holds(self, trace_id: str) -> bool:
        return trace_id in self._held

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def held_by(self, tenant: str) -> int:
        return self._by_tenant[tenant]

    def fair_share(self, tenant: str) -> int:
        """The bound divided among the tenants holding slots, `tenant` included."""
        return self.limit // (len(self._by_tenant) + (tenant not in self._by_tenant))

    def _refusal(self, tenant: str | None) -> Refused | None:
        free = self.limit - len(self._held)
        if free <= 0:
            return Refused.FULL
        if not self.per_tenant or tenant is None:
            return None
        holds = self._by_tenant[tenant]
        if holds >= self.per_tenant:
            return Refused.TENANT_FULL
        if free <= self.contended and holds >= self.fair_share(tenant):
            return Refused.FAIR_SHARE
        return None

    def _release(self, tenant: str | None) -> None:
        if tenant is not None:
            release(self._by_tenant, tenant)

    def _forget_expired(self) -> None:
        now = time.time()
        for trace_id in [t for t, (deadline, _) in self._held.items() if deadline <= now]:
            self._release(self._held.pop(trace_id)[1])


def release(counter: Counter[K], key: K) -> None:
    """One less of `key`; a key at zero is dropped, so a counter holds only what is in hand
    (a tenant's name is kept only while it holds something)."""
    counter[key] -= 1
    if not counter[key]:
        del counter[key]
