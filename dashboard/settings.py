"""The dashboard's settings: one flat object, each field a DASHBOARD_* environment variable
(`python -m dashboard --host/--port` override the first two). A bad value stops the dashboard at
start with the variable's name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import hosts


class DashboardSettings(BaseSettings):
    """Each field is read from DASHBOARD_<FIELD>."""

    # An empty variable is an unset one: .env.example lists the login's variables empty.
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", env_ignore_empty=True,
                                      extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)  # Dash reads 0 as its default, 8050
    # Host names served besides localhost, 127.0.0.1, [::1] and the address bound to,
    # comma-separated. A page on another site that rebinds its own name to this address (DNS
    # rebinding) sends that name, and is refused.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # HTTP basic auth: on when a password is set, directly or in a file (a Docker secret).
    user: str = "admin"
    password: SecretStr | None = None
    password_file: Path | None = None
    # Or: a reverse proxy logs users in and names them in this header (X-Forwarded-User). Only
    # safe when nothing but the proxy can reach the dashboard, and the proxy overwrites it.
    trusted_user_header: str | None = None

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _names(cls, value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
        return hosts.names(value)

    @model_validator(mode="after")
    def _one_login(self) -> DashboardSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set DASHBOARD_PASSWORD or DASHBOARD_PASSWORD_FILE, not both")
        if self.password_file is not None:
            try:
                self.password = SecretStr(self.password_file.read_text().rstrip("\r\n"))
            except OSError as exc:
                raise ValueError(f"cannot read DASHBOARD_PASSWORD_FILE: {exc}") from exc
        if self.password is not None and not self.password.get_secret_value():
            raise ValueError("the dashboard password is empty")
        if self.password is not None and self.trusted_user_header:
            raise ValueError("choose one login: a dashboard password or a trusted user header")
        return self

    def allowed_names(self) -> frozenset[str]:
        """The names a request's Host header may ask for (shared/hosts.py)."""
        return hosts.served(self.host, self.allowed_hosts)

    @property
    def login(self) -> str:
        """How a reader logs in, for the start-up log line: 'basic', 'proxy header <name>' or
        'none'."""
        if self.trusted_user_header:
            return f"proxy header {self.trusted_user_header}"
        return "basic" if self.password is not None else "none"
