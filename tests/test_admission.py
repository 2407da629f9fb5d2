"""The admission bound's bookkeeping: slots are freed by a done notice or by the deadline."""

from __future__ import annotations

import time

from services.classifier.admission import Admission


def test_past_the_bound_a_request_is_refused_until_a_slot_is_freed():
    admission = Admission(limit=2)
    later = time.time() + 60

    assert admission.admit("a", later) and admission.admit("b", later)
    assert not admission.admit("c", later)
    admission.done("a")
    assert admission.admit("c", later)


def test_a_lost_done_notice_frees_its_slot_at_the_deadline():
    admission = Admission(limit=1)

    assert admission.admit("gone", time.time() - 1)  # its deadline has passed
    assert admission.admit("next", time.time() + 60)
    assert admission.in_flight == 1


def test_without_a_bound_nothing_is_kept():
    admission = Admission(limit=0)

    assert all(admission.admit(str(i), time.time() + 60) for i in range(1000))
    assert admission.in_flight == 0
