"""What the tests hold on to: the emulator's URL and state, and its control endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from emulator.state import EmulatorState


@dataclass(frozen=True)
class Emulator:
    url: str
    state: EmulatorState

    async def put_scenario(self, **scenario: Any) -> dict[str, Any]:
        """Replace the scenario over HTTP, as a benchmark would; models default to the market."""
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{self.url}/_emulator/scenario", json=scenario) as response:
                assert response.status == 200, await response.text()
                return await response.json()

    async def faults(self, *rules: dict[str, Any]) -> None:
        await self.put_scenario(faults=list(rules))

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/_emulator/stats") as response:
                return await response.json()
