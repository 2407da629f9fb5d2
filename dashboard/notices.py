"""The sentences the page shows above its figures: emulated traffic, an unreachable ledger."""

from __future__ import annotations

from . import format as fmt


def emulated_banner(summary: dict) -> str | None:
    """None when every request in the window was answered by real providers."""
    emulated = summary["emulated_requests"]
    if not emulated:
        return None
    return (f"Emulated traffic: {fmt.count(emulated)} of {fmt.count(summary['requests'])} "
            "requests in this window were answered by the provider emulator, not by real models. "
            "Their costs are prices applied to emulated token counts.")


def ledger_unavailable(reason: str, refresh_s: float) -> str:
    return (f"The ledger database does not answer ({reason}). The figures below are the last "
            f"ones read; the page tries again every {refresh_s:g} s.")
