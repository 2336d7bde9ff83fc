"""Events/s through the stored engine, per store, against the plain in-memory engine.

The workload is the shared realistic mix (benchmarks/mix.py). Every store must decide exactly
what the plain engine decides (same pushes): a benchmark of a wrong store would be meaningless.
SQLite writes to a file in a temp dir (WAL, synchronous=NORMAL); Redis is a redis-server this
benchmark starts on 127.0.0.1 (no persistence) and stops.
"""

from __future__ import annotations

import json
import tempfile
import time
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
from pushrules.runtime.store import StoredEngine, open_store
from pushrules.runtime.store.local_redis import LocalRedis, RedisServerMissing


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


def run_store_bench(quick: bool) -> dict[str, Any]:
    """{"events", "users", "events_per_s": {store: n}, "ratio_to_engine": {store: r}}; full
    mode adds "heavy_user": {store: {"routine", "pushing"}} events/s."""
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
        if not quick:
            heavy["memory"] = _heavy_user("memory:", 1000)
            heavy["sqlite"] = _heavy_user(f"sqlite:///{Path(tmp) / 'heavy.db'}", 1000)
        try:
            with LocalRedis() as server:
                store = open_store(f"{server.url}?prefix=bench")
                rates["redis"] = _measure(StoredEngine(store, config), events, expected)
                store.close()
                if not quick:
                    heavy["redis"] = _heavy_user(f"{server.url}?prefix=heavy", 1000)
        except RedisServerMissing as exc:
            notes["redis"] = str(exc)
    base = rates["engine (no store)"]
    result: dict[str, Any] = {
        "events": len(events), "users": users, "pushes": len(expected),
        "events_per_s": rates,
        "ratio_to_engine": {name: round(rate / base, 4) for name, rate in rates.items()},
    }
    if heavy:
        result["heavy_user"] = heavy
    if notes:
        result["not_measured"] = notes
    return result


if __name__ == "__main__":
    print(json.dumps(run_store_bench(quick=True), indent=2))
