"""Who may read the dashboard: the Host check (DNS rebinding) and the optional login, through the
Dash app's own Flask server with Flask's test client (no browser, no port). The ledger is never
read: refused requests stop before Dash, and the page, its layout and its assets do not query."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from dashboard.app import create_app
from dashboard.ledger import Ledger
from dashboard.settings import DashboardSettings

# Every kind of route: the page, its layout, its stylesheet, and the refresh callback's POST.
ROUTES = [("GET", "/"), ("GET", "/_dash-layout"), ("GET", "/assets/style.css"),
          ("POST", "/_dash-update-component")]
SERVED = ROUTES[:3]  # the callback's POST needs a real body; the gate does not read it


@pytest.fixture(autouse=True)
def no_dashboard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says its settings; none comes from the environment the suite runs in."""
    for name in [name for name in os.environ if name.startswith("DASHBOARD_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def ledger() -> Iterator[Ledger]:
    ledger = Ledger("postgresql://nobody@127.0.0.1:1/none", timeout_s=1.0)  # never read
    yield ledger
    ledger.close()


def client(ledger: Ledger, **settings):
    return create_app(ledger, DashboardSettings(**settings)).server.test_client()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def statuses(http, headers: dict[str, str], routes=ROUTES) -> set[int]:
    return {http.open(path, method=method, headers=headers).status_code
            for method, path in routes}


def test_a_foreign_host_is_refused_on_every_route(ledger):
    http = client(ledger)
    for host in ("evil.example", "evil.example:8050", "localhost.evil.example", "127.0.0.2",
                 "0.0.0.0:8050", "not a host"):
        assert statuses(http, {"Host": host}) == {400}, host
    refused = http.get("/", headers={"Host": "evil.example"})
    assert "DASHBOARD_ALLOWED_HOSTS" in refused.get_data(as_text=True)


def test_the_loopback_names_and_the_bound_address_are_served(ledger):
    http = client(ledger)
    for host in ("localhost", "localhost:8050", "LOCALHOST.", "127.0.0.1:8050", "[::1]:8050",
                 "[0:0::1]"):
        assert statuses(http, {"Host": host}, SERVED) == {200}, host
    assert b"Smart Router" in http.get("/", headers={"Host": "localhost"}).data

    bound = client(ledger, host="10.1.2.3")  # --host 10.1.2.3: its own address is served
    assert statuses(bound, {"Host": "10.1.2.3:8050"}, SERVED) == {200}
    assert statuses(bound, {"Host": "10.1.2.4:8050"}) == {400}
    everywhere = client(ledger, host="0.0.0.0")  # every interface is not a name to serve
    assert statuses(everywhere, {"Host": "0.0.0.0:8050"}) == {400}
    assert statuses(everywhere, {"Host": "127.0.0.1:8050"}, SERVED) == {200}


def test_allowed_hosts_come_from_the_environment(ledger, monkeypatch):
    monkeypatch.setenv("DASHBOARD_ALLOWED_HOSTS", "dash.example.com, Other.Example.")
    http = client(ledger)
    for host in ("dash.example.com", "dash.example.com:443", "other.example", "localhost"):
        assert statuses(http, {"Host": host}, SERVED) == {200}, host
    for host in ("evil.example", "sub.dash.example.com", "example.com"):
        assert statuses(http, {"Host": host}) == {400}, host


def test_a_password_requires_basic_auth(ledger):
    http = client(ledger, password="correct horse")
    local = {"Host": "localhost:8050"}
    for login in ({}, basic("admin", "wrong"), basic("admin", "correct hors"),
                  basic("root", "correct horse"), {"Authorization": "Bearer correct horse"}):
        assert statuses(http, local | login) == {401}, login
    challenge = http.get("/", headers=local)
    assert challenge.headers["WWW-Authenticate"].startswith('Basic realm="Smart Router')
    assert "correct horse" not in challenge.get_data(as_text=True)

    assert statuses(http, local | basic("admin", "correct horse"), SERVED) == {200}
    # The Host is checked first: a login does not let a rebinding page in.
    assert statuses(http, {"Host": "evil.example"} | basic("admin", "correct horse")) == {400}


def test_the_password_and_user_from_the_environment_and_a_file(ledger, monkeypatch, tmp_path):
    secret = tmp_path / "dashboard-password"
    secret.write_text("from a file\n")  # the file's final newline is not part of it
    monkeypatch.setenv("DASHBOARD_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("DASHBOARD_USER", "ops")
    http = client(ledger)
    local = {"Host": "127.0.0.1"}
    assert statuses(http, local | basic("ops", "from a file"), SERVED) == {200}
    assert statuses(http, local | basic("admin", "from a file")) == {401}
    assert statuses(http, local | basic("ops", "from a file\n")) == {401}

    monkeypatch.delenv("DASHBOARD_PASSWORD_FILE")
    monkeypatch.setenv("DASHBOARD_PASSWORD", "")  # empty is unset: no login, as before
    assert statuses(client(ledger), local, SERVED) == {200}


def test_a_trusted_proxy_header_names_the_user(ledger):
    http = client(ledger, trusted_user_header="X-Forwarded-User")
    local = {"Host": "localhost"}
    assert statuses(http, local | {"X-Forwarded-User": "alice"}, SERVED) == {200}
    for missing in ({}, {"X-Forwarded-User": " "}, {"X-Other-User": "alice"},
                    basic("admin", "anything")):
        assert statuses(http, local | missing) == {403}, missing
    assert statuses(http, {"Host": "evil.example", "X-Forwarded-User": "alice"}) == {400}


@pytest.mark.parametrize("settings", [
    {"password": "a", "trusted_user_header": "X-Forwarded-User"},
    {"password": "a", "password_file": "/etc/hostname"},
    {"password_file": "/nonexistent/dashboard-password"},
    {"allowed_hosts": "dash.example.com:8050"},
    {"allowed_hosts": "dash example"},
    {"port": 0},  # Dash would listen on 8050 instead
])
def test_contradictory_or_bad_settings_are_refused(settings):
    with pytest.raises(ValidationError):
        DashboardSettings(**settings)


def test_a_bad_setting_stops_the_dashboard_without_printing_the_password():
    env = {**os.environ, "DASHBOARD_PASSWORD": "hunter2-secret",
           "DASHBOARD_TRUSTED_USER_HEADER": "X-Forwarded-User"}
    started = subprocess.run([sys.executable, "-m", "dashboard"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode != 0
    assert "choose one login" in started.stderr
    assert "hunter2" not in started.stderr + started.stdout
