"""The suite every store passes (memory, SQLite, real Redis, real Redis Cluster): same decisions
as the plain engine, restarts, audit trail, conflicts between nodes, lost replies."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from traces import (
    BOB,
    CONFIG,
    PUSH,
    USERS,
    Clock,
    engine_state,
    outcome,
    race_events,
    random_events,
    setup_orphans,
    stanza,
    store_state,
)

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine, StoreUnavailable
from pushrules.runtime.store.base import UserChanges


@pytest.mark.parametrize(("seed", "cache_users"), [(0, 1024), (1, 1024), (2, 0), (3, 1)])
def test_same_decisions_and_state_as_the_plain_engine(opener, seed, cache_users):
    ref_clock, clock = Clock(), Clock()
    ref = Engine(CONFIG, clock=ref_clock)
    stored = StoredEngine(opener(), CONFIG, clock=clock, cache_users=cache_users)
    for i, event in enumerate(random_events(seed, 500, USERS)):
        ref_clock.now = clock.now = 1e9 + i
        assert outcome(stored, event) == outcome(ref, event), f"event {i}: {event}"
    for user in USERS:
        assert store_state(stored.store, user) == engine_state(ref, user)
    assert stored.commits > 100


def test_a_load_says_unchanged_only_while_the_known_copy_is_current(opener):
    store, other = opener(), opener()
    assert store.load(BOB, (0, "")) is None  # never seen: the empty state is current
    engine = StoredEngine(other, CONFIG)
    setup_orphans(engine, range(1))
    snapshot = store.load(BOB, (0, ""))
    assert snapshot is not None and snapshot.registrations
    assert store.load(BOB, snapshot.identity) is None
    engine.handle(EV["push-result"](BOB, PUSH, "n0", False, "cancel"))
    fresh = store.load(BOB, snapshot.identity)
    assert fresh is not None and fresh.registrations[(PUSH, "n0")]["errors"] == 1
    assert store.load(BOB, (snapshot.version, "another token")) is not None


def test_restart_reloads_state_and_decisions_are_unchanged(opener):
    """A node restarted every 50 events decides exactly as one that never restarted."""
    events = random_events(7, 600, USERS)
    ref_clock, clock = Clock(), Clock()
    ref = Engine(CONFIG, clock=ref_clock)
    stored = None
    pushes = 0
    for i, event in enumerate(events):
        if i % 50 == 0:
            if stored is not None:
                stored.store.close()
            stored = StoredEngine(opener(), CONFIG, clock=clock)  # a new process, same data
        ref_clock.now = clock.now = 1e9 + i
        expected = outcome(ref, event)
        assert outcome(stored, event) == expected, f"event {i} after a restart: {event}"
        pushes += len(expected) if isinstance(expected, list) else 0
    assert pushes > 50  # the trace really exercises the push rules
    fresh = opener()
    for user in USERS:
        assert store_state(fresh, user) == engine_state(ref, user)


def test_audit_trail_records_every_disable_and_eviction(opener):
    clock = Clock()
    engine = StoredEngine(opener(), Config(max_devices=2, max_errors=2), clock=clock)
    session = f"{BOB}/phone"
    engine.handle(EV["session-bind"](session))
    for n, at in ((0, 10.0), (1, 20.0), (2, 30.0)):
        clock.now = at
        engine.handle(EV["push-enable"](session, PUSH, f"n{n}", secret="hunter2"))
    clock.now = 40.0
    engine.handle(EV["push-disable"](session, PUSH, "n1"))
    clock.now = 50.0
    for _ in range(2):
        engine.handle(EV["push-result"](BOB, PUSH, "n2", False, "cancel"))
    trail = [(a.time, a.node, a.action, a.reason) for a in opener().audit_trail(BOB)]
    assert trail == [
        (30.0, "n0", "evict", "evicted: more than max_devices=2"),
        (40.0, "n1", "disable", "disabled by the client"),
        (50.0, "n2", "disable", "max_errors: 2 counted errors in a row, last cancel"),
    ]
    regs = opener().load(BOB).registrations
    assert {node: (row["state"], row["reason"], row["disabled_at"])
            for (_, node), row in regs.items()} == {
        "n0": ("disabled", "evicted: more than max_devices=2", 30.0),
        "n1": ("disabled", "disabled by the client", 40.0),
        "n2": ("disabled", "max_errors: 2 counted errors in a row, last cancel", 50.0),
    }
    assert opener().audit_trail("ann@example.org") == []


def test_impossible_event_changes_nothing(opener):
    engine = StoredEngine(opener(), CONFIG)
    engine.handle(EV["session-bind"](f"{BOB}/a"))
    before = opener().load(BOB)
    with pytest.raises(ImpossibleEvent, match="not hibernated"):
        engine.handle(EV["smacks-hibernation-end"](f"{BOB}/a"))
    assert opener().load(BOB) == before


def test_a_conflicting_commit_reruns_the_event_without_a_second_push(opener):
    node_a = StoredEngine(opener(), CONFIG)
    node_b = StoredEngine(opener(), CONFIG)
    setup_orphans(node_a, range(2))
    m1 = EV["message/offline/handle"](BOB, stanza("m1", BOB))
    pushed_by_b: list[Any] = []

    def b_commits_first(changes: UserChanges) -> None:
        node_a.before_commit = None
        pushed_by_b.extend(node_b.handle(m1))

    node_a.before_commit = b_commits_first
    assert node_a.handle(m1) == []  # A's first decision was refused; rerun: already pushed
    assert sorted(p.node for p in pushed_by_b) == ["n0", "n1"]
    assert node_a.conflicts == 1

    # No lost update: both nodes' counted errors are in the count.
    error = EV["push-result"](BOB, PUSH, "n0", False, "cancel")
    node_a.before_commit = lambda changes: (setattr(node_a, "before_commit", None),
                                            node_b.handle(error))
    node_a.handle(error)
    assert node_a.conflicts == 2
    assert opener().load(BOB).registrations[(PUSH, "n0")]["errors"] == 2


class LostReply:
    """The store commits, then the connection breaks before the answer arrives."""

    def __init__(self, store: Any, *, lands: bool) -> None:
        self.store, self.lands, self.armed = store, lands, True
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit(self, changes: UserChanges) -> bool:
        if self.armed:
            self.armed = False
            if self.lands:
                self.store.commit(changes)
            raise StoreUnavailable(f"{self.url}: connection lost")
        return self.store.commit(changes)


@pytest.mark.parametrize("lands", [True, False])
def test_the_same_event_handled_again_after_a_lost_reply_lands_once(opener, lands):
    setup = StoredEngine(opener(), CONFIG)
    setup_orphans(setup, range(1))
    flaky = LostReply(opener(), lands=lands)
    engine = StoredEngine(flaky, CONFIG)  # type: ignore[arg-type]
    message = EV["message/offline/handle"](BOB, stanza("m9", BOB))
    with pytest.raises(StoreUnavailable):
        engine.handle(message)
    assert [p.stanzas for p in engine.handle(message)] == [("m9",)]
    error = EV["push-result"](BOB, PUSH, "n0", False, "cancel")
    flaky.armed = True
    with pytest.raises(StoreUnavailable):
        engine.handle(error)
    assert engine.handle(error) == []
    assert opener().load(BOB).registrations[(PUSH, "n0")]["errors"] == 1


def test_two_nodes_racing_on_one_user_lose_nothing_and_push_nothing_twice(opener):
    config = Config(max_errors=100_000, dedup_window=100_000)
    setup_orphans(StoredEngine(opener(), config), range(3))
    nodes = [StoredEngine(opener(), config) for _ in range(2)]
    log: list[tuple[int, int, int, Any, list[Any]]] = []  # (version, read-only, node, event,…)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        engine = nodes[index]
        engine.before_commit = lambda changes: time.sleep(0.0002)  # widen the race window
        try:
            for event in race_events(index, 300):
                pushes = [p.to_json() for p in engine.handle(event)]
                readonly = int(engine.commits == run_commits[index])
                run_commits[index] = engine.commits
                log.append((engine.last_version, readonly, index, event, pushes))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    run_commits = [0, 0]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(n.conflicts for n in nodes) > 0, "the two nodes never raced"

    # At most once per (registration, stanza), whatever node or rule pushed it.
    counts = Counter((p["node"], sid) for *_, pushes in log for p in pushes
                     for sid in p["stanzas"])
    assert counts and max(counts.values()) == 1
    # No lost update: every counted error of both nodes is in the count.
    regs = opener().load(BOB).registrations
    assert sum(regs[(PUSH, f"n{i}")]["errors"] for i in range(3)) == 2 * 50
    # Serialisable: replaying in commit order through one plain engine gives the same pushes
    # per event and the same final state.
    ref = Engine(config)
    setup_orphans(ref, range(3))
    for version, _, node, event, pushes in sorted(log, key=lambda e: e[:3]):
        assert outcome(ref, event) == pushes, f"node {node} at version {version}: {event}"
    assert store_state(opener(), BOB) == engine_state(ref, BOB)


def test_a_row_without_time_facts_restores_what_a_new_record_holds():
    """registration_from_row skips the model's restore_time_row for rows with no time facts:
    those keys must be exactly an untimed row's, and restoring would change nothing."""
    from pushrules.model.records import RegistrationRecord
    from pushrules.runtime.store.base import _UNTIMED_ROW, registration_from_row, registration_row

    rec = RegistrationRecord(BOB, PUSH, "n1", "enabled")
    row = registration_row(rec)
    assert set(row) == _UNTIMED_ROW
    restored = RegistrationRecord(BOB, PUSH, "n1", "enabled")
    restored.restore_time_row(row)
    assert restored.time_row() == registration_from_row(BOB, (PUSH, "n1"), row).time_row() == {}
    rec.expire_at, rec.last_sent = 5.0, 2.0  # a timed row is restored
    timed = registration_from_row(BOB, (PUSH, "n1"), registration_row(rec))
    assert timed.time_row() == {"expire_at": 5.0, "last_sent": 2.0}
