"""The admission bound's bookkeeping: slots are freed by a done notice or by the deadline; a
tenant holds at most its share."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from services.classifier.admission import Admission, Refused
from shared.config import PipelineConfig, load_config


def test_past_the_bound_a_request_is_refused_until_a_slot_is_freed():
    admission = Admission(limit=2)
    later = time.time() + 60

    assert admission.admit("a", later) is None and admission.admit("b", later) is None
    assert admission.admit("c", later) is Refused.FULL
    admission.done("a")
    assert admission.admit("c", later) is None


def test_a_lost_done_notice_frees_its_slot_at_the_deadline():
    admission = Admission(limit=1)

    assert admission.admit("gone", time.time() - 1) is None  # its deadline has passed
    assert admission.admit("next", time.time() + 60) is None
    assert admission.in_flight == 1


def test_without_a_bound_nothing_is_kept():
    admission = Admission(limit=0)

    assert all(admission.admit(str(i), time.time() + 60, "t") is None for i in range(1000))
    assert admission.in_flight == 0


def test_a_tenant_holds_at_most_its_share_and_frees_it():
    admission = Admission(limit=5, per_tenant=2)
    later = time.time() + 60

    assert admission.admit("a1", later, "alice") is None
    assert admission.admit("a2", time.time() - 1, "alice") is None  # its deadline has passed
    assert admission.admit("a3", later, "alice") is None  # in the expired one's place
    assert admission.admit("a4", later, "alice") is Refused.TENANT_FULL
    assert admission.admit("b1", later, "bob") is None
    assert admission.admit("n1", later) is None and admission.admit("n2", later) is None
    assert admission.admit("b2", later, "bob") is Refused.FULL  # the whole bound first
    admission.done("a1")
    assert admission.held_by("alice") == 1 and admission.in_flight == 4
    admission.done("a3")
    admission.done("a3")  # a second notice frees nothing more
    assert admission.held_by("alice") == 0 and "alice" not in admission._by_tenant
    assert admission.in_flight == 3


def test_a_share_per_tenant_above_the_whole_bound_is_refused_at_start():
    """It would bound nothing (before: accepted silently, e.g. after lowering the bound)."""
    pipeline = load_config().pipeline.model_dump()

    with pytest.raises(ValidationError, match="at most 100, or 0 for no bound per tenant"):
        PipelineConfig.model_validate(pipeline | {"max_online_in_flight": 100})
    for bound, share in [(100, 100), (100, 0), (0, 150)]:
        PipelineConfig.model_validate(pipeline | {"max_online_in_flight": bound,
                                                  "max_online_in_flight_per_tenant": share})


def test_near_the_bound_the_freed_slots_go_to_tenants_below_their_fair_share():
    """Before, alice (15) and bob (5) held the whole bound and carol was refused until they let
    up: a slot alice freed went back to alice."""
    admission = Admission(limit=20, per_tenant=15)  # nearly full: 2 free or fewer
    later = time.time() + 60
    for i in range(15):
        assert admission.admit(f"a{i}", later, "alice") is None
    for i in range(5):
        assert admission.admit(f"b{i}", later, "bob") is None
    assert admission.admit("c0", later, "carol") is Refused.FULL

    admission.done("a0")
    assert admission.fair_share("alice") == 10 and admission.fair_share("carol") == 6
    assert admission.admit("a15", later, "alice") is Refused.FAIR_SHARE
    assert admission.admit("c0", later, "carol") is None
    admission.done("a1")
    assert admission.admit("b5", later, "bob") is None  # 5 of a fair 6
    admission.done("a2")
    assert admission.admit("b6", later, "bob") is Refused.FAIR_SHARE
    assert admission.admit("n0", later) is None  # a request of no known tenant: the bound only


def test_with_room_to_spare_a_tenant_may_go_past_its_fair_share():
    admission = Admission(limit=20, per_tenant=15)
    later = time.time() + 60
    assert admission.admit("b0", later, "bob") is None
    for i in range(15):  # 10 is a fair share of two, but 4 or more are free
        assert admission.admit(f"a{i}", later, "alice") is None
    assert admission.admit("b1", later, "bob") is None  # 17 held, 3 free
    assert admission.admit("b2", later, "bob") is None  # 2 free: near the bound, bob is below 10
