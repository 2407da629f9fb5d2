"""The README's offline figures as gates: `smart-router report`'s own pieces compute them again
and each is asserted at the README's figure with a small, stated margin. When `report` prints
other figures, the README and the figures here change together.

The whole `report` takes about 23 s here (its routing part retrains the learned router twice),
so these tests run its classifier and escalation parts (about 7 s) and not the routing one.
"""

from __future__ import annotations

import pytest

from smart_router import report

# README, "The classifier": the test split at the default bias. Margin: half a point of accuracy
# (the e5 stage runs int8 matrix products, whose rounding may differ from CPU to CPU) and one
# more of the 541 complex prompts tagged simple. The targets (>= 90%, <= 1%) are the issue's;
# complex tagged simple is at 1.1% (6 of 541), one prompt over its target, as the README says.
ACCURACY, ACCURACY_MARGIN = 0.917, 0.005
COMPLEX_AS_SIMPLE, COMPLEX_AS_SIMPLE_MARGIN = 0.011, 0.002

# README, "Escalation": the independent labelled answers (710, written apart from the emulator
# and the phrase list) and the right|wrong set. Margin: one point, about three answers.
ANSWERS_RECALL, ANSWERS_GOOD_ESCALATED = 0.624, 0.0
ARITHMETIC_RECALL, ARITHMETIC_FALSE_ESCALATIONS = 0.200, 0.0
ESCALATION_MARGIN = 0.01


@pytest.fixture(scope="module")
def classifier() -> dict:
    return report.classifier()


@pytest.fixture(scope="module")
async def escalation() -> dict:
    return await report.escalation_figures()


def test_the_classifier_meets_the_readme_figures_on_the_test_split(classifier):
    assert classifier["prompts"] == 1776
    assert classifier["accuracy"] >= ACCURACY - ACCURACY_MARGIN
    assert classifier["complex_tagged_simple"] <= COMPLEX_AS_SIMPLE + COMPLEX_AS_SIMPLE_MARGIN


def test_escalation_catches_weak_answers_as_the_readme_says(escalation):
    answers = escalation["answers"]

    assert answers["answers"] == 710
    assert answers["recall"] >= ANSWERS_RECALL - ESCALATION_MARGIN
    assert answers["good_escalated"] <= ANSWERS_GOOD_ESCALATED + ESCALATION_MARGIN


def test_the_arithmetic_check_catches_wrong_answers_as_the_readme_says(escalation):
    arithmetic = escalation["correctness"]["signals"]["arithmetic"]

    assert escalation["correctness"]["answers"] == 360
    assert arithmetic["recall"] >= ARITHMETIC_RECALL - ESCALATION_MARGIN
    assert arithmetic["false_escalations"] <= ARITHMETIC_FALSE_ESCALATIONS + ESCALATION_MARGIN
