import asyncio

from shared import runtime

from .worker import create_app

runtime.command_line(
    "services.escalator",
    "The escalator service: scores each answer, escalates weak ones, "
    "replies and records.")
asyncio.run(create_app().run())
