"""Smart Router's provider emulator: OpenAI, Anthropic, Groq and Ollama wire formats, no keys.

Run it with `python -m emulator`; see README.md.
"""

from .app import MARKER_HEADER, STATE, create_app
from .scenario import FaultRule, ModelSpec, Scenario, load_scenario

__all__ = [
    "MARKER_HEADER",
    "STATE",
    "FaultRule",
    "ModelSpec",
    "Scenario",
    "create_app",
    "load_scenario",
]
