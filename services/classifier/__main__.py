import asyncio

from shared import runtime

from .worker import create_app

runtime.command_line(
    "services.classifier",
    "The classifier service: admits online requests and batch jobs, tags "
    "each prompt's difficulty and hands it to the dispatcher.")
asyncio.run(create_app().run())
