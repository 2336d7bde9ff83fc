"""The benchmark result as text (tables for the terminal and for benchmarks/RESULTS.md)."""

from __future__ import annotations

from typing import Any

from .harness import ENGINES


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _checker_transitions(result: dict[str, Any]) -> str:
    checker = result["details"].get("checker")
    if not checker:
        return ""
    return (f" ({_num(checker['transitions_per_s'])} transitions/s, {checker['states']:,} "
            f"states, the whole bound {checker.get('bounds', '')} in {checker['seconds']:.1f} s)")


def text(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}; "
        f"python-statemachine {m['python-statemachine']}, transitions {m['transitions']}"
        + ("  (quick run)" if result["quick"] else ""),
        "",
        "| engine | events/s (mix) | events/s (decision) | bytes/idle session | with its JID |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ENGINES:
        lines.append(
            f"| {name} | {_num(result['events_per_s'][name])} | "
            f"{_num(result['decision_events_per_s'][name])} | "
            f"{_num(result['bytes_per_session'][name])} | "
            f"{_num(result['bytes_per_session_with_jid'][name])} |")
    if result["missing_engines"]:
        lines.append(f"not installed: {', '.join(result['missing_engines'])}")
    lines += ["", "ratios (generated / other engine, same run):"]
    for key, value in result["ratios"].items():
        lines.append(f"  {key}: {_num(value, 1)}x")
    lines += [
        "",
        f"replay end to end (JSON + XML): {_num(result['replay_events_per_s'])} events/s",
        f"checker: {_num(result['checker_states_per_s'])} states/s"
        + _checker_transitions(result),
        "",
        "| engine | sessions | us/event | bytes/session |",
        "|---|---:|---:|---:|",
    ]
    for name, points in result["scaling"].items():
        for p in points:
            lines.append(f"| {name} | {p['sessions']:,} | {p['us_per_event']:.2f} | "
                         f"{p['bytes_per_session']:.0f} |")
    if "stores" in result:
        lines += ["", f"stores: {result['stores']}"]
    lines += ["", "targets:"]
    for label, met in result["targets"].items():
        verdict = "not measured" if met is None else ("met" if met else "MISSED")
        lines.append(f"  {label}: {verdict}")
    return "\n".join(lines)
