"""Dispatch over a real Prosody: the engine decides from contract events, the transport publishes
as a component, the app-server component records and answers."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import pytest
from harness import (
    APP_JIDS,
    PUSH_JID,
    PUSH_SECRET,
    AppServer,
    Prosody,
    enable_events,
    in_ci,
    message,
    offline_event,
)

from pushrules.model.config import Config
from pushrules.runtime import Engine
from pushrules.runtime.trace import parse_event
from pushrules.runtime.xmpp.dispatcher import Dispatcher, Outcome, RetryPolicy
from pushrules.runtime.xmpp.transport import PushTransport

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]
FAST_RETRY = RetryPolicy(max_attempts=6, backoff_initial=0.05, backoff_max=0.4, jitter=0.02)


class Rig:
    """Engine + transport + dispatcher + app servers on the test's Prosody."""

    def __init__(self, prosody, config: Config | None = None, *, iq_timeout: float = 5.0,
                 policy: RetryPolicy = FAST_RETRY, apps: tuple[str, ...] = (APP,)) -> None:
        self.prosody = prosody
        self.engine = Engine(config or Config())
        self.transport = PushTransport(PUSH_JID, PUSH_SECRET, "127.0.0.1", prosody.port,
                                       self.engine.config, iq_timeout=iq_timeout,
                                       reconnect_delay=0.2)
        self.outcomes: list[Outcome] = []
        self.dispatcher = Dispatcher(self.engine, self.transport.publish, policy,
                                     on_outcome=self.outcomes.append)
        self.apps = {jid: AppServer(jid, prosody.port) for jid in apps}

    @property
    def app(self) -> AppServer:
        return self.apps[APP]

    async def __aenter__(self) -> Rig:
        for app in self.apps.values():
            await app.start()
        await self.transport.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close(5)
        await self.transport.close()
        for app in self.apps.values():
            await app.stop()

    def feed(self, *events: dict) -> list:
        pushes = []
        for data in events:
            pushes += self.dispatcher.handle(parse_event(data))
        return pushes

    def reg(self, user: str, node: str, app: str = APP):
        return self.engine.registration((user, app, node))


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def rule_events() -> list[tuple[str, str, list[dict], list[str]]]:
    """(rule, user, events, stanza bodies pushed) for every push rule."""
    def q(user: str, *ids: str) -> list[str]:
        return [message(i, user, f"body {i}") for i in ids]

    out = []
    u = "ack@localhost"
    out.append(("a/ack-delayed", u, [
        *enable_events(u, "node-ack"),
        {"event": "smacks-ack-delayed", "session": f"{u}/phone", "queue": q(u, "m1")}],
        ["m1"]))
    u = "hib@localhost"
    out.append(("a/hibernation-start", u, [
        *enable_events(u, "node-hib"),
        {"event": "smacks-hibernation-start", "session": f"{u}/phone",
         "queue": q(u, "m1", "m2")}], ["m1", "m2"]))
    u = "queued@localhost"
    out.append(("a/queued", u, [
        *enable_events(u, "node-queued"),
        {"event": "smacks-hibernation-start", "session": f"{u}/phone", "queue": []},
        {"event": "stanza-queued", "session": f"{u}/phone",
         "stanza": message("m3", u, "body m3")}], ["m3"]))
    u = "archive@localhost"
    out.append(("b/archive", u, [
        *enable_events(u, "node-archive"),
        {"event": "session-destroyed", "session": f"{u}/phone"},
        {"event": "archive-message-added", "for_user": u,
         "stanza": message("m4", u, "body m4")}], ["m4"]))
    u = "offline@localhost"
    out.append(("c/offline", u, [*enable_events(u, "node-offline"),
                                 offline_event(u, "m5", "body m5")], ["m5"]))
    return out


@pytest.mark.parametrize("config", [Config(), Config(include_sender=True, include_body=True)],
                         ids=["defaults", "sender-and-body"])
def test_every_rule_arrives_with_node_form_and_secret(prosody, config):
    async def main():
        async with Rig(prosody, config) as rig:
            cases = rule_events()
            for rule, _user, events, _ids in cases:
                pushes = rig.feed(*events)
                assert [p.rule for p in pushes] == [rule]
            received = await rig.app.wait_for(len(cases))
            await rig.dispatcher.drain()
            assert len(received) == len(cases)
            by_node = {r.publish.node: r for r in received}
            for rule, user, events, ids in cases:
                node = events[1]["node"]
                got = by_node[node]
                assert (got.sender, got.to) == (PUSH_JID, APP), rule
                assert got.publish.options == {"secret": f"secret-{node}"}, rule
                expected = {"message-count": str(len(ids))}
                if config.include_sender:
                    expected["last-message-sender"] = "alice@localhost/pc"
                expected["last-message-body"] = (f"body {ids[-1]}" if config.include_body
                                                 else "New Message!")
                assert got.publish.summary == expected, rule
                assert rig.reg(user, node).errors == 0
            assert [o.status for o in rig.outcomes] == ["delivered"] * len(cases)

    run(main())


def test_counted_errors_disable_the_registration(prosody):
    async def main():
        async with Rig(prosody, Config(max_errors=3)) as rig:
            user, node = "bob@localhost", "node-cancel"
            rig.app.default = "cancel"
            rig.feed(*enable_events(user, node))
            for i in range(3):  # one at a time: each answer is in before the next push
                rig.feed(offline_event(user, f"c{i}"))
                await rig.dispatcher.drain()
                assert rig.reg(user, node).errors == i + 1
            reg = rig.reg(user, node)
            assert reg.state == "disabled"
            assert reg.reason == "max_errors: 3 counted errors in a row, last cancel"
            assert rig.engine.audit_log[-1].reason == reg.reason
            assert rig.feed(offline_event(user, "c9")) == []  # the model pushes no more
            await asyncio.sleep(0.3)
            assert len(rig.app.received) == 3
            assert [o.status for o in rig.outcomes] == ["error"] * 3

    run(main())


@pytest.mark.parametrize("answer", ["auth", "modify", "notype"])
def test_other_error_types_are_counted(prosody, answer):
    async def main():
        async with Rig(prosody) as rig:
            user, node = "carol@localhost", f"node-{answer}"
            rig.app.answer(node, answer)
            rig.feed(*enable_events(user, node), offline_event(user, "x1"))
            await rig.dispatcher.drain()
            assert rig.reg(user, node).errors == 1
            assert rig.outcomes[0].status == "error"
            assert f"type={'none' if answer == 'notype' else answer}" in rig.outcomes[0].answer
            rig.feed(offline_event(user, "x2"))  # a result resets the count
            await rig.dispatcher.drain()
            assert rig.reg(user, node).errors == 0

    run(main())


def test_wait_is_retried_and_not_counted(prosody):
    async def main():
        async with Rig(prosody, Config(max_errors=1)) as rig:
            user, node = "dave@localhost", "node-wait"
            rig.app.answer(node, "wait", "wait", "result")
            rig.feed(*enable_events(user, node), offline_event(user, "w1"))
            await rig.dispatcher.drain()
            got = rig.app.for_node(node)
            assert [r.answer for r in got] == ["wait", "wait", "result"]
            assert {tuple(r.publish.summary.items()) for r in got} == {
                (("message-count", "1"), ("last-message-body", "New Message!"))}
            reg = rig.reg(user, node)
            assert (reg.state, reg.errors) == ("bound", 0)  # max_errors=1: one count disables
            assert (rig.outcomes[0].status, rig.outcomes[0].attempts) == ("delivered", 3)

    run(main())


def test_wait_in_the_client_namespace_is_still_wait(prosody):
    async def main():
        async with Rig(prosody) as rig:
            user, node = "dora@localhost", "node-client-ns"
            rig.app.answer(node, "client-ns-wait", "result")
            rig.feed(*enable_events(user, node), offline_event(user, "w1"))
            await rig.dispatcher.drain()
            assert [r.answer for r in rig.app.for_node(node)] == ["client-ns-wait", "result"]
            assert rig.reg(user, node).errors == 0
            assert (rig.outcomes[0].status, rig.outcomes[0].attempts) == ("delivered", 2)

    run(main())


def test_no_answer_is_retried_then_counted(prosody):
    async def main():
        policy = RetryPolicy(max_attempts=2, backoff_initial=0.05, backoff_max=0.1, jitter=0)
        async with Rig(prosody, iq_timeout=0.5, policy=policy) as rig:
            user, node = "erin@localhost", "node-silent"
            rig.app.answer(node, "none", "none")
            rig.feed(*enable_events(user, node), offline_event(user, "t1"))
            await rig.dispatcher.drain()
            assert len(rig.app.for_node(node)) == 2
            assert (rig.outcomes[0].status, rig.outcomes[0].answer) == ("error", "timeout")
            assert rig.reg(user, node).errors == 1

    run(main())


def test_app_server_that_disconnects_and_comes_back(prosody):
    async def main():
        policy = RetryPolicy(max_attempts=12, backoff_initial=0.1, backoff_max=0.5, jitter=0.05)
        async with Rig(prosody, Config(max_errors=1), policy=policy) as rig:
            user, node = "frank@localhost", "node-flaky"
            rig.feed(*enable_events(user, node), offline_event(user, "f0"))
            await rig.dispatcher.drain()
            await rig.app.stop()
            for i in range(1, 4):
                rig.feed(offline_event(user, f"f{i}"))
            await asyncio.sleep(1.0)  # Prosody answers wait/remote-server-timeout meanwhile
            assert rig.dispatcher.pending == 3
            await rig.app.start()
            await rig.dispatcher.drain()
            ids = [r.push.stanzas[0] for r in rig.outcomes]
            assert ids == ["f0", "f1", "f2", "f3"]
            assert {r.status for r in rig.outcomes} == {"delivered"}
            assert rig.outcomes[1].attempts > 1  # f1 met the gap
            assert [r.publish.summary["message-count"] for r in rig.app.received] == ["1"] * 4
            reg = rig.reg(user, node)
            assert (reg.state, reg.errors) == ("bound", 0)  # waits are never counted

    run(main())


def test_app_server_gone_for_good_is_reported_not_lost(prosody):
    async def main():
        policy = RetryPolicy(max_attempts=3, backoff_initial=0.05, backoff_max=0.1, jitter=0)
        async with Rig(prosody, policy=policy) as rig:
            await rig.app.stop()
            user, node = "gina@localhost", "node-gone"
            rig.feed(*enable_events(user, node), offline_event(user, "g1"))
            await rig.dispatcher.drain()
            outcome = rig.outcomes[0]
            assert (outcome.status, outcome.attempts) == ("gave-up", 3)
            assert "remote-server-timeout" in outcome.answer
            assert rig.reg(user, node).errors == 0

    run(main())


def test_burst_keeps_order_per_registration_and_a_slow_node_blocks_nobody(prosody, capsys):
    registrations, per_reg = 100, 10

    async def main():
        async with Rig(prosody, apps=APP_JIDS) as rig:
            users = [f"u{n}@localhost" for n in range(registrations)]
            for n, user in enumerate(users):
                rig.feed(*enable_events(user, f"b{n}", app=APP_JIDS[n % 2]))
            rig.apps[APP_JIDS[0]].delay["b0"] = 0.3  # one slow node on the first app server
            start = time.monotonic()
            for i in range(per_reg):
                for user in users:
                    rig.feed(offline_event(user, f"m{i}"))
            await rig.dispatcher.drain()
            elapsed = time.monotonic() - start
            total = registrations * per_reg
            assert len(rig.outcomes) == total
            assert {o.status for o in rig.outcomes} == {"delivered"}
            received = rig.apps[APP_JIDS[0]].received + rig.apps[APP_JIDS[1]].received
            assert len(received) == total
            order: dict[str, list[str]] = {}
            for outcome in rig.outcomes:
                order.setdefault(outcome.push.node, []).append(outcome.push.stanzas[0])
            assert all(ids == [f"m{i}" for i in range(per_reg)] for ids in order.values())
            # arrival order at the app servers, per node, is the decided order too
            arrived: dict[str, list[float]] = {}
            for r in received:
                arrived.setdefault(r.publish.node, []).append(r.at)
            assert all(times == sorted(times) for times in arrived.values())
            slow_done = max(i for i, o in enumerate(rig.outcomes) if o.push.node == "b0")
            others_done = max(i for i, o in enumerate(rig.outcomes) if o.push.node != "b0")
            assert others_done < slow_done
            others_at = max(r.at for r in received if r.publish.node != "b0") - start
            with capsys.disabled():
                print(f"\nburst: {total} pushes to {registrations} registrations: all answered "
                      f"in {elapsed:.2f}s (slow node: {per_reg} x 0.3 s); the {total - per_reg} "
                      f"others arrived within {others_at:.2f}s "
                      f"({(total - per_reg) / others_at:.0f}/s)")

    run(main())


def test_secrets_never_reach_the_logs(prosody, caplog):
    async def main():
        async with Rig(prosody) as rig:
            user, node = "hank@localhost", "node-secret"
            rig.app.answer(node, "cancel")
            rig.feed(*enable_events(user, node, secret="TOPSECRET-42"),
                     offline_event(user, "s1"), offline_event(user, "s2"))
            await rig.dispatcher.drain()
            assert [r.publish.options["secret"] for r in rig.app.received] == ["TOPSECRET-42"] * 2
            return rig.outcomes

    with caplog.at_level(logging.DEBUG):
        outcomes = None

        async def capture():
            nonlocal outcomes
            outcomes = await main()

        run(capture())
    text = caplog.text
    assert "SEND:" in text and "publish-options" in text  # the stanzas were logged, masked
    assert "TOPSECRET-42" not in text
    assert PUSH_SECRET not in text
    assert all("TOPSECRET-42" not in repr(o) and "TOPSECRET-42" not in str(o.to_json())
               for o in outcomes)


def test_transport_reconnects_after_the_server_restarts(tmp_path):
    if shutil.which("prosody") is None:
        if in_ci():
            pytest.fail("prosody is not installed")
        pytest.skip("prosody is not installed")
    server = Prosody(tmp_path)
    server.start()

    async def main():
        async with Rig(server, Config(max_errors=1)) as rig:
            user, node = "lena@localhost", "node-restart"
            rig.feed(*enable_events(user, node), offline_event(user, "r0"))
            await rig.dispatcher.drain()
            server.stop()
            await asyncio.sleep(0.5)
            assert not rig.transport.online.is_set()
            rig.feed(offline_event(user, "r1"), offline_event(user, "r2"))
            await asyncio.sleep(0.5)
            assert rig.dispatcher.pending == 2  # held while there is no connection
            server.start()
            await rig.app.start()  # the app server reconnects too
            await asyncio.wait_for(rig.dispatcher.drain(), 30)
            assert [o.push.stanzas[0] for o in rig.outcomes] == ["r0", "r1", "r2"]
            assert {o.status for o in rig.outcomes} == {"delivered"}
            assert rig.reg(user, node).errors == 0

    try:
        run(main())
    finally:
        server.stop()
