"""The Redis Cluster store on a real six-node cluster (3 masters, 3 replicas): two node
processes racing on users of every master, resharding under a running node (MOVED), a hung
replica (wait=1), a master killed mid-run (failover), clear URL errors. The shared store suite
(conftest's ``opener``), the one-user race (test_nodes.py) and `pushrules registrations`
(test_cli.py) run on the cluster too."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from conftest import meta_key, start_cluster, users_on_every_master
from traces import (
    PUSH,
    engine_state,
    outcome,
    race_events,
    race_processes,
    setup_orphans,
    store_state,
)

from pushrules.cli import main
from pushrules.model.config import Config
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import (
    StoredEngine,
    StoreError,
    StoreUnavailable,
    event_user,
    open_store,
)
from pushrules.runtime.store.local_redis import LocalRedisCluster
from pushrules.runtime.store.redis_cluster import RedisClusterStore

CONFIG = Config(max_errors=100_000, dedup_window=100_000)
EVENTS_PER_USER = 120


def interleaved(node: int, users: list[str], count: int) -> list[Any]:
    """Each user's race_events, taken round-robin: consecutive events hit different slots."""
    streams = [race_events(node, count, user) for user in users]
    return [stream[i] for i in range(len(streams[0])) for stream in streams]


def race_node(url: str, index: int, users: list[str], start: Any, results: Any) -> None:
    engine = StoredEngine(open_store(url), CONFIG)
    log = []
    commits = 0
    start.wait()
    for position, event in enumerate(interleaved(index, users, EVENTS_PER_USER)):
        pushes = [p.to_json() for p in engine.handle(event)]
        log.append((engine.last_version, int(engine.commits == commits), index, position,
                    pushes))
        commits = engine.commits
    results.put((index, engine.conflicts, log))


def test_two_node_processes_racing_on_users_of_every_master(redis_cluster):
    url = f"{redis_cluster.url}?prefix=race"
    users = users_on_every_master(redis_cluster, "race", 2)
    setup = StoredEngine(open_store(url), CONFIG)
    for user in users:
        setup_orphans(setup, range(3), user)
    setup.store.close()
    outcomes = race_processes(race_node, [(url, i, users) for i in range(2)])
    assert sum(c for _, c, _ in outcomes) > 0, "the two processes never raced"

    events = {i: interleaved(i, users, EVENTS_PER_USER) for i in range(2)}
    per_user: dict[str, list[Any]] = defaultdict(list)
    for _, _, entries in outcomes:
        for entry in entries:
            index, position = entry[2], entry[3]
            per_user[event_user(events[index][position])].append(entry)
    store = open_store(url)
    outbox = defaultdict(list)
    for entry in store.outbox_pending():
        outbox[entry.user].append(entry)
    per_node = EVENTS_PER_USER // 6
    for user in users:
        log = per_user[user]
        assert len(log) == 2 * (EVENTS_PER_USER + 2)
        counts = Counter((p["node"], sid) for *_, pushes in log for p in pushes
                         for sid in p["stanzas"])
        assert counts and max(counts.values()) == 1, f"{user}: a stanza was pushed twice"
        # The decided pushes are exactly the outbox's (neither node settled any): none lost.
        assert counts == Counter((p.row["node"], sid) for p in outbox[user]
                                 for sid in p.row["stanzas"])
        regs = store.load(user).registrations
        assert sum(regs[(PUSH, f"n{i}")]["errors"] for i in range(3)) == 2 * per_node
        ref = Engine(CONFIG)
        setup_orphans(ref, range(3), user)
        for version, _, index, position, pushes in sorted(log, key=lambda e: e[:4]):
            event = events[index][position]
            assert outcome(ref, event) == pushes, f"{user}: node {index} at v{version}: {event}"
        assert store_state(store, user) == engine_state(ref, user)
    store.close()


def wait_replicated(cluster: LocalRedisCluster, master: Any) -> None:
    """Until every replica of ``master`` has acknowledged all it was sent."""
    client = redis.Redis(host="127.0.0.1", port=master.port)
    try:
        for _ in range(500):
            info = client.info("replication")
            replicas = [info[k] for k in info if k.startswith("slave") and k[5:].isdigit()]
            if replicas and all(r["offset"] >= info["master_repl_offset"] for r in replicas):
                return
            time.sleep(0.01)
        raise AssertionError(f"the replica of {master.port} never caught up: {info}")
    finally:
        client.close()


def test_a_store_follows_a_user_whose_slot_moved_to_another_master(redis_cluster):
    """Resharding under a running node: its slot map is stale, the old master answers MOVED,
    the client follows it; the event lands once and the user's state moved whole."""
    url = f"{redis_cluster.url}?prefix=moved"
    user = "erin@example.org"
    engine = StoredEngine(open_store(url), CONFIG)
    setup_orphans(engine, range(2), user)
    before = engine.store.load(user)
    source = redis_cluster.master_of(meta_key("moved", user))
    target = next(m for m in redis_cluster.masters().values() if m.port != source.port)
    redis_cluster.move_slot(meta_key("moved", user), target)
    assert redis_cluster.master_of(meta_key("moved", user)).port == target.port
    message = race_events(0, 1, user)[2]
    assert [p.node for p in engine.handle(message)] == ["n0", "n1"]
    after = open_store(url).load(user)
    assert after.version == before.version + 1
    assert {reg: row["pushed"] for reg, row in after.registrations.items()} == {
        (PUSH, "n0"): ["m0"], (PUSH, "n1"): ["m0"]}
    engine.store.close()


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of this module's own: the tests below hang and kill its nodes."""
    cluster = start_cluster()
    yield cluster
    cluster.close()


def test_a_commit_no_replica_confirms_is_unavailable_until_one_does(own_cluster):
    """wait=1: pushes are returned only once the commit is on the replica; a hung replica
    makes the event StoreUnavailable (outcome unknown), and it lands once when retried."""
    cluster = own_cluster
    cluster.wait_healthy()  # the master streams to its replica: the store waits on it
    url = f"{cluster.url}?prefix=hung"
    user = "dave@example.org"
    engine = StoredEngine(RedisClusterStore(url, timeout=0.5), CONFIG)
    setup_orphans(engine, range(1), user)
    master = cluster.master_of(meta_key("hung", user))
    (replica,) = cluster.replicas_of(master)
    message = race_events(0, 1, user)[2]  # an offline message: pushed to n0
    replica.pause()
    try:
        with pytest.raises(StoreUnavailable, match=r"reached 0 of 1 replica\(s\) in 250 ms"):
            engine.handle(message)
    finally:
        replica.resume()
    cluster.wait_healthy()
    assert [p.node for p in engine.handle(message)] == ["n0"]  # landed once, now confirmed
    assert engine.handle(message) == []
    assert open_store(url).load(user).version == 4  # three to set up, the message once
    # A token the master's history lacks: its commit was lost with the old master.
    with pytest.raises(StoreUnavailable, match="was lost in a failover"):
        engine.store._confirmed(user, "a token of a commit the failover lost")
    no_wait = RedisClusterStore(f"{url}&wait=0", timeout=0.5)
    assert no_wait.wait == 0 and RedisClusterStore(url).wait == 1
    no_wait.close()
    engine.store.close()


def test_a_master_killed_mid_run_fails_over_and_loses_nothing(own_cluster):
    """SIGKILL the master of one user's slot right after a commit landed but before the engine
    heard back: that event fails with StoreUnavailable until the replica is promoted, then
    succeeds on retry exactly once (the resent commit is recognised by its token); no
    registration, no counted error and no decided push is lost."""
    cluster = own_cluster
    url = f"{cluster.url}?prefix=fo"
    users = users_on_every_master(cluster, "fo", 2)
    store = open_store(url)
    engine, ref = StoredEngine(store, CONFIG), Engine(CONFIG)
    for user in users:
        setup_orphans(engine, range(3), user)
        setup_orphans(ref, range(3), user)
    victim_user = users[0]
    victim = cluster.master_of(meta_key("fo", victim_user))
    events = interleaved(0, users, EVENTS_PER_USER)
    kill_at = len(events) // 2
    killed: dict[str, Any] = {}

    def land_then_kill(changes: Any) -> None:
        if changes.user == victim_user:
            engine.before_commit = None
            assert store.commit(changes)  # it lands ...
            killed["version"] = changes.base_version + 1
            wait_replicated(cluster, victim)
            victim.kill()  # ... and the master dies before the engine hears back
            killed["at"] = time.monotonic()

    probe_user = next(u for u in (f"probe{i}@example.org" for i in range(100))
                      if cluster.master_of(meta_key("fo", u)).port != victim.port)
    probe = StoredEngine(open_store(url), CONFIG)
    probe_stream = iter(race_events(1, 10_000, probe_user))
    probe_events: list[Any] = []
    failures: Counter[int] = Counter()
    recovered = None
    before = {(p.user, p.key) for p in store.outbox_pending()}
    decided: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
    for i, event in enumerate(events):
        if i == kill_at:
            engine.before_commit = land_then_kill
        # Meanwhile a user on another master is served as usual.
        pushes, failed = until_landed(
            engine, event, lambda: probe_events.append(outcome(probe, next(probe_stream))))
        if failed:
            failures[i] = failed
            recovered = recovered or time.monotonic()
        assert pushes == outcome(ref, event), f"event {i}: {event}"
        if isinstance(pushes, list):
            decided.update((p["user"], p["node"], tuple(p["stanzas"])) for p in pushes)

    assert "at" in killed and recovered is not None
    outage = recovered - killed["at"]
    print(f"failover: unavailable {outage:.2f} s, {sum(failures.values())} failed attempts "
          f"of {len(failures)} event(s)")
    assert list(failures.values()) and all(n >= 1 for n in failures.values())
    assert cluster.master_of(meta_key("fo", victim_user)).port != victim.port
    assert store.load(victim_user).version > killed["version"]
    assert len(probe_events) == sum(failures.values()) and probe.commits > 0
    probe.store.close()
    for user in users:
        assert store_state(store, user) == engine_state(ref, user), user
    # Every decided push is in the outbox once (none was settled): none lost, none doubled.
    stored = Counter((p.user, p.row["node"], tuple(p.row["stanzas"]))
                     for p in store.outbox_pending()
                     if (p.user, p.key) not in before and p.user != probe_user)
    assert stored == decided, (stored - decided, decided - stored)
    assert any(user == victim_user for user, *_ in decided)
    assert_each_commit_once(cluster, f"fo:{{{victim_user}}}:commits")
    old_master_rejoins(cluster, engine, victim, victim_user)
    store.close()


def until_landed(engine: StoredEngine, event: Any, meanwhile: Any) -> tuple[Any, int]:
    """Handle the event until the store takes it (``meanwhile()`` after each refusal): its
    outcome and how many attempts failed."""
    since, failed = time.monotonic(), 0
    while True:
        try:
            return outcome(engine, event), failed
        except StoreUnavailable as exc:
            assert "is unavailable" in str(exc)
            assert time.monotonic() < since + 60, f"no failover within 60 s: {exc}"
            failed += 1
            meanwhile()
            time.sleep(0.05)


def assert_each_commit_once(cluster: LocalRedisCluster, commits_key: str) -> None:
    """One token per version in the user's commit history: no commit landed twice."""
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.running()[0].port)
    tokens = client.lrange(commits_key, 0, -1)
    assert len(tokens) == len(set(tokens))
    client.close()


def old_master_rejoins(cluster: LocalRedisCluster, engine: StoredEngine, victim: Any,
                       victim_user: str) -> None:
    """The old master comes back as the new one's replica; commits are confirmed on it
    again."""
    victim.start()
    cluster.wait_healthy()
    new_master = cluster.master_of(meta_key("fo", victim_user))
    assert [r.port for r in cluster.replicas_of(new_master)] == [victim.port]
    time.sleep(1.1)  # the store re-reads a master's replica count once a second
    victim.pause()
    try:
        with pytest.raises(StoreUnavailable, match="reached 0 of 1 replica"):
            engine.handle(race_events(0, 600, victim_user)[-6])  # a new offline message
    finally:
        victim.resume()


def test_cluster_url_errors_are_clear():
    with pytest.raises(StoreError, match="'nohost' is not host:port"):
        open_store("redis+cluster://127.0.0.1:7000,nohost")
    with pytest.raises(StoreError, match="has only database 0, not '2'"):
        open_store("redis+cluster://127.0.0.1:7000/2")
    with pytest.raises(StoreError, match=r"unknown parameter\(s\) db_timeout"):
        open_store("redis+cluster://127.0.0.1:7000?prefix=a&db_timeout=3")
    with pytest.raises(StoreUnavailable, match="no listed node answered") as info:
        open_store("redis+cluster://:pw-xyz@127.0.0.1:1,127.0.0.1:2")
    assert "pw-xyz" not in str(info.value)
    result = CliRunner().invoke(main, ["registrations", "bob@example.org", "--store",
                                       "redis+cluster://127.0.0.1:1"])
    assert result.exit_code == 1 and "is unavailable" in result.output


def test_serve_holds_an_event_through_a_failover_within_its_retry_budget(own_cluster):
    """`pushrules serve`'s store retry budget (default 15 s) outlasts a failover (~2.5 s here,
    longer than the 1.5 s it used to retry): the event of a user whose master was killed is
    applied once its replica is promoted, not rejected."""
    import asyncio
    import io
    import json

    from pushrules.runtime.xmpp.sidecar import Sidecar, SidecarSettings

    cluster = own_cluster
    cluster.wait_healthy()
    url = f"{cluster.url}?prefix=serve"
    user = "frank@example.org"
    engine = StoredEngine(open_store(url), CONFIG)
    setup_orphans(engine, range(1), user)
    err = io.StringIO()
    car = Sidecar(SidecarSettings(component_jid="p.example.org", component_secret="x"),
                  io.StringIO(), err, engine=engine)
    victim = cluster.master_of(meta_key("serve", user))
    victim.kill()
    killed = time.monotonic()
    try:
        line = json.dumps({"event": "session-bind", "session": f"{user}/after"})
        asyncio.run(car.feed(line, 1))
        held = time.monotonic() - killed
        assert (car.accepted, car.rejected) == (1, 0), err.getvalue()
        assert f"{user}/after" in open_store(url).load(user).sessions
        # Applied on the promoted replica: the event did wait out the failover.
        assert cluster.master_of(meta_key("serve", user)).port != victim.port
        print(f"serve held the event {held:.2f} s through the failover")
    finally:
        victim.start()
        cluster.wait_healthy()
    engine.store.close()
