"""The escalator's rule for when a weak answer may not climb: a unit test of the stage, no
broker."""

from __future__ import annotations

import pytest
from faststream.nats import NatsBroker

from services.escalator.worker import Escalator
from shared.errors import ErrorCode
from tests.stage_helpers import attempt, envelope, stage_config

ESCALATOR = Escalator(NatsBroker(), stage_config())
MAX_ANSWERS = ESCALATOR.cfg.escalation.max_attempts


# Built when the test runs, not at collection: an envelope's deadline is 30 s from its making.
@pytest.mark.parametrize(("case", "expected"), [
    (lambda: envelope(), None),
    (lambda: envelope(seconds_left=-1), ErrorCode.TIMEOUT),
    (lambda: envelope(max_cost_usd=0.002, attempts=[attempt(1, cost_usd=0.002)]),
     ErrorCode.BUDGET_EXCEEDED),
    (lambda: envelope(max_cost_usd=0.01, attempts=[attempt(1, cost_usd=0.002)]), None),
    (lambda: envelope(tier_index=2, attempts=[attempt(1)]), ErrorCode.NO_PROVIDER_AVAILABLE),
    (lambda: envelope(max_tier_index=0, attempts=[attempt(1)]), ErrorCode.NO_PROVIDER_AVAILABLE),
    (lambda: envelope(attempts=[attempt(n) for n in range(1, MAX_ANSWERS + 1)]),
     ErrorCode.NO_PROVIDER_AVAILABLE),
    (lambda: envelope(attempts=[attempt(n, "error") for n in range(1, MAX_ANSWERS + 1)]), None),
    (lambda: envelope(tier_index=2, attempts=[attempt(1, "skipped"), attempt(2, "skipped")]),
     ErrorCode.BUDGET_EXCEEDED),
], ids=["may-climb", "deadline", "budget-spent", "budget-left", "top-tier", "max-tier",
        "max-answers", "errors-are-not-answers", "every-call-skipped"])
def test_a_request_climbs_until_a_limit_stops_it(case, expected):
    assert ESCALATOR.stop_reason(case()) == expected
