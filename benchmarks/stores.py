"""Events/s through the stored engine, per store, against the plain in-memory engine.

The workload is the shared realistic mix (benchmarks/mix.py). Every store must decide exactly
what the plain engine decides (same pushes): a benchmark of a wrong store would be meaningless.
SQLite writes to a file in a temp dir (WAL, synchronous=NORMAL); Redis is a redis-server this
benchmark starts on 127.0.0.1 (no persistence) and stops; the cluster is six (3 masters, 3
replicas), started and stopped the same way.

Scale-out: the cluster with one node (one engine), and with two nodes (two processes, each
handling the events of its half of the users, as two XMPP server nodes would), against one node
on the single Redis. Failover: one node runs the mix on a fresh cluster, the master of a user's
slot is SIGKILLed halfway, and each event the store refuses (StoreUnavailable) is handled again
until it lands: the seconds from the kill to that user's next landed event, how many events
had to be retried and how many attempts failed.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from pushrules.benchmarks.mix import APP_SERVER, generate
from pushrules.generated.events import (
    MessageOfflineHandle,
    PushEnable,
    SessionBind,
    SessionDestroyed,
    SmacksAckReceived,
)
from pushrules.model.config import Config
from pushrules.model.stanza import parse_stanza
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine, StoreUnavailable, event_user, open_store
from pushrules.runtime.store.local_redis import LocalRedis, LocalRedisCluster, RedisServerMissing


def _run(engine: Engine, events: list[Any]) -> tuple[float, list[Any]]:
    pushes: list[Any] = []
    start = time.perf_counter()
    for event in events:
        pushes.extend(engine.handle(event))
    return time.perf_counter() - start, pushes


def _measure(engine: Engine, events: list[Any], expected: list[Any]) -> float:
    elapsed, pushes = _run(engine, events)
    if [p.to_json() for p in pushes] != expected:
        raise AssertionError(f"{type(engine).__name__} decided other pushes than the engine")
    return round(len(events) / elapsed)


def _round_trip_floor(store: Any, events: list[Any]) -> int:
    """Events/s of the least a Redis store can do per event: one trivial EVALSHA on the event
    user's slot, through the same client (issue 12's floor for the Redis store)."""
    floor = store._redis.register_script("return 1")
    keys = [[f"floor:{{{event_user(event)}}}:meta"] for event in events]
    start = time.perf_counter()
    for user_keys in keys:
        floor(keys=user_keys)
    return round(len(events) / (time.perf_counter() - start))


def _heavy_user(url: str, rounds: int) -> dict[str, int]:
    """One user whose three registrations hold full dedup windows (the steady state of a busy
    account): events/s for routine session events and for pushing events."""
    user = "heavy@example.org"
    engine = StoredEngine(open_store(url))
    for n in range(3):
        session = f"{user}/d{n}"
        engine.handle(SessionBind(session))
        engine.handle(PushEnable(session, APP_SERVER, f"n{n}", secret="s"))
        engine.handle(SessionDestroyed(session))
    live = f"{user}/live"
    engine.handle(SessionBind(live))
    template = parse_stanza(f"<message xmlns='jabber:client' id='x' to='{user}'>"
                            "<body>hi</body></message>")
    for i in range(engine.config.dedup_window + 100):
        engine.handle(MessageOfflineHandle(user, replace(template, id=f"f{i}")))
    start = time.perf_counter()
    for _ in range(rounds):
        engine.handle(SmacksAckReceived(live))
    routine = rounds / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(rounds):
        engine.handle(MessageOfflineHandle(user, replace(template, id=f"p{i}")))
    pushing = rounds / (time.perf_counter() - start)
    engine.store.close()
    return {"routine": round(routine), "pushing": round(pushing)}


def _halves(events: list[Any]) -> list[list[Any]]:
    """The events split by user into two nodes' shares (each user on one node, in order)."""
    shares: list[list[Any]] = [[], []]
    for event in events:
        shares[zlib.crc32(event_user(event).encode()) % 2].append(event)
    return shares


def _node(url: str, events: list[Any], ready: Any, start: Any, results: Any) -> None:
    engine = StoredEngine(open_store(url), Config())
    ready.put(None)
    start.wait()
    _, pushes = _run(engine, events)
    results.put([p.to_json() for p in pushes])
    engine.store.close()


def _two_nodes(url: str, events: list[Any]) -> int:
    """Events/s of two node processes, each on its share of the users, started together."""
    shares = _halves(events)
    expected = [[p.to_json() for p in _run(Engine(Config()), share)[1]] for share in shares]
    ctx = multiprocessing.get_context("fork")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_node, args=(url, share, ready, start, results))
             for share in shares]
    gc.freeze()  # the children's collector then leaves the inherited heap's pages shared
    for proc in procs:
        proc.start()
    gc.unfreeze()
    for _ in procs:
        ready.get(timeout=60)
    begin = time.perf_counter()
    start.set()
    got = [results.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - begin
    for proc in procs:
        proc.join(30)
    if sorted(map(json.dumps, got)) != sorted(map(json.dumps, expected)):
        raise AssertionError("two nodes on the cluster decided other pushes than the engine")
    return round(len(events) / elapsed)


def _failover(events: list[Any], expected: list[Any]) -> dict[str, Any]:
    """Seconds unavailable and events retried when a master is SIGKILLed mid-run."""
    with LocalRedisCluster() as cluster:
        store = open_store(f"{cluster.url}?prefix=failover")
        engine = StoredEngine(store, Config())
        half = len(events) // 2
        victim_user = event_user(events[half])
        victim = cluster.master_of(f"failover:{{{victim_user}}}:meta")
        pushes: list[Any] = []
        retried, failed, killed_at, unavailable = 0, 0, 0.0, None
        for i, event in enumerate(events):
            if i == half:
                victim.kill()
                killed_at = time.monotonic()
            attempts, since = 0, time.monotonic()
            while True:
                try:
                    pushes.extend(engine.handle(event))
                    break
                except StoreUnavailable as exc:
                    if time.monotonic() > since + 120:
                        raise RuntimeError(f"no failover within 120 s: {exc}") from None
                    attempts += 1
                    time.sleep(0.02)
            failed += attempts
            retried += attempts > 0
            if unavailable is None and i >= half and event_user(event) == victim_user:
                unavailable = time.monotonic() - killed_at
        store.close()
    if [p.to_json() for p in pushes] != expected:
        raise AssertionError("the cluster decided other pushes across the failover")
    return {"seconds_unavailable": round(unavailable or 0.0, 2), "events_retried": retried,
            "failed_attempts": failed, "events": len(events),
            "pushes_checked_against_engine": len(pushes)}


def _cluster_bench(events: list[Any], expected: list[Any], config: Config,
                   rates: dict[str, Any]) -> dict[str, Any]:
    """The cluster's rates (into ``rates``) and its failover figures."""
    one = two = no_wait = 0
    with LocalRedisCluster() as cluster:
        # One and two nodes alternately, best of two each: a burst of load on this shared
        # machine then skews one figure, not the ratio. Each run on fresh keys (a prefix).
        for run in range(2):
            store = open_store(f"{cluster.url}?prefix=one{run}")
            one = max(one, _measure(StoredEngine(store, config), events, expected))
            store.close()
            two = max(two, _two_nodes(f"{cluster.url}?prefix=two{run}", events))
            store = open_store(f"{cluster.url}?prefix=nowait{run}&wait=0")
            no_wait = max(no_wait, _measure(StoredEngine(store, config), events, expected))
            store.close()
    rates["redis cluster (1 node)"] = one
    rates["redis cluster wait=0 (1 node)"] = no_wait
    rates["redis cluster (2 nodes)"] = two
    return _failover(events, expected)


def run_store_bench(quick: bool) -> dict[str, Any]:
    """{"events", "users", "events_per_s": {store: n}, "ratio_to_engine": {store: r},
    "redis_floor_ratio": the round-trip floor's events/s over the Redis store's,
    "scale_out": {ratio: r}, "failover": {"seconds_unavailable", "events_retried", ...}};
    full mode adds "heavy_user": {store: {"routine", "pushing"}} events/s."""
    users = 40 if quick else 400
    events = generate(users).events
    config = Config()
    elapsed, reference = _run(Engine(config), events)
    expected = [p.to_json() for p in reference]
    rates: dict[str, Any] = {"engine (no store)": round(len(events) / elapsed)}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pushrules-bench-") as tmp:
        rates["memory"] = _measure(StoredEngine(open_store("memory:"), config), events, expected)
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        rates["sqlite"] = _measure(StoredEngine(store, config), events, expected)
        store.close()
        heavy: dict[str, Any] = {}
        floor = 0
        if not quick:
            heavy["memory"] = _heavy_user("memory:", 1000)
            heavy["sqlite"] = _heavy_user(f"sqlite:///{Path(tmp) / 'heavy.db'}", 1000)
        try:
            with LocalRedis() as server:
                store = open_store(f"{server.url}?prefix=bench")
                # Floor and store alternately, best of two each: a burst of load on this
                # shared machine then skews one figure, not the ratio.
                for run in range(2):
                    floor = max(floor, _round_trip_floor(store, events))
                    engine = StoredEngine(open_store(f"{server.url}?prefix=bench{run}"), config)
                    rates["redis"] = max(rates.get("redis", 0),
                                         _measure(engine, events, expected))
                    engine.store.close()
                rates["redis round-trip floor"] = floor
                store.close()
                if not quick:
                    heavy["redis"] = _heavy_user(f"{server.url}?prefix=heavy", 1000)
        except RedisServerMissing as exc:
            notes["redis"] = str(exc)
        failover = None
        try:
            failover = _cluster_bench(events, expected, config, rates)
        except RedisServerMissing as exc:
            notes["redis cluster"] = str(exc)
    base = rates["engine (no store)"]
    result: dict[str, Any] = {
        "events": len(events), "users": users, "pushes": len(expected),
        "events_per_s": rates,
        "ratio_to_engine": {name: round(rate / base, 4) for name, rate in rates.items()},
    }
    if heavy:
        result["heavy_user"] = heavy
    if floor and "redis" in rates:
        result["redis_floor_ratio"] = round(floor / rates["redis"], 2)  # target: <= 1.5
    if failover is not None:
        one = rates["redis cluster (1 node)"]
        result["scale_out"] = {
            "cluster 2 nodes / cluster 1 node": round(rates["redis cluster (2 nodes)"] / one, 2),
            "cluster 1 node / redis 1 node": round(one / rates["redis"], 2)
            if "redis" in rates else None,
            "cluster wait=0 / wait=1": round(rates["redis cluster wait=0 (1 node)"] / one, 2)}
        result["failover"] = failover
    if notes:
        result["not_measured"] = notes
    return result


if __name__ == "__main__":
    print(json.dumps(run_store_bench(quick=True), indent=2))
