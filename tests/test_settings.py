"""Settings a production operator may get wrong are refused at start, naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.worker import GatewaySettings
from shared.config import PipelineConfig, Settings, load_config


def test_a_log_level_is_a_level_name_in_any_case():
    """Before, LOG_LEVEL=verbose (or 10) passed, and every service died at start on a
    TypeError that named nothing."""
    assert Settings(log_level="debug").log_level == "DEBUG"
    assert Settings(log_level="warn").log_level == "WARN"  # logging's alias
    for wrong in ("verbose", "10"):
        with pytest.raises(ValidationError, match="log_level"):
            Settings(log_level=wrong)


def test_a_negative_redelivery_backoff_is_refused():
    """Before, it was accepted and handed to JetStream as a negative nack delay."""
    pipeline = load_config().pipeline.model_dump()
    with pytest.raises(ValidationError, match="backoff_s"):
        PipelineConfig.model_validate(pipeline | {"backoff_s": [1.0, -1.0]})


def test_an_empty_api_keys_file_setting_is_refused_not_read_as_the_working_directory(
        monkeypatch):
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", "")
    with pytest.raises(ValidationError, match="set but empty: name the key file"):
        GatewaySettings()
