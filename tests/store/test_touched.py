"""The store engine compares only the records an event touched (looked up, stored or forgot
through the world's storage methods): every other record cannot have changed. Proof by
comparison: on every attempt of every event (one by one, in batches, the due work of the
time-based rules), what the touched-only diff commits is exactly what the full diff of every
record commits on the same state, and the snapshot each leaves for the cache is the same; the
whole run pushes what one plain engine pushes. On the memory store, SQLite and a real Redis."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traces import CONFIG, Clock, engine_state, outcome, random_events, store_state

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine
from pushrules.runtime.store.base import UserChanges, UserSnapshot
from pushrules.runtime.trace import read_trace

STORES = ("memory", "sqlite", "redis")
FOUR = ("bob@example.org", "ann@example.org", "cid@example.org", "dee@example.org")
TRACE_USERS = ("bob@example.org", "carol@example.org")
"""The users of the hypothesis traces (tests/oracle/strategies.py)."""
EXAMPLES = {"memory": 40, "sqlite": 20, "redis": 20}
"""Hypothesis examples per store and strategy."""


def _changes_value(changes: UserChanges | None) -> Any:
    """What a commit writes, its random token aside."""
    return None if changes is None else {**dataclasses.asdict(changes), "token": ""}


def _snapshot_value(snapshot: UserSnapshot | None) -> Any:
    """The snapshot a commit makes, with its rows' order (the registrations' is fan-out's)."""
    if snapshot is None:
        return None
    return ({**dataclasses.asdict(snapshot), "token": ""}, list(snapshot.sessions),
            list(snapshot.registrations))


class Checked(StoredEngine):
    """A StoredEngine that computes each attempt's changes twice on the same state, with the
    full diff and with the touched-only one (the one it commits), and requires them equal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compared = 0
        self.skipped = 0
        """Attempts where the touched-only diff left some record of the user uncompared."""

    def _changes(self, snapshot: UserSnapshot, pushes: list[Push], settle: tuple[str, ...],
                 verified: bool = True) -> UserChanges | None:
        hint = self._hint
        self._full_diff = True
        try:
            full = super()._changes(snapshot, pushes, settle, verified)
        finally:
            self._full_diff = False
        full_next, self._hint = self._next, hint
        touched = super()._changes(snapshot, pushes, settle, verified)
        assert _changes_value(touched) == _changes_value(full)
        assert _snapshot_value(self._next) == _snapshot_value(full_next)
        if self._next is not None:  # an untouched record's row is the cached object itself
            for sid, row in snapshot.sessions.items():
                if sid not in self._touched_sessions and sid in self._next.sessions:
                    assert self._next.sessions[sid] is row
        self.compared += 1
        self.skipped += (len(self._touched_sessions) < len(snapshot.sessions)
                         or not self._touched_all)
        return touched


def batched(engine: StoredEngine, events: list[Any], sizes: list[int]) -> list[Any]:
    """The events through ``handle_many`` in slices of ``sizes`` (cycled), as outcomes."""
    out: list[Any] = []
    start, n = 0, 0
    while start < len(events):
        size = sizes[n % len(sizes)]
        for handled in engine.handle_many(events[start:start + size]):
            if isinstance(handled.error, ImpossibleEvent):
                out.append(f"impossible: {handled.error}")
            else:
                assert handled.error is None, handled.error
                out.append([push.to_json() for push in handled.pushes])
        start, n = start + size, n + 1
    return out


def step(engine: Engine, event: Any) -> list[Push]:
    """One timed event as replay runs it: what comes due first, then the event."""
    pushes = engine.run_due(event.at) if event.at is not None else []
    try:
        return pushes + engine.handle(event)
    except ImpossibleEvent:
        return pushes


def timed_run(engine: Engine, events: list[Any]) -> list[Push]:
    pushes = [p for event in events for p in step(engine, event)]
    flush = engine.flush_held() if isinstance(engine, StoredEngine) else engine.flush()
    return pushes + flush


def events_of(text: str) -> list[Any]:
    return [item.event for item in read_trace(text.splitlines(keepends=True))]


# --- v1 random traces: eviction (max_devices 3), counted errors, disables ----------------------

@pytest.mark.parametrize("opener", STORES, indirect=True)
@pytest.mark.parametrize(("seed", "cache_users"), [(0, 1024), (1, 0)])
def test_random_traces_commit_what_the_full_diff_commits(opener: Any, seed: int,
                                                         cache_users: int) -> None:
    events = random_events(seed, 500, FOUR)
    ref = Engine(CONFIG, clock=Clock())
    expected = [outcome(ref, event) for event in events]
    one = Checked(opener(), CONFIG, clock=Clock(), cache_users=cache_users)
    assert [outcome(one, event) for event in events] == expected
    many = Checked(opener.fresh()(), CONFIG, clock=Clock(), cache_users=cache_users)
    assert batched(many, events, [16, 1, 5, 64]) == expected
    for engine in (one, many):
        for user in FOUR:
            assert store_state(engine.store, user) == engine_state(ref, user)
        possible = sum(isinstance(o, list) for o in expected)  # (a rejected one commits none)
        assert engine.compared >= possible
        assert engine.skipped > possible // 2  # most events leave some record untouched


# --- hypothesis v2 traces: chat settings, calls, CSI, remote disables --------------------------

@pytest.mark.parametrize("opener", STORES, indirect=True)
def test_generated_v2_traces_commit_what_the_full_diff_commits(opener: Any) -> None:
    from oracle.strategies import traces, v2_options  # type: ignore[import-not-found]

    @settings(max_examples=EXAMPLES[opener.kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(traces(v2=True), v2_options(timed=False),
           st.lists(st.integers(1, 12), min_size=1, max_size=4))
    def check(text: str, options: dict[str, str], sizes: list[int]) -> None:
        config = Config().with_settings(options)
        events = events_of(text)
        ref = Engine(config, clock=Clock())
        expected = [outcome(ref, event) for event in events]
        one = Checked(opener.fresh()(), config, clock=Clock())
        assert [outcome(one, event) for event in events] == expected, text
        many = Checked(opener.fresh()(), config, clock=Clock())
        assert batched(many, events, sizes) == expected, text
        for engine in (one, many):
            for user in TRACE_USERS:
                assert store_state(engine.store, user) == engine_state(ref, user), text
            assert engine.compared >= sum(isinstance(o, list) for o in expected), text

    check()


# --- hypothesis timed traces: burst_window, orphan_ttl, retry_after; ticks and due work ---------

@pytest.mark.parametrize("opener", STORES, indirect=True)
def test_generated_timed_traces_commit_what_the_full_diff_commits(opener: Any) -> None:
    from oracle.strategies import (  # type: ignore[import-not-found]
        time_heavy_traces,
        time_options,
        traces,
        v2_options,
    )

    timed = st.one_of(st.tuples(time_heavy_traces(), time_options()),
                      st.tuples(traces(v2=True, timed=True), v2_options(timed=True)))

    @settings(max_examples=EXAMPLES[opener.kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(timed)
    def check(drawn: tuple[str, dict[str, str]]) -> None:
        text, options = drawn
        config = Config().with_settings(options)
        events = events_of(text)
        expected = timed_run(Engine(config, clock=Clock()), events)
        engine = Checked(opener.fresh()(), config, clock=Clock())
        assert timed_run(engine, events) == expected, (text, options)
        assert engine.compared > 0, text

    check()
