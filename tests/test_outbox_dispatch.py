"""The dispatcher over a durable outbox (StoredEngine on a memory store; the same code path as
SQLite and Redis): every way a push ends removes it or keeps it as documented, a new run
resends what is left with its attempts, a disable read after the decision drops the push with
the reason, and backpressure holds the reader."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from replaykit import local_redis

from pushrules.model.config import Config
from pushrules.runtime.store import StoredEngine, open_store
from pushrules.runtime.trace import parse_event
from pushrules.runtime.xmpp.dispatcher import Dispatcher, Outcome, RetryPolicy
from pushrules.runtime.xmpp.transport import RESULT, Answer

APP = "push.example.net"
USER = "bob@example.org"
WAIT = Answer(ok=False, error_type="wait", condition="resource-constraint")
CANCEL = Answer(ok=False, error_type="cancel", condition="item-not-found")


def ev(**data):
    return parse_event(data)


def offline(mid: str, user: str = USER):
    return ev(event="message/offline/handle", user=user,
              stanza=f"<message xmlns='jabber:client' id='{mid}' from='a@example.org/x' "
                     f"to='{user}' type='chat'><body>hi</body></message>")


class Sender:
    def __init__(self) -> None:
        self.answers: dict[str, deque[Answer]] = defaultdict(deque)
        self.sent: list[tuple[str, tuple]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, push) -> Answer:
        self.sent.append((push.node, push.stanzas))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        queue = self.answers[push.node]
        return queue.popleft() if queue else RESULT


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def setup(store, nodes=("n1",), config: Config | None = None):
    engine = StoredEngine(store, config or Config())
    sender = Sender()
    outcomes: list[Outcome] = []
    dispatcher = Dispatcher(engine, sender, RetryPolicy(max_attempts=3),
                            on_outcome=outcomes.append, sleep=no_sleep)
    for node in nodes:
        session = f"{USER}/{node}"
        engine.handle(ev(event="session-bind", session=session))
        engine.handle(ev(event="push-enable", session=session, jid=APP, node=node, secret="s"))
    for node in nodes:
        engine.handle(ev(event="session-destroyed", session=f"{USER}/{node}"))
    return engine, sender, dispatcher, outcomes


def test_every_end_of_a_push_settles_its_entry():
    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store, ("ok", "err", "wait"))
        sender.answers["err"].append(CANCEL)
        sender.answers["wait"].extend([WAIT] * 3)
        dispatcher.handle(offline("m1"))
        assert len(store.outbox_pending()) == 3  # stored with the decision, before any send
        await dispatcher.drain()
        assert sorted((o.push.node, o.status, o.attempts) for o in outcomes) == [
            ("err", "error", 1), ("ok", "delivered", 1), ("wait", "gave-up", 3)]
        assert store.outbox_pending() == []

    asyncio.run(main())


def test_a_disable_read_after_the_decision_drops_the_push_with_its_reason():
    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2"))
        sender.gate = asyncio.Event()  # n1's first push is in flight, the rest queued
        dispatcher.handle(offline("m1"))
        dispatcher.handle(offline("m2"))
        await asyncio.sleep(0.01)
        engine.handle(ev(event="session-bind", session=f"{USER}/again"))
        engine.handle(ev(event="push-disable", session=f"{USER}/again", jid=APP, node="n2"))
        sender.gate.set()
        await dispatcher.drain()
        by = {(o.push.node, o.push.stanzas[0]): o for o in outcomes}
        assert by[("n1", "m1")].status == by[("n1", "m2")].status == "delivered"
        assert by[("n2", "m2")].status == "dropped"
        assert by[("n2", "m2")].answer == ("registration disabled before it was sent: "
                                           "disabled by the client")
        assert ("n2", ("m2",)) not in sender.sent
        assert store.outbox_pending() == []

    asyncio.run(main())


def test_what_shutdown_leaves_is_kept_and_a_new_run_resends_it_with_its_attempts():
    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store)
        sender.gate = asyncio.Event()  # never answered in this run
        dispatcher.handle(offline("m1"))
        dispatcher.handle(offline("m2"))
        await asyncio.sleep(0.01)
        await dispatcher.close(grace=0.01)
        assert [(o.status, o.attempts) for o in outcomes] == [("undelivered", 1),
                                                              ("undelivered", 0)]
        assert "kept in the outbox" in outcomes[0].answer
        assert [p.attempts for p in store.outbox_pending()] == [1, 0]

        # A new run on the same store, nothing fed again.
        engine2, sender2, dispatcher2, outcomes2 = setup(store)
        dispatcher2.resume(engine2.outbox_pending())
        await dispatcher2.drain()
        assert [(o.push.stanzas, o.status, o.attempts) for o in outcomes2] == [
            (("m1",), "delivered", 2), (("m2",), "delivered", 1)]
        assert sender2.sent == [("n1", ("m1",)), ("n1", ("m2",))]
        assert store.outbox_pending() == []

    asyncio.run(main())


def test_an_answer_is_finished_as_answered_even_when_the_grace_ends_at_once():
    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store)
        dispatcher.handle(offline("m1"))
        await asyncio.sleep(0)  # the send has started; its answer comes in the next steps
        await dispatcher.close(grace=0)
        assert [o.status for o in outcomes] in (["delivered"], ["undelivered"])
        if outcomes[0].status == "undelivered":
            assert len(store.outbox_pending()) == 1
        else:
            assert store.outbox_pending() == []

    asyncio.run(main())


def test_room_holds_the_reader_until_the_outbox_is_below_the_bound():
    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        sender.gate = asyncio.Event()
        for i in range(3):
            dispatcher.handle(offline(f"m{i}"))
        assert dispatcher.pending == 9
        waiting = asyncio.ensure_future(dispatcher.room(4))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # more than 4 pending: the reader waits
        sender.gate.set()
        await asyncio.wait_for(waiting, 5)
        assert dispatcher.pending <= 4
        await dispatcher.drain()
        assert len(outcomes) == 9

    asyncio.run(main())


def test_a_store_outage_while_sending_neither_loses_nor_reports_a_push_undelivered():
    """The store fails for every call during the sends: the pushes still go out as decided;
    the answers that could not be recorded leave their entries in the outbox (sent again by
    the next run), none is reported undelivered."""
    from pushrules.runtime.store import StoreUnavailable

    async def main():
        store = open_store("memory:")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2"))
        dispatcher.handle(offline("m1"))
        real = (store.load, store.commit, store.outbox_attempt)

        def down(*_a, **_k):
            raise StoreUnavailable("redis store redis://x is unavailable")

        store.load = store.commit = store.outbox_attempt = down
        await dispatcher.drain()
        store.load, store.commit, store.outbox_attempt = real
        assert sorted((o.push.node, o.status) for o in outcomes) == [
            ("n1", "delivered"), ("n2", "delivered")]
        assert len(store.outbox_pending()) == 2  # the answers were not recorded: kept

    asyncio.run(main())


def test_over_a_store_committing_per_iteration_each_push_is_committed_before_it_is_sent(
        tmp_path):
    """SQLite with deferred commits: when a publish goes out, its decision and its attempt
    count are already in the file (read by another connection), and one commit serves all the
    sends of an iteration."""
    from pushrules.runtime.store.sqlite import SqliteStore

    async def main():
        path = tmp_path / "outbox.db"
        store = SqliteStore(path)
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        loop = asyncio.get_running_loop()
        store.defer_commits(lambda flush: loop.call_later(60, flush))  # never on its own
        flushes = []

        def flush():
            flushes.append(len(sender.sent))
            store.flush()

        dispatcher.flush = flush
        reader = SqliteStore(path)
        seen: list[list[tuple[str, int]]] = []
        send = sender.__call__

        async def checking(push):
            seen.append(sorted((p.row["node"], p.attempts) for p in reader.outbox_pending()))
            return await send(push)

        dispatcher.send = checking
        dispatcher.handle(offline("m1"))
        assert reader.outbox_pending() == []  # not committed yet
        await dispatcher.drain()
        assert [o.status for o in outcomes] == ["delivered"] * 3
        assert seen and all(s == [("n1", 1), ("n2", 1), ("n3", 1)] for s in seen)
        assert flushes == [0]  # one commit before the three sends
        store.flush()
        assert reader.outbox_pending() == []
        reader.close()
        store.close()

    asyncio.run(main())


def test_over_redis_the_send_counts_of_an_iteration_are_in_redis_before_the_sends():
    """Redis with deferred send counts: when a publish goes out, its decision (committed at
    once) and its attempt count (one pipeline for all the iteration's sends) are in Redis,
    as another client reads them."""
    from pushrules.runtime.store.redis_store import RedisStore

    async def main(url):
        store = RedisStore(f"{url}?node=a")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        loop = asyncio.get_running_loop()
        store.defer_commits(lambda flush: loop.call_later(60, flush))  # never on its own
        flushes = []

        def flush():
            flushes.append(len(sender.sent))
            store.flush()

        dispatcher.flush = flush
        reader = RedisStore(f"{url}?node=a")  # (same node: it may read the entries' leases)
        seen: list[list[tuple[str, int]]] = []
        send = sender.__call__

        async def checking(push):
            seen.append(sorted((p.row["node"], p.attempts) for p in reader.outbox_pending()))
            return await send(push)

        dispatcher.send = checking
        dispatcher.handle(offline("m1"))
        assert [p.attempts for p in reader.outbox_pending()] == [0, 0, 0]  # decided, unsent
        await dispatcher.drain()
        assert [o.status for o in outcomes] == ["delivered"] * 3
        assert seen and all(s == [("n1", 1), ("n2", 1), ("n3", 1)] for s in seen)
        assert flushes == [0]  # one pipeline before the three sends
        assert reader.outbox_pending() == []
        reader.close()
        store.close()

    with local_redis() as server:
        asyncio.run(main(server.url))


def _wired_as_serve(store, dispatcher) -> list[int]:
    """Send counts deferred until a flush that never comes on its own, and the dispatcher's
    flush and ``flush_waiting`` the store's, as serve wires them: the flushes waited for."""
    loop = asyncio.get_running_loop()
    store.defer_commits(lambda flush: loop.call_later(60, flush))
    flushes: list[int] = []
    dispatcher.flush = lambda: flushes.append(1) or store.flush()
    dispatcher.flush_waiting = store.flush_waiting
    return flushes


def _sends_seeing(dispatcher, sender, reader, seen: list) -> None:
    """Each send first records ``(node, stanza, sorted attempts of that node's entries)`` as
    ``reader`` (another client of the store) finds the outbox then."""
    send = sender.__call__

    async def checking(push):
        seen.append((push.node, push.stanzas[0], sorted(
            p.attempts for p in reader.outbox_pending() if p.row["node"] == push.node)))
        return await send(push)

    dispatcher.send = checking


def test_over_redis_a_sends_count_rides_in_the_round_trip_of_its_check():
    """Wired as serve wires it (send counts deferred until a flush, ``flush_waiting``): the
    counts of an iteration's sends go in the pipeline of their "still enabled?" checks, so no
    flush is waited for and each count is in Redis when its publish goes out. A push found
    disabled by that check was counted ahead: its outcome says 0 attempts, its entry is
    removed."""
    from pushrules.runtime.store.redis_store import COMMIT, LOAD, OUTBOX_ATTEMPT, RedisStore

    async def main(url):
        store = RedisStore(f"{url}?node=a&prefix=ride")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        flushes = _wired_as_serve(store, dispatcher)
        pipelines: list[list[str]] = []
        pipeline = store._pipeline
        names = {store._load.sha: "load", store._commit.sha: "commit",
                 store._outbox_attempt.sha: "count"}

        def spied(calls, raise_on_error=True):
            pipelines.append([names.get(call[0], "?") for call in calls])
            return pipeline(calls, raise_on_error)

        store._pipeline = spied
        for script in (LOAD, COMMIT, OUTBOX_ATTEMPT):  # (else the first pipeline is resent)
            store._redis.script_load(script)
        reader = RedisStore(f"{url}?node=a&prefix=ride")
        seen: list[tuple[str, str, list[int]]] = []
        _sends_seeing(dispatcher, sender, reader, seen)
        sender.gate = asyncio.Event()  # m1's pushes in flight, m2's queued behind them
        dispatcher.handle(offline("m1"))
        dispatcher.handle(offline("m2"))
        await asyncio.sleep(0.05)
        engine.handle(ev(event="session-bind", session=f"{USER}/again"))
        engine.handle(ev(event="push-disable", session=f"{USER}/again", jid=APP, node="n2"))
        sender.gate.set()
        await dispatcher.drain()
        by = {(o.push.node, o.push.stanzas[0]): o for o in outcomes}
        assert by[("n2", "m2")].status == "dropped" and by[("n2", "m2")].attempts == 0
        assert [by[(n, "m2")].attempts for n in ("n1", "n3")] == [1, 1]
        assert flushes == []
        counted = [p for p in pipelines if "count" in p]
        assert counted and all("load" in p for p in counted), pipelines
        assert sum(p.count("count") for p in pipelines) == 6  # m2 to n2 counted ahead too
        assert len(seen) == 5 and all(counts[-1] == 1 for _, _, counts in seen), seen
        assert reader.outbox_pending() == []
        reader.close()
        store.close()

    with local_redis() as server:
        asyncio.run(main(server.url))


def test_over_redis_a_push_behind_another_is_read_and_counted_by_that_ones_answer():
    """A registration's pushes queued one behind the other: the round trip that records the
    answer to one also counts the next one's send and reads the registration for it, so only
    the first push waits for a check of its own and no flush is waited for; each count is in
    Redis when its publish goes out. Another node disables the registration while a push is
    in flight: the answer's round trip reads that, and the pushes behind are dropped, never
    sent (0 attempts), their entries removed."""
    from pushrules.runtime.store.redis_store import RedisStore

    async def main(url):
        store = RedisStore(f"{url}?node=a&prefix=behind")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2"))
        flushes = _wired_as_serve(store, dispatcher)
        checks: list[list[str]] = []
        current = engine.current_registrations

        def counted(keys):
            checks.append([key[2] for key in keys])
            return current(keys)

        engine.current_registrations = counted
        reader = RedisStore(f"{url}?node=a&prefix=behind")
        seen: list[tuple[str, str, list[int]]] = []
        _sends_seeing(dispatcher, sender, reader, seen)
        sender.gate = asyncio.Event()
        for mid in ("m1", "m2", "m3"):
            dispatcher.handle(offline(mid))
        await asyncio.sleep(0.05)  # m1's two pushes in flight, the others queued behind
        other = StoredEngine(RedisStore(f"{url}?node=b&prefix=behind"))
        other.handle(ev(event="session-bind", session=f"{USER}/other"))
        other.handle(ev(event="push-disable", session=f"{USER}/other", jid=APP, node="n2"))
        sender.gate.set()
        await dispatcher.drain()
        by = {(o.push.node, o.push.stanzas[0]): o for o in outcomes}
        assert [by[("n1", m)].status for m in ("m1", "m2", "m3")] == ["delivered"] * 3
        assert by[("n2", "m1")].status == "delivered"
        for mid in ("m2", "m3"):
            assert (by[("n2", mid)].status, by[("n2", mid)].attempts) == ("dropped", 0)
            assert by[("n2", mid)].answer.startswith("registration disabled before it was sent")
        # m1's pushes; behind them, read by the answers, but m3 to n2, behind a dropped push
        # (no answer read the registration for it): a check of its own.
        assert checks == [["n1", "n2"], ["n2"]]
        assert flushes == []
        # Sent: its own count is in Redis (1); the ones behind it counted ahead or not yet.
        assert [(n, m) for n, m, _ in seen] == [("n1", "m1"), ("n2", "m1"), ("n1", "m2"),
                                                ("n1", "m3")]
        assert all(1 in counts for _, _, counts in seen), seen
        assert reader.outbox_pending() == []
        reader.close()
        other.store.close()
        store.close()

    with local_redis() as server:
        asyncio.run(main(server.url))


def test_over_sqlite_a_push_behind_another_is_read_by_that_ones_answer(tmp_path):
    """A store that does not batch (SQLite): a push queued behind another of its
    registration is read from the engine's copy, which the commit of the answer before it
    read, not by a load of its own. Another process disables a registration while a push is
    in flight: that commit is refused and runs again on the fresh state, so the pushes behind
    are dropped (0 attempts), their entries removed."""
    url = f"sqlite:///{tmp_path / 'behind.db'}"

    async def main():
        engine, sender, dispatcher, outcomes = setup(open_store(url), ("n1", "n2"))
        reads: list[str] = []
        current = engine.current_registration

        def counted(key):
            reads.append(f"{key[2]}")
            return current(key)

        engine.current_registration = counted
        sender.gate = asyncio.Event()
        for mid in ("m1", "m2", "m3"):
            dispatcher.handle(offline(mid))
        await asyncio.sleep(0.05)  # m1's two pushes in flight, the others queued behind
        other = StoredEngine(open_store(url))
        other.handle(ev(event="session-bind", session=f"{USER}/other"))
        other.handle(ev(event="push-disable", session=f"{USER}/other", jid=APP, node="n2"))
        sender.gate.set()
        await dispatcher.drain()
        by = {(o.push.node, o.push.stanzas[0]): o for o in outcomes}
        assert [by[("n1", m)].status for m in ("m1", "m2", "m3")] == ["delivered"] * 3
        for mid in ("m2", "m3"):
            assert (by[("n2", mid)].status, by[("n2", mid)].attempts) == ("dropped", 0)
        # m1's pushes read the store; m3 to n2 is behind a dropped push (no answer read it).
        assert sorted(reads) == ["n1", "n2", "n2"]
        assert engine.outbox_pending() == []
        other.store.close()
        engine.store.close()

    asyncio.run(main())


def test_deferred_redis_send_counts_survive_a_server_that_lost_its_scripts():
    from pushrules.runtime.store.redis_store import RedisStore

    with local_redis() as server:
        store = RedisStore(f"{server.url}?node=a")
        engine = setup(store)[0]
        engine.handle(offline("m1"))
        entry = engine.last_entries[0]
        scheduled = []
        store.defer_commits(scheduled.append)
        engine.outbox_attempt(entry)
        engine.outbox_attempt(entry)
        assert len(scheduled) == 1  # one flush for both
        store._redis.script_flush()
        store.flush()
        assert [p.attempts for p in store.outbox_pending()] == [2]
        store.close()


def test_serve_over_redis_applies_lines_read_together_in_one_batch_and_names_every_bad_one():
    """``pushrules serve`` on a single Redis reads lines in batches (one pipeline for their
    commits): the v2 lines with poison lines among them, on stdin, push exactly what the
    in-memory sidecar pushes, every bad line is named, and the outbox is settled."""
    import io

    from test_sidecar_input import (  # type: ignore[import-not-found]
        RecordingTransport,
        assert_v2_applied,
        run_on_stdin,
        v2_lines,
    )

    from pushrules.runtime.xmpp.sidecar import Sidecar, SidecarSettings

    parts, errors = v2_lines()

    async def main(url):
        out, err = io.StringIO(), io.StringIO()
        settings = SidecarSettings(component_jid="p.example.org", component_secret="x",
                                   shutdown_grace=5, store=url)
        transport = RecordingTransport()
        car = Sidecar(settings, out, err, transport=transport)
        assert car.batching
        batches: list[int] = []
        run_batch = car.engine.store.run_batch

        def counted(ops):
            batches.append(len(ops))
            return run_batch(ops)

        car.engine.store.run_batch = counted
        code = await run_on_stdin(car, transport, parts)
        return code, car, transport, out, err.getvalue(), batches

    with local_redis() as server:
        url = f"{server.url}?prefix=batched"
        code, car, transport, out, err, batches = asyncio.run(main(url))
        assert code == 0, err
        assert_v2_applied(car, transport, out, err, "stdin", errors)
        assert batches and max(batches) > 1, "no pipeline held several events' commits"
        store = open_store(url)
        assert store.outbox_pending() == []
        store.close()


def test_over_redis_a_disable_read_after_the_decision_drops_the_push_in_one_read_for_all():
    """As above on a single Redis, where the registrations of the sends of one loop iteration
    are read in one round trip: the disabled one's push is dropped with the reason, the
    others are delivered, and one read served several pushes."""
    from pushrules.runtime.store.redis_store import RedisStore

    async def main(url):
        store = RedisStore(url)
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        reads: list[int] = []
        batched = engine.current_registrations

        def counted(keys):
            reads.append(len(keys))
            return batched(keys)

        engine.current_registrations = counted
        sender.gate = asyncio.Event()  # the first pushes are in flight, the rest queued
        dispatcher.handle(offline("m1"))
        dispatcher.handle(offline("m2"))
        await asyncio.sleep(0.05)
        engine.handle(ev(event="session-bind", session=f"{USER}/again"))
        engine.handle(ev(event="push-disable", session=f"{USER}/again", jid=APP, node="n2"))
        sender.gate.set()
        await dispatcher.drain()
        by = {(o.push.node, o.push.stanzas[0]): o for o in outcomes}
        assert [by[(n, m)].status for n in ("n1", "n3") for m in ("m1", "m2")] == [
            "delivered"] * 4
        assert by[("n2", "m1")].status == "delivered" and by[("n2", "m2")].status == "dropped"
        assert by[("n2", "m2")].answer == ("registration disabled before it was sent: "
                                           "disabled by the client")
        assert ("n2", ("m2",)) not in sender.sent
        assert reads and reads[0] == 3, reads  # the three first sends: one read
        assert store.outbox_pending() == []
        store.close()

    with local_redis() as server:
        asyncio.run(main(f"{server.url}?prefix=checks"))


def test_over_redis_a_batchs_round_trip_is_timed_and_marks_the_store_down_when_it_fails():
    """The metrics time ``run_batch`` like loads and commits, and a batch refused as
    unavailable marks the store down in /healthz (serve's events then go only that way)."""
    from test_metrics import samples  # type: ignore[import-not-found]

    from pushrules.generated.events import SessionBind, SessionDestroyed
    from pushrules.runtime.xmpp.metrics import PrometheusMetrics

    with local_redis() as server:
        metrics = PrometheusMetrics()
        store = open_store(f"{server.url}?prefix=timed")
        metrics.watch(store=store)
        engine = StoredEngine(store)
        events = [SessionBind(f"u{i}@example.org/phone") for i in range(4)]
        assert all(h.error is None for h in engine.handle_many(events))
        got = samples(metrics)
        assert got[("pushrules_store_seconds_count", (("operation", "run_batch"),))] >= 1
        assert metrics.health()["store"] is True
        server.stop()  # the same (cached) users: only the batch's commits go to the store
        failed = engine.handle_many([SessionDestroyed(f"u{i}@example.org/phone")
                                     for i in range(4)])
        assert all(type(h.error).__name__ == "StoreUnavailable" for h in failed)
        assert metrics.health()["store"] is False
        store.close()


def _spy_handle_many(engine, calls):
    real = engine.handle_many

    def spy(events, **kwargs):
        calls.append((len(events), kwargs.get("lane")))
        return real(events, **kwargs)

    engine.handle_many = spy


def test_over_redis_the_answers_of_an_iteration_are_recorded_in_one_round_trip():
    """A store that batches: the push-results of the answers that arrive in one loop iteration
    are fed in one ``handle_many`` (one pipeline), in the answers' own lane, each settling its
    own outbox entry; a counted error is counted once."""
    from pushrules.runtime.store.redis_store import RedisStore
    from pushrules.runtime.xmpp.dispatcher import REPORT_LANE

    async def main(url):
        store = RedisStore(f"{url}?node=a&prefix=answers")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3", "n4"))
        sender.answers["n2"].append(CANCEL)
        calls: list[tuple[int, str]] = []
        _spy_handle_many(engine, calls)
        dispatcher.handle(offline("m1"))
        await dispatcher.drain()
        assert sorted((o.push.node, o.status) for o in outcomes) == [
            ("n1", "delivered"), ("n2", "error"), ("n3", "delivered"), ("n4", "delivered")]
        assert calls == [(4, REPORT_LANE)]
        assert store.outbox_pending() == []
        assert engine.current_registration((USER, APP, "n2")).errors == 1
        assert engine.current_registration((USER, APP, "n1")).errors == 0
        store.close()

    with local_redis() as server:
        asyncio.run(main(server.url))


def test_over_redis_a_lost_reply_to_the_answers_round_trip_records_each_answer_once():
    """The pipeline of a batch of answers landed but its reply was lost (StoreUnavailable):
    the dispatcher feeds the same answers again, the engine resends the same commits (their
    tokens), so each counted error is counted once and each entry settled once."""
    from pushrules.runtime.store import StoreUnavailable
    from pushrules.runtime.store.base import UserChanges
    from pushrules.runtime.store.redis_store import RedisStore

    async def main(url):
        store = RedisStore(f"{url}?node=a&prefix=lostanswers")
        engine, sender, dispatcher, outcomes = setup(store, ("n1", "n2", "n3"))
        sender.answers["n1"].append(CANCEL)
        sender.answers["n2"].append(CANCEL)
        run_batch = store.run_batch
        lost: list[int] = []

        def reply_lost(ops):
            replies = run_batch(ops)
            if not lost and any(isinstance(op, UserChanges) and op.outbox_del for op in ops):
                lost.append(len(ops))
                raise StoreUnavailable("redis store: the connection broke (test)")
            return replies

        store.run_batch = reply_lost
        calls: list[tuple[int, str]] = []
        _spy_handle_many(engine, calls)
        dispatcher.handle(offline("m1"))
        await dispatcher.drain()
        assert lost == [3]
        assert [size for size, _ in calls] == [3, 3]  # the same answers again
        assert sorted((o.push.node, o.status) for o in outcomes) == [
            ("n1", "error"), ("n2", "error"), ("n3", "delivered")]
        assert [engine.current_registration((USER, APP, n)).errors
                for n in ("n1", "n2", "n3")] == [1, 1, 0]
        assert store.outbox_pending() == []
        store.close()

    with local_redis() as server:
        asyncio.run(main(server.url))
