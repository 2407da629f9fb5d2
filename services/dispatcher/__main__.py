import asyncio

from .worker import create_app

asyncio.run(create_app().run())
