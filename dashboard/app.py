"""The Dash app: the page's layout and its one refresh callback, over a Ledger, behind the
access checks its settings ask for."""

from __future__ import annotations

from dash import Dash

from . import access, callbacks
from .layout import layout
from .ledger import Ledger
from .settings import DashboardSettings

TITLE = "Smart Router: cost and savings"


def create_app(ledger: Ledger, settings: DashboardSettings, refresh_s: float = 5.0) -> Dash:
    # update_title=None: the tab title does not flicker to "Updating..." on every tick.
    # add_log_handler=False: Dash's own stdout handler printed each line a second time, next to
    # our structured one.
    app = Dash(__name__, title=TITLE, update_title=None,  # type: ignore[arg-type]  # Dash takes None
               add_log_handler=False)
    app.layout = layout(refresh_s)
    callbacks.register(app, ledger, refresh_s)
    access.guard(app.server, settings)
    return app
