"""Human-readable views of the JSON reports (with --json, the JSON itself is printed)."""

from __future__ import annotations


def stats(s: dict) -> str:
    lat = s["latency_ms"]
    out = [
        f"last {s['window_days']} days (since {s['since']}): {s['requests']:,} requests, "
        f"{s['ok']:,} answered, {s['errors']:,} errors, {s['dead_letters']:,} dead letters"
        + (f", {s['emulated_requests']:,} EMULATED" if s["emulated_requests"] else ""),
        f"answered: cost ${s['cost_usd']:.4f}   baseline ${s['baseline_cost_usd']:.4f}   "
        f"saved ${s['saved_usd']:.4f} ({s['savings_pct']:.1f}%)",
        f"spent on failed requests ${s['failed_cost_usd']:.4f}   "
        f"spent in all ${s['spent_usd']:.4f}"
        + (f"   judge sampling ${s['sampling_cost_usd']:.4f} (apart)"
           if s["sampling_cost_usd"] else ""),
        f"escalated {s['escalated']:,} ({s['escalation_rate']:.1%}), "
        f"costing ${s['escalation_cost_usd']:.4f}; answers checked for "
        f"${s['verification_cost_usd']:.4f}",
        f"latency ms: p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  p99 {_ms(lat['p99'])}",
        f"time to first token ms ({s['ttft_ms']['streamed']:,} streamed): "
        f"p50 {_ms(s['ttft_ms']['p50'])}  p95 {_ms(s['ttft_ms']['p95'])}  "
        f"p99 {_ms(s['ttft_ms']['p99'])}",
    ]
    for key in ("by_tier", "by_model", "by_tenant"):
        name = key.removeprefix("by_").replace("model", "model_used")
        title = "by " + key[3:]
        named = [g for g in s[key] if not g.get("others")]
        if key == "by_tenant" and s.get("tenants_total", 0) > len(named):
            title += f" (top of {s['tenants_total']:,})"
        out += ["", f"{title:<28} {'requests':>9} {'cost $':>10} {'saved $':>10} "
                    f"{'saved':>7}"]
        out += [f"  {_label(g, name):<26} {g['requests']:>9,} {g['cost_usd']:>10.4f} "
                f"{g['saved_usd']:>10.4f} {g['savings_pct']:>6.1f}%" for g in s[key]]
    if s["projection"]:
        out += ["", "a month of answers        actual        always the top tier   saving"]
        out += [f"  {p['requests_per_month']:>9,} requests  ${p['cost_usd']:>10,.2f}   "
                f"${p['baseline_cost_usd']:>12,.2f}   ${p['saved_usd']:>10,.2f}"
                for p in s["projection"]]
    return "\n".join(out)


def _label(group: dict, name: str) -> str:
    """A breakdown's row name; by_tenant's last entry may stand for the tenants not named."""
    if group.get("others"):
        others = group["tenants"]
        return f"({others:,} other tenant{'s' if others != 1 else ''})"
    return group[name]


def _ms(value: float | None) -> str:
    """A percentile, or "-" when there is nothing to take it of."""
    return "-" if value is None else f"{value}"
