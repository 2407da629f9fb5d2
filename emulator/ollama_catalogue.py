"""Ollama's model catalogue (/api/tags, /api/show, /api/version), read from the scenario."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from .state import EmulatorState
from .wire.base import ErrorKind, json_response
from .wire.ollama import LATEST_TAG, OllamaWire

VERSION = "0.12.6"
_MODIFIED_AT = "2026-01-01T00:00:00Z"
_SIZE_BYTES = 2_176_178_401


def catalogue_routes(state: EmulatorState, wire: OllamaWire) -> list[web.RouteDef]:
    def local_models() -> list[str]:
        return [name for name, spec in state.scenario.models.items() if "ollama" in spec.providers]

    async def tags(_: web.Request) -> web.Response:
        return json_response({"models": [_listing(name) for name in local_models()]})

    async def version(_: web.Request) -> web.Response:
        return json_response({"version": VERSION})

    async def show(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            name = str(body.get("model") or body.get("name") or "").removesuffix(LATEST_TAG)
        except (ValueError, AttributeError):
            return wire.error(ErrorKind.BAD_REQUEST, "invalid request body")
        if name not in local_models():
            return wire.error(ErrorKind.NOT_FOUND, name)
        return json_response(_description(name))

    return [
        web.get("/api/tags", tags),
        web.get("/api/version", version),
        web.post("/api/show", show),
    ]


def _listing(name: str) -> dict[str, Any]:
    tagged = name if ":" in name else name + LATEST_TAG
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": _MODIFIED_AT,
        "size": _SIZE_BYTES,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": _details(name),
    }


def _description(name: str) -> dict[str, Any]:
    return {
        "modelfile": f"FROM {name}\n",
        "parameters": "stop <|end|>",
        "template": "{{ .Prompt }}",
        "details": _details(name),
        "model_info": {"general.architecture": _family(name), "emulated": True},
        "capabilities": ["completion"],
        "modified_at": _MODIFIED_AT,
    }


def _details(name: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": _family(name),
        "families": [_family(name)],
        "parameter_size": "unknown",
        "quantization_level": "Q4_K_M",
    }


def _family(name: str) -> str:
    return name.split(":")[0]
