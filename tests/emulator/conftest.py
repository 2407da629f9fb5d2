"""An in-process emulator for the whole session, reset before each test, and the four SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import groq
import ollama
import openai
import pytest
from aiohttp import web
from emulator_harness import Emulator

from emulator import STATE, create_app, load_scenario

SDK_TIMEOUT_S = 10.0


@pytest.fixture(scope="session")
async def emulator() -> AsyncIterator[Emulator]:
    app = create_app(load_scenario())
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield Emulator(url=f"http://{host}:{port}", state=app[STATE])
    await runner.cleanup()


@pytest.fixture(autouse=True)
def fresh_emulator(emulator: Emulator) -> None:
    emulator.state.reset()


@pytest.fixture
async def openai_client(emulator: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0, timeout=SDK_TIMEOUT_S
    )
    yield client
    await client.close()


@pytest.fixture
async def anthropic_client(emulator: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key="sk-ant-test", max_retries=0, timeout=SDK_TIMEOUT_S
    )
    yield client
    await client.close()


@pytest.fixture
async def groq_client(emulator: Emulator) -> AsyncIterator[groq.AsyncGroq]:
    client = groq.AsyncGroq(
        base_url=emulator.url, api_key="gsk-test", max_retries=0, timeout=SDK_TIMEOUT_S
    )
    yield client
    await client.close()


@pytest.fixture
async def ollama_client(emulator: Emulator) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=emulator.url, timeout=SDK_TIMEOUT_S)
    yield client
    await client.close()
