import asyncio

from shared import runtime

from .worker import create_app

runtime.command_line(
    "services.dispatcher",
    "The dispatcher service: calls the starting tier's models for each "
    "request.")
asyncio.run(create_app().run())
