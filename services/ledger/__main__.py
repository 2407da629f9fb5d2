import asyncio
import sys

from shared import runtime

from .worker import LEDGER, create_app

runtime.command_line(
    "services.ledger",
    "The ledger service: writes every request's cost and savings to "
    "PostgreSQL, answers stats.")
app = create_app()
asyncio.run(app.run())
sys.exit(1 if app.context.get(LEDGER).failure else 0)  # a writer failed: the supervisor restarts
