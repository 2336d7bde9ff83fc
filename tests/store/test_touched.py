"""The store engine builds and compares only the records an event touches (looks up, stores
or forgets through the world's storage methods): no other record can have changed. Proof by
comparison with the way before (``_full_diff``: every record built at the install and compared
after the event), the two engines in lockstep on stores of the same kind: at every attempt
(events one by one, in batches, the due work of the time-based rules) both commit exactly the
same changes and leave the same snapshot for the cache; the pushes are one plain engine's.
Random v1 traces (eviction, counted errors, disables), hypothesis v2 traces (chat settings,
calls, CSI) and timed ones (burst_window, orphan_ttl, retry_after, ticks), on the memory store,
SQLite and a real Redis."""

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
EXAMPLES = {"memory": 80, "sqlite": 30, "redis": 30}
"""Hypothesis examples per store and strategy."""


def _changes_value(changes: UserChanges | None) -> Any:
    """What a commit writes, its random tokens aside."""
    if changes is None:
        return None
    return {**dataclasses.asdict(changes), "token": "", "after": changes.after is not None}


def _snapshot_value(snapshot: UserSnapshot | None) -> Any:
    """The snapshot a commit makes (for the cache), with its registrations' order (fan-out's);
    its prebuilt dedup sets (a cache of some rows' ``pushed``) must match those rows."""
    if snapshot is None:
        return None
    for reg, prebuilt in snapshot.pushed.items():
        assert list(prebuilt) == snapshot.registrations[reg]["pushed"]
    return ({**dataclasses.asdict(snapshot), "token": "", "pushed": None},
            list(snapshot.registrations))


class Recorder(StoredEngine):
    """A StoredEngine that records what each attempt would commit and the snapshot it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts: list[Any] = []
        self.unbuilt = 0
        """Attempts that left some stored record of the user unbuilt (and so uncompared)."""

    def _changes(self, snapshot: UserSnapshot, pushes: list[Push], settle: tuple[str, ...],
                 verified: bool = True, settled_apart: bool = False) -> UserChanges | None:
        changes = super()._changes(snapshot, pushes, settle, verified, settled_apart)
        self.attempts.append((_changes_value(changes), _snapshot_value(self._next)))
        built = self.users.get(snapshot.user, {})
        self.unbuilt += (len(self.sessions) < len(snapshot.sessions)
                         or len(built) < len(snapshot.registrations))
        if self._next is not None:  # a record not compared keeps its row object
            for sid, row in snapshot.sessions.items():
                if sid not in self.sessions and sid in self._next.sessions:
                    assert self._next.sessions[sid] is row
        return changes


class Full(Recorder):
    """Every record built at the install and compared after the event (the way before)."""

    _full_diff = True


def pair(opener: Any, config: Config, **kwargs: Any) -> tuple[Recorder, Full]:
    """The engine as it runs, and one building and comparing every record, on two fresh
    stores of the same kind."""
    return (Recorder(opener.fresh()(), config, clock=Clock(), **kwargs),
            Full(opener.fresh()(), config, clock=Clock(), **kwargs))


def same_attempts(touched: Recorder, full: Full) -> None:
    assert touched.attempts == full.attempts


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
    possible = sum(isinstance(o, list) for o in expected)  # (a rejected one commits nothing)
    touched, full = pair(opener, CONFIG, cache_users=cache_users)
    for event, wanted in zip(events, expected, strict=True):
        assert outcome(touched, event) == outcome(full, event) == wanted
        same_attempts(touched, full)
    assert len(touched.attempts) >= possible
    assert touched.unbuilt > possible // 2  # most events leave some record unbuilt
    touched, full = pair(opener, CONFIG, cache_users=cache_users)
    assert batched(touched, events, [16, 1, 5, 64]) == batched(full, events, [16, 1, 5, 64])
    same_attempts(touched, full)
    for engine in (touched, full):
        for user in FOUR:
            assert store_state(engine.store, user) == engine_state(ref, user)


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
        touched, full = pair(opener, config)
        for event, wanted in zip(events, expected, strict=True):
            assert outcome(touched, event) == outcome(full, event) == wanted, text
        same_attempts(touched, full)
        touched, full = pair(opener, config)
        assert batched(touched, events, sizes) == batched(full, events, sizes) == expected
        same_attempts(touched, full)
        for user in TRACE_USERS:
            assert store_state(touched.store, user) == engine_state(ref, user), text

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
        touched, full = pair(opener, config)
        assert timed_run(touched, events) == timed_run(full, events) == expected, text
        same_attempts(touched, full)

    check()


# --- a record not readable: reported when the event touches it, and nothing is applied --------

def test_an_unreadable_record_is_refused_when_touched_and_nothing_is_applied() -> None:
    from traces import BOB, PUSH

    from pushrules.generated.events import EVENT_CLASSES as EV
    from pushrules.runtime.store import StoreCorrupt, open_store

    store = open_store("memory:")
    engine = StoredEngine(store, CONFIG, clock=Clock())
    for name in ("a", "b"):
        engine.handle(EV["session-bind"](f"{BOB}/{name}"))
        engine.handle(EV["push-enable"](f"{BOB}/{name}", PUSH, name, secret="s3cret"))
    store._users[BOB].sessions[f"{BOB}/b"] = '{"state": "active"}'  # type: ignore[attr-defined]
    before = store_state(store, BOB)
    engine = StoredEngine(store, CONFIG, clock=Clock())  # a new process: nothing cached
    with pytest.raises(StoreCorrupt, match=f"memory:: a stored record of user {BOB} is not "
                                           r"readable \(KeyError: 'binding'\)"):
        engine.handle(EV["smacks-hibernation-start"](f"{BOB}/b", ()))
    assert store_state(store, BOB) == before
    # An event that touches only the readable records is applied (a's session only).
    assert engine.handle(EV["smacks-hibernation-start"](f"{BOB}/a", ())) == []
    assert store_state(store, BOB)["sessions"][f"{BOB}/a"]["state"] == "hibernated"
