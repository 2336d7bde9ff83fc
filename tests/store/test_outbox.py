"""The outbox every store keeps: a decided push is stored in the commit that decided it, counted
per send, settled by the push-result that answers it, and found again by a new process."""

from __future__ import annotations

import time

import pytest
from traces import BOB, CONFIG, PUSH, stanza

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.store import StoredEngine, StoreUnavailable
from pushrules.runtime.store.base import UserChanges


def enabled(engine: StoredEngine, user: str = BOB, nodes: tuple[str, ...] = ("n0",)) -> None:
    session = f"{user}/phone"
    engine.handle(EV["session-bind"](session))
    for node in nodes:
        engine.handle(EV["push-enable"](session, PUSH, node, secret=f"secret-{node}"))
    engine.handle(EV["session-destroyed"](session))  # rule (c) pushes to every registration


def offline(user: str, mid: str):
    return EV["message/offline/handle"](user, stanza(mid, user))


def pending(store) -> list[tuple[str, str, tuple, int]]:
    return [(p.user, p.row["node"], tuple(p.row["stanzas"]), p.attempts)
            for p in store.outbox_pending()]


def test_decided_pushes_are_in_the_outbox_in_decided_order_until_settled(opener):
    engine = StoredEngine(opener(), CONFIG)
    enabled(engine, nodes=("n0", "n1"))
    pushes = engine.handle(offline(BOB, "m1"))
    first = list(engine.last_entries)
    engine.handle(offline(BOB, "m2"))
    assert [e.push for e in first] == pushes and len(pushes) == 2
    assert all(e.key is not None for e in first)
    fresh = opener()  # another process's view: durable, with the secret needed to send it
    assert pending(fresh) == [(BOB, "n0", ("m1",), 0), (BOB, "n1", ("m1",), 0),
                              (BOB, "n0", ("m2",), 0), (BOB, "n1", ("m2",), 0)]
    assert fresh.outbox_pending()[0].row["options"] == {"secret": "secret-n0"}

    engine.outbox_attempt(first[0])
    engine.outbox_attempt(first[0])
    assert pending(opener())[0][3] == 2
    # The push-result that answers it removes it in its own commit, even when the result
    # changes nothing else (no counted error to reset).
    version = opener().load(BOB).version
    engine.handle(EV["push-result"](BOB, PUSH, "n0", True, None), settle=(first[0].key,))
    assert opener().load(BOB).version == version + 1
    assert [p[1:3] for p in pending(opener())] == [("n1", ("m1",)), ("n0", ("m2",)),
                                                   ("n1", ("m2",))]
    engine.outbox_remove(first[1])  # e.g. dropped: the registration was disabled meanwhile
    assert [p[1:3] for p in pending(opener())] == [("n0", ("m2",)), ("n1", ("m2",))]


def test_a_restarted_engine_finds_what_the_crashed_one_decided(opener):
    engine = StoredEngine(opener(), CONFIG)
    for user in (BOB, "ann@example.org"):
        enabled(engine, user)
        engine.handle(offline(user, "m1"))
    engine.outbox_attempt(engine.last_entries[0])
    restarted = StoredEngine(opener(), CONFIG)  # nothing in memory carried over
    entries = restarted.outbox_pending()
    assert sorted((e.push.user, e.push.stanzas, e.attempts) for e in entries) == [
        ("ann@example.org", ("m1",), 1), (BOB, ("m1",), 0)]
    assert {e.push.options["secret"] for e in entries} == {"secret-n0"}
    for entry in entries:
        restarted.handle(EV["push-result"](entry.push.user, PUSH, "n0", True, None),
                         settle=(entry.key,))
    assert opener().outbox_pending() == []


def test_a_failed_commit_stores_no_push_and_a_resent_one_stores_it_once(opener):
    engine = StoredEngine(opener(), CONFIG)
    enabled(engine)
    store = engine.store
    real_commit = store.commit

    def lose_the_reply(changes: UserChanges) -> bool:
        real_commit(changes)  # it landed, but the caller never heard
        raise StoreUnavailable("reply lost")

    store.commit = lose_the_reply  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        engine.handle(offline(BOB, "m1"))
    store.commit = real_commit  # type: ignore[method-assign]
    assert engine.handle(offline(BOB, "m1"))  # the same event again: the same commit
    assert pending(opener()) == [(BOB, "n0", ("m1",), 0)]
    assert engine.handle(offline(BOB, "m1")) == []  # dedup: decided once, stored once
    assert len(pending(opener())) == 1


def test_an_impossible_event_stores_nothing_and_without_outbox_nothing_is_stored(opener):
    engine = StoredEngine(opener(), CONFIG)
    with pytest.raises(ImpossibleEvent):
        engine.handle(EV["smacks-hibernation-end"](f"{BOB}/a"))
    assert opener().outbox_pending() == []
    plain = StoredEngine(opener(), CONFIG, outbox=False)
    enabled(plain)
    assert plain.handle(offline(BOB, "m1"))
    assert [e.key for e in plain.last_entries] == [None]
    assert opener().outbox_pending() == []


def test_redis_outbox_keys_are_the_users_and_found_by_scan(redis_server):
    from pushrules.runtime.store import open_store

    store = open_store(f"{redis_server.url}?prefix=obx")
    engine = StoredEngine(store, CONFIG)
    users = ("a*b@example.org", "c?d@example.org", "plain@example.org")
    for user in users:
        enabled(engine, user)
        engine.handle(offline(user, "m1"))
    engine.outbox_attempt(engine.last_entries[0])
    client = store._redis
    keys = sorted(k.decode() for k in client.scan_iter(match="obx:*"))
    for user in users:
        assert f"obx:{{{user}}}:outbox" in keys
        assert all(k.startswith(f"obx:{{{user}}}:") for k in keys if user in k)
    assert "obx:{plain@example.org}:tries" in keys
    assert sorted(p.user for p in store.outbox_pending()) == sorted(users)
    other = open_store(f"{redis_server.url}?prefix=obx2")  # another prefix sees none of them
    assert other.outbox_pending() == []
    store.close()
    other.close()


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request) -> str:
    """A fresh prefix on the single Redis or on the cluster (both keep outbox leases)."""
    server = request.getfixturevalue("redis_cluster" if request.param == "cluster"
                                     else "redis_server")
    return f"{server.url}?prefix=lease{request.param}{request.node.name[-12:-1]}"


def lease_users() -> list[str]:
    """Users spread over the slots (on a cluster: over every master)."""
    return [f"lease{i}@example.org" for i in range(12)]


def test_a_node_starting_leaves_a_live_nodes_pushes_and_takes_a_dead_ones(shared_url):
    """Several nodes on one store: at start each claims only its own entries (it restarted)
    and those whose node's lease ran out, atomically per user: no push is sent by two live
    nodes, none is left behind when its node died."""
    from pushrules.runtime.store import open_store

    users = lease_users()
    live = StoredEngine(open_store(f"{shared_url}&node=live&lease=60"), CONFIG)
    dying = StoredEngine(open_store(f"{shared_url}&node=dying&lease=1"), CONFIG)
    for i, user in enumerate(users):
        engine = live if i % 2 else dying
        enabled(engine, user)
        engine.handle(offline(user, "m1"))
    live_users = sorted(users[1::2])
    dead_users = sorted(users[0::2])
    starting = open_store(f"{shared_url}&node=starting")
    deadline = time.monotonic() + 10
    claimed = sorted(p.user for p in starting.outbox_pending())
    while time.monotonic() < deadline and claimed != dead_users:
        time.sleep(0.2)  # the dying node's 1 s leases run out
        # What it claimed is its own now: returned again with the rest (one entry each).
        claimed = sorted(p.user for p in starting.outbox_pending())
    assert claimed == dead_users
    assert open_store(f"{shared_url}&node=another").outbox_pending() == []
    # The live node restarted (same name): its own entries come back at once, only those.
    restarted = open_store(f"{shared_url}&node=live")
    assert sorted(p.user for p in restarted.outbox_pending()) == live_users
    # A send attempt renews the lease; a settled entry is gone for every node.
    entry = StoredEngine(restarted, CONFIG).outbox_pending()[0]
    restarted.outbox_attempt(entry.push.user, entry.key or "", 1)
    restarted.outbox_remove(entry.push.user, [entry.key or ""])
    assert entry.push.user not in [p.user for p in open_store(
        f"{shared_url}&node=live").outbox_pending()]
    for store in (live.store, dying.store, starting, restarted):
        store.close()


def test_cluster_outbox_is_found_on_every_master_and_removed_by_script(redis_cluster):
    from conftest import users_on_every_master

    from pushrules.runtime.store import open_store

    url = f"{redis_cluster.url}?prefix=obxc"
    users = users_on_every_master(redis_cluster, "obxc", 2)
    engine = StoredEngine(open_store(url), CONFIG)
    for user in users:
        enabled(engine, user)
        engine.handle(offline(user, "m1"))
        engine.outbox_attempt(engine.last_entries[0])
    found = open_store(url).outbox_pending()
    assert sorted(p.user for p in found) == sorted(users)
    assert all(p.attempts == 1 for p in found)
    for push in found:
        engine.store.outbox_remove(push.user, [push.key])
    assert open_store(url).outbox_pending() == []
    client = engine.store._redis
    assert not [k for k in client.scan_iter(match="obxc:*:tries")]
    assert not [k for k in client.scan_iter(match="obxc:*:lease")]
    engine.store.close()
