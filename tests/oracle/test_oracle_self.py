"""The oracle on generated v2 traces (runs now, before the engine knows v2): it decides every
trace, and what it decides keeps the contract's invariants."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from .strategies import traces, v2_options
from .traces import oracle_replay, per_registration


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(v2=True, timed=True), v2_options(timed=True))
def test_oracle_keeps_the_invariants(text: str, options: dict[str, str]) -> None:
    pushes = oracle_replay(text, options).pushes
    times = [p["at"] for p in pushes if "at" in p]
    for lane in per_registration(pushes).values():
        ids = [i for p in lane for i in p["stanzas"] if i is not None]
        assert len(ids) == len(set(ids)), "a stanza id pushed twice to one registration"
        lane_times = [p["at"] for p in lane if "at" in p]
        assert lane_times == sorted(lane_times)
    for push in pushes:
        assert push["stanzas"]
        assert push.get("urgent", False) == (push["rule"] == "e/call")
    assert all(isinstance(t, int | float) for t in times)
