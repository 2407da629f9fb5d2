import asyncio

from shared import runtime

from .worker import create_app

runtime.command_line(
    "services.gateway",
    "The HTTP gateway: the router's API and an OpenAI-compatible one over "
    "HTTP.")
asyncio.run(create_app().run())
