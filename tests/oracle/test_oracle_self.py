"""The oracle on generated v2 traces (runs now, before the engine knows v2): it decides every
trace, and what it decides keeps the contract's invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from .contract import Oracle
from .strategies import traces, v2_options
from .traces import events_of, oracle_replay, per_registration


def pushed_twice(text: str, options: dict[str, Any]) -> list[str]:
    """Stanza ids pushed twice to one registration within one of its lives: a registration
    enabled anew (after a disable, eviction or expiry) starts with no dedup memory, so an id
    pushed before it was disabled may be pushed again (the oracle makes a new record then)."""
    oracle = Oracle({**options, "version": 2})
    seen: dict[tuple[str, str, str], tuple[object, set[str]]] = {}
    twice: list[str] = []

    def record(pushes: list[dict[str, Any]]) -> None:
        for push in pushes:
            key = (push["user"], push["jid"], push["node"])
            life = oracle.regs.get(key)
            if key not in seen or seen[key][0] is not life:
                seen[key] = (life, set())
            ids = seen[key][1]
            for sid in push["stanzas"]:
                if sid is not None:
                    if sid in ids:
                        twice.append(sid)
                    ids.add(sid)

    for _, event in events_of(text):
        record(oracle.feed(event))
    record(oracle.finish())
    return twice


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(v2=True, timed=True), v2_options(timed=True))
def test_oracle_keeps_the_invariants(text: str, options: dict[str, str]) -> None:
    pushes = oracle_replay(text, options).pushes
    times = [p["at"] for p in pushes if "at" in p]
    assert pushed_twice(text, options) == [], "a stanza id pushed twice to one registration"
    for lane in per_registration(pushes).values():
        lane_times = [p["at"] for p in lane if "at" in p]
        assert lane_times == sorted(lane_times)
    for push in pushes:
        assert push["stanzas"]
        assert push.get("urgent", False) == (push["rule"] == "e/call")
    assert all(isinstance(t, int | float) for t in times)
