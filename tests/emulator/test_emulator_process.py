"""`python -m emulator` as a real process, configured by flags, environment and a TOML file."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anthropic
import pytest

MAIN = Path(__file__).resolve().parents[2]

SCENARIO = """
latency_ms = 50

[models."house-model"]
providers = ["anthropic", "openai"]
strength = 2

[[faults]]
model = "house-*"
prompt_regex = "(?i)busy"
action = "overloaded"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[str]:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    port = free_port()
    environment = {**os.environ, "EMULATOR_SCENARIO": str(scenario)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port), "--latency-ms", "100"],
        cwd=MAIN,
        env=environment,
    )
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    assert process.wait(timeout=10) == 0


async def wait_healthy(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/_emulator/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)


async def test_the_process_serves_the_scenario_file(emulator_process: str) -> None:
    await wait_healthy(emulator_process)
    client = anthropic.AsyncAnthropic(base_url=emulator_process, api_key="k", max_retries=0)
    ask = [{"role": "user", "content": "Explain how vaccines work."}]
    started = time.monotonic()

    message = await client.messages.create(model="house-model", max_tokens=512, messages=ask)

    assert time.monotonic() - started >= 0.1  # --latency-ms overrides the file's 50 ms
    assert message.model_extra is not None
    assert message.model_extra["emulator_verdict"] == "good"
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(
            model="house-model", max_tokens=64, messages=[{"role": "user", "content": "Busy?"}]
        )
    with pytest.raises(anthropic.NotFoundError):  # the file's models replace the market
        await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=ask)
    await client.close()
