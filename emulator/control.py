"""Runtime control for tests and benchmarks: swap the scenario, reset, read counters."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from .completion import market_verdict
from .scenario import Scenario
from .state import EmulatorState
from .wire.base import json_response


def control_routes(state: EmulatorState) -> list[web.RouteDef]:
    async def health(_: web.Request) -> web.Response:
        return json_response({"status": "ok", "emulated": True})

    async def get_scenario(_: web.Request) -> web.Response:
        return json_response(state.scenario.model_dump(mode="json"))

    async def put_scenario(request: web.Request) -> web.Response:
        try:
            scenario = Scenario.model_validate_json(await request.read())
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False, include_context=False))
            return json_response({"error": "invalid scenario", "details": errors}, 422)
        state.use(scenario)
        return json_response(scenario.model_dump(mode="json"))

    async def reset(_: web.Request) -> web.Response:
        state.reset()
        return json_response({"status": "reset"})

    async def stats(_: web.Request) -> web.Response:
        return json_response(state.stats.snapshot())

    async def verdicts(request: web.Request) -> web.Response:
        """The market's verdict on each (provider, model, prompt): what a benchmark counts as
        an adequate final answer, read here so that the router under test never sees it."""
        try:
            answers = (await request.json())["answers"]
            found = [_verdict(state.scenario, a["provider"], a["model"], a["prompt"])
                     for a in answers]
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": "expected {answers: [{provider, model, prompt}]}",
                                  "details": f"{type(exc).__name__}: {exc}"}, 400)
        return json_response({"verdicts": found})

    return [
        web.get("/_emulator/health", health),
        web.post("/_emulator/verdicts", verdicts),
        web.get("/_emulator/scenario", get_scenario),
        web.put("/_emulator/scenario", put_scenario),
        web.post("/_emulator/reset", reset),
        web.get("/_emulator/stats", stats),
    ]


def _verdict(scenario: Scenario, provider: str, model: str, prompt: str) -> str | None:
    """"good", "weak" or "wrong" (confidently) as the model would answer unfaulted; None for a
    model not served there."""
    spec = scenario.models.get(model)
    if spec is None or provider not in spec.providers or not isinstance(prompt, str):
        return None
    return market_verdict(spec, model, prompt)
