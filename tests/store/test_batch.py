"""``StoredEngine.handle_many``: several users' events in one round trip (a single Redis; the
other stores and the cluster handle them one by one). It must decide exactly what ``handle``
decides event by event, on every store: a copy gone stale mid-batch has that user's later
events run again on fresh state, two processes racing on shared users lose no update and push
no stanza twice, and a process killed after the batch's commits landed leaves every push they
decided in the outbox exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traces import (
    BOB,
    CONFIG,
    PUSH,
    Clock,
    engine_state,
    outcome,
    race_events,
    race_processes,
    random_events,
    setup_orphans,
    stanza,
    store_state,
)

from pushrules.benchmarks.mix import generate
from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine, event_user, open_store
from pushrules.runtime.store.base import UserChanges
from pushrules.runtime.trace import read_trace

ANN = "ann@example.org"
FOUR = ("bob@example.org", "ann@example.org", "cid@example.org", "dee@example.org")
RACE = 600
"""Events per racing node (as in test_nodes.py)."""
GENERATED = {"memory": 30, "sqlite": 20, "redis": 40, "cluster": 6}
"""Hypothesis examples per store (the cluster's commits each wait for a replica)."""


def result(handled: Any) -> Any:
    """A ``Handled`` as ``traces.outcome`` shows an event's outcome."""
    if isinstance(handled.error, ImpossibleEvent):
        return f"impossible: {handled.error}"
    assert handled.error is None, handled.error
    return [push.to_json() for push in handled.pushes]


def batched(engine: StoredEngine, events: list[Any], sizes: list[int]) -> list[Any]:
    """The events through ``handle_many`` in slices of ``sizes`` (cycled)."""
    out: list[Any] = []
    start = 0
    for n in range(len(events)):
        if start >= len(events):
            break
        size = sizes[n % len(sizes)]
        out += [result(h) for h in engine.handle_many(events[start:start + size])]
        start += size
    return out


@pytest.mark.parametrize(("seed", "cache_users"), [(0, 1024), (1, 0), (2, 2)])
def test_batches_decide_and_store_what_one_event_at_a_time_does(opener, seed, cache_users):
    events = random_events(seed, 400, FOUR)
    ref = Engine(CONFIG, clock=Clock())
    expected = [outcome(ref, event) for event in events]
    stored = StoredEngine(opener(), CONFIG, clock=Clock(), cache_users=cache_users)
    assert batched(stored, events, [32, 1, 7, 64]) == expected
    for user in FOUR:
        assert store_state(stored.store, user) == engine_state(ref, user)
    assert stored.conflicts == 0


def test_generated_traces_through_handle_many_decide_as_handle(opener: Any) -> None:
    """Hypothesis v2 traces (tests/oracle/strategies.py, untimed, with options) cut into
    hypothesis-drawn batches decide what one plain engine decides, event by event, and leave
    the same state."""
    from oracle.strategies import traces, v2_options  # type: ignore[import-not-found]

    @settings(max_examples=GENERATED[opener.kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(traces(v2=True), v2_options(timed=False),
           st.lists(st.integers(1, 12), min_size=1, max_size=6))
    def check(text: str, options: dict[str, str], sizes: list[int]) -> None:
        config = Config().with_settings(options)
        events = [item.event for item in read_trace(text.splitlines(keepends=True))]
        ref = Engine(config, clock=Clock())
        expected = [outcome(ref, event) for event in events]
        store = opener.fresh()
        engine = StoredEngine(store(), config, clock=Clock())
        assert batched(engine, events, sizes) == expected, text
        for user in ("bob@example.org", "carol@example.org"):
            assert store_state(store(), user) == engine_state(ref, user), text

    check()


def offline(user: str, sid: str) -> Any:
    return EV["message/offline/handle"](user, stanza(sid, user))


@pytest.fixture(params=["redis", "cluster", "sqlite"])
def two_handles(request, redis_server, tmp_path):
    """Two engines' stores on one shared store: the batch's and another node's."""
    if request.param == "redis":
        url = f"{redis_server.url}?prefix=stale{os.getpid()}{id(request)}"
    elif request.param == "cluster":
        url = f"{request.getfixturevalue('redis_cluster').url}?prefix=stale{id(request)}"
    else:
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(url), open_store(url)]
    yield stores
    for store in stores:
        store.close()


def test_a_copy_gone_stale_mid_batch_reruns_that_users_later_events(two_handles):
    """Another node disables bob's n0 (three counted errors) after the batch ran on its cached
    copy, before the batch's commits are sent: bob's commits are refused, his events run again
    on the fresh state (no push to n0, nothing of the refused run in the outbox), ann's land
    as they were; everything is what a serial run with the other node's events first gives."""
    mine, theirs = two_handles
    engine = StoredEngine(mine, CONFIG, clock=Clock())
    other = StoredEngine(theirs, CONFIG, clock=Clock())
    ref = Engine(CONFIG, clock=Clock())
    for target in (engine, ref):
        setup_orphans(target, range(2))
        setup_orphans(target, range(2), user=ANN)
    engine.handle(offline(BOB, "warm"))  # the batch's engine holds bob's copy, and ann's
    engine.handle(offline(ANN, "warm"))
    ref.handle(offline(BOB, "warm"))
    ref.handle(offline(ANN, "warm"))
    errors = [EV["push-result"](BOB, PUSH, "n0", False, "cancel") for _ in range(3)]
    batch = [offline(BOB, "b1"), offline(ANN, "a1"), EV["push-result"](BOB, PUSH, "n1", True),
             offline(BOB, "b2"), offline(ANN, "a2"), offline(BOB, "b3")]
    interleaved = []

    def another_node_first(_changes: Any) -> None:
        if not interleaved:
            interleaved.extend(other.handle(event) for event in errors)

    engine.before_commit = another_node_first
    handled = engine.handle_many(batch)
    engine.before_commit = None
    assert interleaved, "the other node's events never ran"
    for event in errors:
        ref.handle(event)
    expected = [outcome(ref, event) for event in batch]
    assert [result(h) for h in handled] == expected
    bobs = [expected[i] for i in (0, 3, 5)]
    assert all(p["node"] != "n0" for pushes in bobs for p in pushes), bobs
    assert all(any(p["node"] == "n1" for p in pushes) for pushes in bobs), bobs
    for user in (BOB, ANN):
        assert store_state(mine, user) == engine_state(ref, user)
    if getattr(mine, "batches", False):
        assert engine.conflicts >= 1  # refused, not merely checked first
    # The outbox holds the pushes handed back, each once, and none of the refused run.
    pending = Counter((e.push.user, e.push.node, e.push.stanzas) for e in engine.outbox_pending())
    decided = Counter((p.user, p.node, p.stanzas) for h in handled for p in h.pushes)
    assert decided and all(pending[key] == 1 for key in decided), (pending, decided)
    refused = [key for key in pending if key[1] == "n0" and key[2][0] in ("b1", "b2", "b3")]
    assert not refused, "a push of the refused run is in the outbox"


def batch_node(url: str, index: int, start: Any, results: Any) -> None:
    engine = StoredEngine(open_store(url), Config(max_errors=100_000, dedup_window=100_000))
    events = race_events(index, RACE)
    log = []
    start.wait()
    for at in range(0, len(events), 8):
        for position, handled in enumerate(engine.handle_many(events[at:at + 8]), at):
            assert handled.error is None, handled.error
            log.append((handled.version, int(not handled.committed), index, position,
                        [p.to_json() for p in handled.pushes]))
    results.put((index, engine.conflicts, log))


def test_two_processes_batching_on_shared_users(two_handles):
    """Two node processes feed one user's events through ``handle_many`` at once: no lost
    update (every counted error is there), no stanza pushed twice, and every event decided
    what a serial run in the store's commit order decides."""
    config = Config(max_errors=100_000, dedup_window=100_000)
    url = two_handles[0].url
    if "***" in url:
        pytest.skip("a masked URL cannot be reopened")
    setup = StoredEngine(two_handles[0], config)
    setup_orphans(setup, range(3))
    outcomes = race_processes(batch_node, [(url, i) for i in range(2)])
    log = [entry for _, _, entries in outcomes for entry in entries]
    assert len(log) == 2 * (RACE + 2)
    assert sum(c for _, c, _ in outcomes) > 0, "the two processes never raced"
    counts = Counter((p["node"], sid) for *_, pushes in log for p in pushes
                     for sid in p["stanzas"])
    assert counts and max(counts.values()) == 1, "a stanza was pushed twice"
    regs = two_handles[1].load(BOB).registrations
    assert sum(regs[(PUSH, f"n{i}")]["errors"] for i in range(3)) == 2 * (RACE // 6)
    events = {i: race_events(i, RACE) for i in range(2)}
    ref = Engine(config)
    setup_orphans(ref, range(3))
    for version, _, index, position, pushes in sorted(log, key=lambda e: e[:4]):
        event = events[index][position]
        assert outcome(ref, event) == pushes, f"node {index} at version {version}: {event}"
    assert store_state(two_handles[1], BOB) == engine_state(ref, BOB)


def killed_after_batch(url: str, batches: list[list[Any]], kill_at: int) -> None:
    """A node that dies (SIGKILL) right after batch ``kill_at``'s commits were answered,
    before anything of it is handed on (no push sent, none settled)."""
    engine = StoredEngine(open_store(url), CONFIG, clock=Clock())
    run_batch = engine.store.run_batch  # type: ignore[attr-defined]
    started: list[int] = []

    def then_die(ops: list[Any]) -> Any:
        replies = run_batch(ops)
        if len(started) == kill_at + 1 and any(isinstance(op, UserChanges) for op in ops):
            os.kill(os.getpid(), signal.SIGKILL)
        return replies

    engine.store.run_batch = then_die  # type: ignore[attr-defined]
    for batch in batches:
        started.append(len(batch))
        engine.handle_many(batch)


def test_sigkill_after_the_pipeline_leaves_every_decided_push_in_the_outbox(redis_server):
    """The batch's commits landed, then the process was SIGKILLed before handing on one push:
    a new process finds in the outbox exactly the pushes those commits decided (what a plain
    engine decides for those events), each once, and goes on deciding what it decides."""
    url = f"{redis_server.url}?prefix=killed{os.getpid()}"
    events = generate(8).events  # the benchmark mix: about one push per nine events
    batches = [events[i:i + 40] for i in range(0, len(events), 40)]
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=killed_after_batch, args=(url, batches, 10))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    ref = Engine(CONFIG, clock=Clock())
    decided = [p for batch in batches[:11] for e in batch for p in _pushes(ref, e)]
    assert len(decided) >= 20
    restarted = StoredEngine(open_store(url), CONFIG, clock=Clock())
    pending: dict[str, list[Any]] = {}
    for entry in restarted.outbox_pending():
        pending.setdefault(entry.push.user, []).append(entry.push.to_json())
    expected: dict[str, list[Any]] = {}
    for push in decided:
        expected.setdefault(push.user, []).append(push.to_json())
    assert pending == expected
    rest = [e for batch in batches[11:] for e in batch]
    assert batched(restarted, rest, [40]) == [outcome(ref, e) for e in rest]
    for user in {push.user for push in decided}:
        assert store_state(restarted.store, user) == engine_state(ref, user)
    restarted.store.close()


def _pushes(engine: Engine, event: Any) -> list[Any]:
    try:
        return engine.handle(event)
    except ImpossibleEvent:
        return []


def test_a_lost_pipeline_reply_resends_the_same_commits_and_each_lands_once(redis_server):
    """The batch's commits landed but the reply was lost (StoreUnavailable): every event is
    reported unavailable; the same events again resend the same commits (their tokens), so
    each lands once: the decisions, the state and the outbox are a plain run's."""
    from pushrules.runtime.store import StoreUnavailable

    url = f"{redis_server.url}?prefix=lost{os.getpid()}"
    events = generate(3).events
    engine = StoredEngine(open_store(url), CONFIG, clock=Clock())
    run_batch = engine.store.run_batch  # type: ignore[attr-defined]
    lost: list[int] = []

    def reply_lost(ops: list[Any]) -> Any:
        replies = run_batch(ops)
        if any(isinstance(op, UserChanges) for op in ops) and len(lost) < 3:
            lost.append(len(ops))
            raise StoreUnavailable("redis store: the connection broke (test)")
        return replies

    engine.store.run_batch = reply_lost  # type: ignore[attr-defined]
    ref = Engine(CONFIG, clock=Clock())
    got: list[Any] = []
    for at in range(0, len(events), 30):
        batch = events[at:at + 30]
        handled = engine.handle_many(batch)
        while any(isinstance(h.error, StoreUnavailable) for h in handled):
            assert all(isinstance(h.error, StoreUnavailable) for h in handled)
            handled = engine.handle_many(batch)
        got += [result(h) for h in handled]
    assert len(lost) == 3
    assert got == [outcome(ref, event) for event in events]
    users = {event_user(event) for event in events}
    for user in users:
        assert store_state(engine.store, user) == engine_state(ref, user)
    pending = Counter((e.push.user, e.push.node, e.push.stanzas) for e in engine.outbox_pending())
    assert pending and max(pending.values()) == 1
    assert sum(pending.values()) == sum(len(o) for o in got if isinstance(o, list))
    engine.store.close()


def test_a_batch_chain_never_lands_on_another_nodes_single_commit(two_handles):
    """Another node commits bob's state exactly once mid-batch (the same message b1): the
    batch's second commit of bob has that very base version, and is still refused (it follows
    a commit that did not land: the chain check), so b1 is pushed once, by the other node,
    and b2 and b3 by the batch's rerun, as in a serial run."""
    mine, theirs = two_handles
    engine = StoredEngine(mine, CONFIG, clock=Clock())
    other = StoredEngine(theirs, CONFIG, clock=Clock())
    ref = Engine(CONFIG, clock=Clock())
    for target in (engine, ref):
        setup_orphans(target, range(2))
    engine.handle(offline(BOB, "warm"))
    ref.handle(offline(BOB, "warm"))
    batch = [offline(BOB, "b1"), offline(BOB, "b2"), offline(BOB, "b3")]
    interleaved: list[Any] = []

    def another_node_first(_changes: Any) -> None:
        if not interleaved:
            interleaved.append(other.handle(offline(BOB, "b1")))

    engine.before_commit = another_node_first
    handled = engine.handle_many(batch)
    engine.before_commit = None
    assert [p.stanzas for p in interleaved[0]] == [("b1",), ("b1",)]
    ref.handle(offline(BOB, "b1"))
    assert [result(h) for h in handled] == [outcome(ref, event) for event in batch]
    assert [h.pushes for h in handled][0] == []  # b1: already pushed by the other node
    assert store_state(mine, BOB) == engine_state(ref, BOB)
    pending = Counter(e.push.stanzas for e in engine.outbox_pending())
    assert pending[("b1",)] == pending[("b2",)] == pending[("b3",)] == 2  # two registrations


def test_a_lanes_lost_reply_is_resent_whatever_another_lane_ran_meanwhile(redis_server):
    """Two callers share one engine (a reader and the dispatcher's push-results, or two
    socket connections), each retrying its own events after StoreUnavailable. The reader's
    batch landed but its reply was lost; the other lane applies its events before the reader
    retries: the retry still resends the same commits, so each event lands once."""
    from pushrules.runtime.store import StoreUnavailable

    url = f"{redis_server.url}?prefix=lanes{os.getpid()}"
    events = generate(6).events
    users = sorted({event_user(event) for event in events})
    mine = set(users[: len(users) // 2])
    first = [e for e in events if event_user(e) in mine][:60]
    second = [e for e in events if event_user(e) not in mine][:60]
    engine = StoredEngine(open_store(url), CONFIG, clock=Clock())
    run_batch = engine.store.run_batch  # type: ignore[attr-defined]
    lost: list[int] = []

    def reply_lost(ops: list[Any]) -> Any:
        replies = run_batch(ops)
        if any(isinstance(op, UserChanges) for op in ops) and not lost:
            lost.append(len(ops))
            raise StoreUnavailable("redis store: the connection broke (test)")
        return replies

    engine.store.run_batch = reply_lost  # type: ignore[attr-defined]
    handled = engine.handle_many(first, lane="reader")
    assert lost and all(isinstance(h.error, StoreUnavailable) for h in handled)
    other = [result(h) for h in engine.handle_many(second, lane="answers")]
    got = [result(h) for h in engine.handle_many(first, lane="reader")]
    ref = Engine(CONFIG, clock=Clock())
    assert got == [outcome(ref, event) for event in first]
    assert other == [outcome(ref, event) for event in second]
    for user in users:
        assert store_state(engine.store, user) == engine_state(ref, user)
    engine.store.close()


def test_a_lanes_lost_commit_is_resent_whatever_another_lane_ran_meanwhile(redis_server):
    """``handle`` one event at a time: as above, for a single commit whose reply was lost."""
    from pushrules.runtime.store import StoreUnavailable

    url = f"{redis_server.url}?prefix=lane1{os.getpid()}"
    engine = StoredEngine(open_store(url), CONFIG, clock=Clock())
    ref = Engine(CONFIG, clock=Clock())
    setup = [EV["session-bind"](session=f"{BOB}/a"),
             EV["push-enable"](session=f"{BOB}/a", jid=PUSH, node="n1", secret="s"),
             EV["session-destroyed"](session=f"{BOB}/a")]
    for event in setup:
        assert engine.handle(event) == ref.handle(event)
    commit = engine.store.commit
    lost: list[str] = []

    def reply_lost(changes: UserChanges) -> bool:
        done = commit(changes)
        if not lost:
            lost.append(changes.user)
            raise StoreUnavailable("redis store: the connection broke (test)")
        return done

    engine.store.commit = reply_lost  # type: ignore[method-assign]
    message = EV["message/offline/handle"](user=BOB, stanza=stanza("m1", BOB))
    with pytest.raises(StoreUnavailable):
        engine.handle(message, lane="reader")
    ann = EV["session-bind"](session=f"{ANN}/x")
    assert engine.handle(ann, lane="answers") == ref.handle(ann)
    pushes = engine.handle(message, lane="reader")
    assert pushes == ref.handle(message)
    assert store_state(engine.store, BOB) == engine_state(ref, BOB)
    assert len(engine.outbox_pending()) == 1
    engine.store.close()


def test_a_push_result_that_changes_nothing_settles_its_entry_without_a_commit(redis_server):
    """On a single Redis, push-results that change nothing in the model (ok to registrations
    without errors) settle their outbox entries in the check of the copy they ran on: no
    commit, the user's version stays (no other copy goes stale). When another node moved the
    user meanwhile, the check finds the copy stale and removes nothing: the results run again
    on fresh state and settle in their commit. Each entry is gone, the state is a serial
    run's."""
    url = f"{redis_server.url}?prefix=settle{os.getpid()}"
    engine = StoredEngine(open_store(url), CONFIG, clock=Clock())
    other = StoredEngine(open_store(url), CONFIG, clock=Clock())
    ref = Engine(CONFIG, clock=Clock())
    for target in (engine, ref):
        setup_orphans(target, range(2))
    oks = [EV["push-result"](BOB, PUSH, node, True) for node in ("n0", "n1")]

    def decided(mid: str) -> list[tuple[str, ...]]:
        for target in (engine, ref):
            target.handle(offline(BOB, mid))
        entries = {e.push.node: e for e in engine.last_entries}
        assert sorted(entries) == ["n0", "n1"]
        return [(entries[node].key or "",) for node in ("n0", "n1")]

    def answered(settles: list[tuple[str, ...]]) -> list[Any]:
        handled = engine.handle_many(oks, settles=settles)
        assert [h.error for h in handled] == [None, None]
        for event in oks:
            ref.handle(event)
        assert engine.outbox_pending() == []
        assert store_state(engine.store, BOB) == engine_state(ref, BOB)
        return handled

    settles = decided("m1")
    version, commits = engine.store.load(BOB).version, engine.commits
    handled = answered(settles)
    assert (engine.commits, engine.store.load(BOB).version) == (commits, version)
    assert [h.committed for h in handled] == [False, False]

    # Another node counts an error on n0 after this engine cached bob: the copy is stale.
    settles = decided("m2")
    error = EV["push-result"](BOB, PUSH, "n0", False, "cancel")
    other.handle(error)
    ref.handle(error)
    assert other.current_registration((BOB, PUSH, "n0")).errors == 1
    handled = answered(settles)
    assert handled[0].committed  # n0's ok cleared the error: a commit, the settle with it
    assert engine.current_registration((BOB, PUSH, "n0")).errors == 0
    engine.store.close()
    other.store.close()


def test_an_event_impossible_on_a_stale_copy_runs_again_on_the_stores(two_handles):
    """The batch's engine holds bob's copy from before another node bound bob/r9 and enabled
    push on it: on that copy the ack-delayed of bob/r9 names no live session (the model
    refuses it), on the store's it pushes. The batch asks the store whether the copy it was
    refused on is current and, as it is not, runs it again there: what a serial run with the
    other node's events first decides."""
    mine, theirs = two_handles
    engine = StoredEngine(mine, CONFIG, clock=Clock())
    other = StoredEngine(theirs, CONFIG, clock=Clock())
    ref = Engine(CONFIG, clock=Clock())
    session = f"{BOB}/r9"
    for target in (engine, ref):
        setup_orphans(target, range(2))
        setup_orphans(target, range(2), user=ANN)
        target.handle(offline(BOB, "warm"))  # the batch's engine holds bob's copy, and ann's
        target.handle(offline(ANN, "warm"))
    elsewhere = [EV["session-bind"](session), EV["push-enable"](session, PUSH, "n9", secret="s")]
    for event in elsewhere:
        other.handle(event)
        ref.handle(event)
    batch = [offline(ANN, "a1"), EV["smacks-ack-delayed"](session, (stanza("q1", BOB),)),
             offline(BOB, "b1")]
    handled = engine.handle_many(batch)
    expected = [outcome(ref, event) for event in batch]
    assert [result(h) for h in handled] == expected
    assert any(p["node"] == "n9" for p in expected[1]), expected  # it pushed, not refused
    for user in (BOB, ANN):
        assert store_state(mine, user) == engine_state(ref, user)
