"""Redis: a server that goes away and comes back, orphan TTLs, namespaced keys."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from conftest import start_redis
from traces import stanza

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.runtime.store import StoredEngine, StoreError, StoreUnavailable, open_store

BOB = "bob@example.org"
PUSH = "push.example.net"


def offline(sid: str):
    return EV["message/offline/handle"](BOB, stanza(sid, BOB))


def orphan(engine: StoredEngine, node: str, resource: str = "phone") -> None:
    session = f"{BOB}/{resource}"
    engine.handle(EV["session-bind"](session))
    engine.handle(EV["push-enable"](session, PUSH, node, secret="hunter2"))
    engine.handle(EV["session-destroyed"](session))


@pytest.fixture
def own_redis():
    server = start_redis(persistent=True)
    yield server
    server.close()


def test_a_store_that_goes_away_fails_clearly_and_the_event_lands_after_it_is_back(own_redis):
    engine = StoredEngine(open_store(own_redis.url), Config())
    orphan(engine, "n0")
    before = engine.store.load(BOB)

    own_redis.stop()  # down before the event: nothing applied, the caller is told
    with pytest.raises(StoreUnavailable, match=f"redis store {own_redis.url} is unavailable: "
                                               f"cannot load user {BOB}"):
        StoredEngine(engine.store, Config()).handle(offline("m1"))  # nothing cached: a load
    with pytest.raises(StoreUnavailable, match=f"redis store {own_redis.url} is unavailable: "
                                               f"cannot commit user {BOB}"):
        engine.handle(offline("m1"))  # run on its cached copy: the commit finds it down
    own_redis.start()
    assert engine.store.load(BOB) == before
    assert [p.stanzas for p in engine.handle(offline("m1"))] == [("m1",)]  # the retry

    # Down between the decision and its commit: the push is not returned, the retry lands once.
    engine.before_commit = lambda changes: own_redis.stop()
    with pytest.raises(StoreUnavailable, match="cannot commit user"):
        engine.handle(offline("m2"))
    engine.before_commit = None
    own_redis.start()
    assert [p.stanzas for p in engine.handle(offline("m2"))] == [("m2",)]
    assert engine.handle(offline("m2")) == []  # a third time: deduplicated, not pushed again
    assert engine.store.load(BOB).version == before.version + 2


def test_orphan_ttl_is_the_models_clock_not_a_key_ttl(redis_server):
    """The Redis store executes what the model decided: no key TTL is started; the model's
    expiry comes due by the events' clock (the due index) and is committed like an event."""
    store = open_store(f"{redis_server.url}?prefix=ttl")
    engine = StoredEngine(store, Config(orphan_ttl=2))
    session = f"{BOB}/phone"
    engine.handle(EV["session-bind"](session, at=100))
    engine.handle(EV["push-enable"](session, PUSH, "n0", secret="hunter2"))
    engine.handle(EV["session-destroyed"](session))
    assert store.ttl_ms(BOB, (PUSH, "n0")) == -2  # no key TTL
    assert engine.next_due() == 102
    time.sleep(0.1)
    assert [p.node for p in engine.handle(offline("m1"))] == ["n0"]  # wall time is no clock
    engine.run_due(102)
    assert engine.handle(offline("m2")) == []  # (c) skips the expired
    assert [(a.node, a.action) for a in store.audit_trail(BOB)] == [("n0", "expire")]
    row = store.load(BOB).registrations[(PUSH, "n0")]
    assert (row["state"], row["pushed"], row["session"]) == ("disabled", [], None)
    client = redis.Redis.from_url(redis_server.url)
    assert client.smembers("ttl:{bob@example.org}:timers") == set()
    client.close()


def test_keys_are_namespaced_by_prefix(redis_server):
    one = StoredEngine(open_store(f"{redis_server.url}?prefix=tenant-a"), Config())
    two = StoredEngine(open_store(f"{redis_server.url}?prefix=tenant-b"), Config())
    orphan(one, "n0")
    assert two.store.load(BOB).registrations == {}
    client = redis.Redis.from_url(redis_server.url)
    keys = [k.decode() for k in client.scan_iter("tenant-*")]
    assert keys and all(k.startswith("tenant-a:{bob@example.org}:") for k in keys)
    client.close()


def test_store_url_errors_are_clear_and_never_show_a_password():
    with pytest.raises(StoreError, match="orphan_ttl is a rule option of the model"):
        open_store("redis://127.0.0.1:1/0?orphan_ttl=30")
    store = open_store("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in store.url
    with pytest.raises(StoreUnavailable) as info:
        store.load(BOB)
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(StoreError, match="is not one of: sqlite:///") as info:
        open_store("postgres://u:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_a_registration_enabled_again_after_it_expired_starts_with_no_dedup_ids(redis_server):
    store = open_store(f"{redis_server.url}?prefix=fresh")
    engine = StoredEngine(store, Config(orphan_ttl=1))
    session = f"{BOB}/phone"
    engine.handle(EV["session-bind"](session, at=0))
    engine.handle(EV["push-enable"](session, PUSH, "n0", secret="hunter2"))
    engine.handle(EV["session-destroyed"](session))
    assert [p.stanzas for p in engine.handle(offline("m1"))] == [("m1",)]
    tablet = f"{BOB}/tablet"
    engine.handle(EV["session-bind"](tablet))
    # At 2 the expiry (due at 1) comes first, then the enable: disabled, dedup ids cleared,
    # enabled anew.
    engine.handle(EV["push-enable"](tablet, PUSH, "n0", secret="hunter2", at=2))
    engine.handle(EV["smacks-hibernation-start"](tablet, ()))
    other_node = StoredEngine(open_store(f"{redis_server.url}?prefix=fresh"), Config())
    assert [p.stanzas for p in other_node.handle(offline("m1"))] == [("m1",)]
    assert [a.action for a in store.audit_trail(BOB)] == ["expire"]


def _fed_while_down(own_redis: Any, budget: float, down_for: float,
                    feed: Callable[[Any], Awaitable[None]]) -> tuple[Any, str]:
    """A sidecar with ``store_retry_seconds=budget`` over ``own_redis``, which stops and comes
    back ``down_for`` seconds later; ``feed(sidecar)`` runs meanwhile. The sidecar and what
    it said, once the server is surely back."""
    import asyncio
    import io
    import threading

    from pushrules.runtime.xmpp.sidecar import Sidecar, SidecarSettings

    settings = SidecarSettings(component_jid="p.example.org", component_secret="x",
                               store_retry_seconds=budget)
    err = io.StringIO()
    car = Sidecar(settings, io.StringIO(), err,
                  engine=StoredEngine(open_store(own_redis.url), Config()))
    own_redis.stop()
    threading.Timer(down_for, own_redis.start).start()
    asyncio.run(feed(car))
    time.sleep(max(0.0, down_for - budget) + 0.5)
    return car, err.getvalue()


def test_serve_retries_an_event_for_its_store_retry_budget(own_redis):
    """The sidecar holds an event while the store is down (as during a cluster failover,
    ~2.5 s) for --store-retry-seconds, then applies it once; past the budget it rejects it."""
    import json

    def feed(budget: float, down_for: float) -> tuple[Any, str]:
        line = json.dumps({"event": "session-bind", "session": f"{BOB}/r{budget}"})
        return _fed_while_down(own_redis, budget, down_for, lambda car: car.feed(line, 1))

    car, err = feed(15.0, 2.5)
    assert (car.accepted, car.rejected) == (1, 0), err
    assert f"{BOB}/r15.0" in open_store(own_redis.url).load(BOB).sessions
    car, err = feed(0.3, 2.0)
    assert (car.accepted, car.rejected) == (0, 1)
    assert "session-bind not applied: redis store" in err and "(retried for 0.3 s)" in err


def test_serve_retries_a_batch_in_order_for_its_store_retry_budget(own_redis):
    """Lines read together while the store is down: held and retried as one batch, each
    applied once and in order when it is back; past the budget every one is rejected by line."""
    import json

    def feed(budget: float, down_for: float) -> tuple[Any, str]:
        events = [{"event": "session-bind"}, {"event": "smacks-hibernation-start", "queue": []}]
        lines = [json.dumps({**event, "session": f"{user}/b{budget}"}).encode()
                 for event in events for user in (BOB, "ann@example.org")]

        async def feed_batch(car: Any) -> None:
            assert car.batching
            await car.feed_many([(line, n) for n, line in enumerate(lines, 1)], "stdin")

        return _fed_while_down(own_redis, budget, down_for, feed_batch)

    car, err = feed(15.0, 2.5)
    assert (car.accepted, car.rejected) == (4, 0), err
    for user in (BOB, "ann@example.org"):
        assert open_store(own_redis.url).load(user).sessions[f"{user}/b15.0"]["state"] == \
            "hibernated"
    car, err = feed(0.3, 2.0)
    assert (car.accepted, car.rejected) == (0, 4), err
    for number in range(1, 5):
        assert f"stdin line {number}: " in err and "(retried for 0.3 s)" in err
