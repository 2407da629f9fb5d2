"""The aiohttp application: four providers' routes, the control routes, the emulated marker."""

from __future__ import annotations

from aiohttp import web

from .control import control_routes
from .handler import chat_endpoint
from .ollama_catalogue import catalogue_routes
from .scenario import Scenario
from .state import EmulatorState
from .wire.anthropic import AnthropicWire
from .wire.groq import GroqWire
from .wire.ollama import OllamaWire
from .wire.openai import OpenAIWire

STATE = web.AppKey("emulator_state", EmulatorState)
MARKER_HEADER = "x-emulator"
MAX_BODY_BYTES = 16 * 1024 * 1024


def create_app(scenario: Scenario) -> web.Application:
    state = EmulatorState(scenario)
    ollama = OllamaWire()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.on_response_prepare.append(_mark_emulated)
    app.add_routes(
        [
            web.post("/v1/chat/completions", chat_endpoint(OpenAIWire(), state)),
            web.post("/v1/messages", chat_endpoint(AnthropicWire(), state)),
            web.post("/openai/v1/chat/completions", chat_endpoint(GroqWire(), state)),
            web.post("/api/chat", chat_endpoint(ollama, state)),
            *catalogue_routes(state, ollama),
            *control_routes(state),
        ]
    )
    return app


async def _mark_emulated(_: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors included, says it did not come from a real provider."""
    response.headers[MARKER_HEADER] = "smart-router"
