"""Two nodes as two processes on one shared store (Redis, Redis Cluster, or one SQLite file),
racing on the same user's events: no lost update, no duplicate push, and the outcome of a serial
run. (tests/store/test_cluster.py races them on users of every cluster master.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from traces import (
    BOB,
    PUSH,
    engine_state,
    outcome,
    race_events,
    race_processes,
    setup_orphans,
    store_state,
)

from pushrules.model.config import Config
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine, open_store

CONFIG = Config(max_errors=100_000, dedup_window=100_000)
EVENTS_PER_NODE = 600


def node(url: str, index: int, start: Any, results: Any) -> None:
    engine = StoredEngine(open_store(url), CONFIG)
    log = []
    commits = 0
    start.wait()
    for position, event in enumerate(race_events(index, EVENTS_PER_NODE)):
        pushes = [p.to_json() for p in engine.handle(event)]
        log.append((engine.last_version, int(engine.commits == commits), index, position,
                    pushes))
        commits = engine.commits
    results.put((index, engine.conflicts, log))


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def shared_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    if request.param == "cluster":
        return f"{request.getfixturevalue('redis_cluster').url}?prefix=nodes"
    return f"{request.getfixturevalue('redis_server').url}?prefix=nodes"


def test_two_node_processes_on_one_store(shared_url):
    setup = StoredEngine(open_store(shared_url), CONFIG)
    setup_orphans(setup, range(3))
    setup.store.close()
    outcomes = race_processes(node, [(shared_url, i) for i in range(2)], timeout=120)
    conflicts = sum(c for _, c, _ in outcomes)
    log = [entry for _, _, entries in outcomes for entry in entries]
    assert len(log) == 2 * (EVENTS_PER_NODE + 2)
    assert conflicts > 0, "the two processes never raced"

    counts = Counter((p["node"], sid) for *_, pushes in log for p in pushes
                     for sid in p["stanzas"])
    assert counts and max(counts.values()) == 1, "a stanza was pushed twice"
    store = open_store(shared_url)
    regs = store.load(BOB).registrations
    per_node = EVENTS_PER_NODE // 6
    assert sum(regs[(PUSH, f"n{i}")]["errors"] for i in range(3)) == 2 * per_node

    events = {i: race_events(i, EVENTS_PER_NODE) for i in range(2)}
    ref = Engine(CONFIG)
    setup_orphans(ref, range(3))
    for version, _, index, position, pushes in sorted(log, key=lambda e: e[:4]):
        event = events[index][position]
        assert outcome(ref, event) == pushes, f"node {index} at version {version}: {event}"
    assert store_state(store, BOB) == engine_state(ref, BOB)
    store.close()
