"""The control endpoints that tests and benchmarks use to steer a running emulator."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import openai
import pytest
from emulator_harness import Emulator

SIMPLE = [{"role": "user", "content": "What is the capital of France?"}]


async def test_health_says_emulated(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/_emulator/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "emulated": True}
            assert response.headers["x-emulator"] == "smart-router"


async def test_every_response_carries_the_header_even_unknown_routes(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/no/such/route") as response:
            assert response.status == 404
            assert response.headers["x-emulator"] == "smart-router"


async def test_get_scenario_returns_the_market(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/_emulator/scenario") as response:
            scenario = await response.json()

    assert scenario["models"]["gpt-4o"] == {"providers": ["openai"], "strength": 3,
                                            "mistakes": 0.02}
    assert scenario["models"]["phi3:mini"] == {"providers": ["ollama"], "strength": 1,
                                               "mistakes": 0.12}
    assert scenario["faults"] == []
    assert len(scenario["models"]) == 10


async def test_put_scenario_replaces_models_and_latency(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    await emulator.put_scenario(
        latency_ms=200, models={"tiny-model": {"providers": ["openai"], "strength": 1}}
    )
    started = time.monotonic()

    await openai_client.chat.completions.create(model="tiny-model", messages=SIMPLE)

    assert time.monotonic() - started >= 0.2
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(model="gpt-4o", messages=SIMPLE)


async def test_per_token_latency_paces_a_stream(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    await emulator.put_scenario(latency_per_output_token_ms=5)
    stream = await openai_client.chat.completions.create(
        model="gpt-4o", messages=SIMPLE, stream=True
    )
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())

    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert sum(gaps) / len(gaps) >= 0.004


@pytest.mark.parametrize(
    "body",
    [
        {"latency_ms": -1},
        {"models": {"m": {"providers": ["bedrock"], "strength": 1}}},
        {"models": {"m": {"providers": ["openai"], "strength": 4}}},
        {"faults": [{"action": "explode"}]},
        {"faults": [{"action": "hang", "probability": 2}]},
        {"faults": [{"action": "hang", "prompt_regex": "("}]},
        {"unknown": True},
    ],
)
async def test_an_invalid_scenario_is_refused_and_the_old_one_kept(
    emulator: Emulator, body: dict[str, object]
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{emulator.url}/_emulator/scenario", json=body) as response:
            assert response.status == 422
            assert (await response.json())["details"]

    assert "gpt-4o" in emulator.state.scenario.models
    assert emulator.state.scenario.faults == ()


async def test_reset_restores_the_startup_scenario_and_zeroes_counters(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    await emulator.faults({"action": "server_error"})
    with pytest.raises(openai.InternalServerError):
        await openai_client.chat.completions.create(model="gpt-4o", messages=SIMPLE)

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emulator.url}/_emulator/reset") as response:
            assert response.status == 200

    assert (await emulator.stats())["total"] == 0
    assert await openai_client.chat.completions.create(model="gpt-4o", messages=SIMPLE)


async def test_stats_count_outcomes_and_requests_in_flight(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    hard = [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]
    await openai_client.chat.completions.create(model="gpt-4o", messages=SIMPLE)
    await openai_client.chat.completions.create(model="gpt-4o", messages=hard)
    await openai_client.chat.completions.create(model="gpt-4o-mini", messages=hard)
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(model="gpt-5", messages=SIMPLE)
    await emulator.put_scenario(latency_ms=2000)

    slow = [
        asyncio.create_task(openai_client.chat.completions.create(model="gpt-4o", messages=SIMPLE))
        for _ in range(5)
    ]
    for _ in range(30):  # all five in, however busy the machine (each is held 2 s)
        during = await emulator.stats()
        if during["in_flight"] == 5:
            break
        await asyncio.sleep(0.05)
    await asyncio.gather(*slow)
    after = await emulator.stats()

    assert during["in_flight"] == 5
    assert after["in_flight"] == 0
    assert after["total"] == 9
    assert after["counts"]["openai"] == {
        "gpt-4o": {"good": 7},
        "gpt-4o-mini": {"weak": 1},
        "gpt-5": {"not_found": 1},
    }
