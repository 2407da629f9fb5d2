"""How figures read, the same everywhere on the page: money to the ten-thousandth of a dollar."""

from __future__ import annotations

from datetime import UTC, datetime


def money(value: float, places: int = 4) -> str:
    """$1,234.5678; a negative amount (a fallback dearer than the baseline) as -$0.0012."""
    rounded = round(value, places)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def count(value: int) -> str:
    return f"{value:,}"


def percent(value: float) -> str:
    """A percentage already scaled to 0..100."""
    return f"{value:.2f}%"


def milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def timestamp(value: datetime) -> str:
    """In UTC, as the roll-ups count days."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
