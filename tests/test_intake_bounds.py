"""The classifier's intake: which tiers a request may use, and whose tenant it is. A unit test
of the stage, no broker."""

from __future__ import annotations

import pytest
from faststream.nats import NatsBroker
from pydantic import ValidationError

from services.classifier.chain import Classifier
from services.classifier.intake import Intake, vouched
from shared.errors import RouterError
from shared.messages import ChatRequest, Origin
from tests.stage_helpers import stage_config

CONFIG = stage_config()
INTAKE = Intake(NatsBroker(), CONFIG, Classifier(CONFIG.classifier))


@pytest.mark.parametrize(("request_fields", "bounds"), [
    ({}, (None, 2)),
    ({"tier": "medium"}, (1, 2)),
    ({"max_tier": "medium"}, (None, 1)),
    ({"tier": "simple", "max_tier": "simple"}, (0, 0)),
    ({"model": "gpt-4o-mini"}, (0, 0)),  # the first tier that lists it; no climb
    ({"model": "openai:gpt-4o"}, (2, 2)),
])
def test_a_request_may_pin_its_tier_and_cap_its_climb(request_fields, bounds):
    assert INTAKE.tier_bounds(ChatRequest(prompt="hi", **request_fields)) == bounds


@pytest.mark.parametrize(("request_fields", "message"), [
    ({"tier": "huge"}, "unknown tier 'huge' (tiers: simple, medium, complex)"),
    ({"tier": "complex", "max_tier": "medium"}, "'tier' is above the highest tier"),
    ({"model": "gpt-5-ultra"}, "'model': 'gpt-5-ultra' is not a configured model"),
    ({"model": "gpt-4o", "tier": "simple"}, "'model' pins its own tier"),
])
def test_an_impossible_tier_is_an_invalid_request(request_fields, message):
    with pytest.raises(RouterError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        INTAKE.tier_bounds(ChatRequest(prompt="hi", **request_fields))
    assert err.value.code == "invalid_request"


def test_a_tenants_subject_names_its_tenant_whatever_the_body_says():
    origin = Origin(kind="online", tenant="acme", reply_to="_INBOX.acme.x1")

    assert vouched(ChatRequest(prompt="hi"), origin).tenant == "acme"
    with pytest.raises(RouterError, match="this connection is tenant 'acme', not 'other'"):
        vouched(ChatRequest(prompt="hi", tenant="other"), origin)
    with pytest.raises(RouterError, match="go to its own inbox"):
        vouched(ChatRequest(prompt="hi"), origin.model_copy(update={"reply_to": "_INBOX.x"}))


@pytest.mark.parametrize("model", ["gpt\x00x", "m" * 65])
def test_a_model_name_is_a_printable_name_of_a_bounded_length(model):
    with pytest.raises(ValidationError, match="model"):
        ChatRequest(prompt="hi", model=model)
