import asyncio
import sys

from .worker import LEDGER, create_app

app = create_app()
asyncio.run(app.run())
sys.exit(1 if app.context.get(LEDGER).failure else 0)  # a writer failed: the supervisor restarts
