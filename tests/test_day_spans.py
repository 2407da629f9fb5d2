"""A span in days has an upper bound (shared.config.MAX_DAYS, a hundred years): a larger
`ledger.retention_days` or `train-router --since` is refused with a clear message, instead of
PostgreSQL's "timestamp out of range" (the retention then never ran, and train-router blamed the
database). The bound itself reads the ledger fine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import psycopg
import pytest
from pydantic import ValidationError

from services.classifier.ledger_outcomes import read_ledger
from services.ledger import retention
from shared import db
from shared.config import MAX_DAYS, load_config
from smart_router import embedded
from tests import harness


def test_a_retention_past_a_hundred_years_is_refused(tmp_path):
    config = tmp_path / "router.toml"
    config.write_text(f"[ledger]\nretention_days = {MAX_DAYS + 1}\n")

    with pytest.raises(ValidationError, match="ledger.retention_days\n.*less than or equal to "
                                              f"{MAX_DAYS}"):
        load_config(config)


def test_train_router_refuses_a_since_past_a_hundred_years():
    nowhere = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/x"  # were it not refused
    done = subprocess.run([sys.executable, "-m", "smart_router.cli", "train-router",
                           "--from-ledger", "--since", str(MAX_DAYS + 1)],
                          capture_output=True, text=True, timeout=60, cwd=harness.ROOT,
                          env={**os.environ, "DATABASE_URL": nowhere})

    assert done.returncode == 2
    assert "Invalid value for '--since'" in done.stderr
    assert f"less than or equal to {MAX_DAYS}" in done.stderr


async def test_a_hundred_years_reads_the_ledger(servers):
    url = harness.fresh_database(servers.postgres_url)
    db.migrate(url)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await retention.apply(conn, MAX_DAYS) == 0
        assert read_ledger(url, "complex", MAX_DAYS).report["rows"] == 0
    finally:
        with contextlib.suppress(psycopg.Error):
            harness.drop_database(servers.postgres_url, url)
