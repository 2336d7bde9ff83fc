"""The dispatcher's policy with a scripted sender (the real transport is covered against Prosody
in tests/integration): answers fed back to the model, retries, order, shutdown."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from pushrules.model.config import Config
from pushrules.runtime import Engine
from pushrules.runtime.trace import parse_event
from pushrules.runtime.xmpp.dispatcher import Dispatcher, Outcome, RetryPolicy
from pushrules.runtime.xmpp.transport import RESULT, TIMEOUT, Answer

APP = "push.example.net"
WAIT = Answer(ok=False, error_type="wait", condition="resource-constraint")
CANCEL = Answer(ok=False, error_type="cancel", condition="item-not-found")


def ev(**data):
    return parse_event(data)


def message(mid: str, user: str = "bob@example.org") -> str:
    return (f"<message xmlns='jabber:client' id='{mid}' from='alice@example.org/pc' to='{user}' "
            "type='chat'><body>hi</body></message>")


def enable(engine: Engine, user: str, node: str) -> None:
    session = f"{user}/phone-{node}"
    engine.handle(ev(event="session-bind", session=session))
    engine.handle(ev(event="push-enable", session=session, jid=APP, node=node, secret="s3cret"))


def offline(user: str, mid: str) -> dict:
    return dict(event="message/offline/handle", user=user, stanza=message(mid, user))


class Script:
    """A sender answering per node from a script (then result), optionally slowly."""

    def __init__(self) -> None:
        self.answers: dict[str, deque[Answer]] = defaultdict(deque)
        self.delay: dict[str, float] = {}
        self.sent: list[tuple[str, tuple]] = []

    async def __call__(self, push) -> Answer:
        self.sent.append((push.node, push.stanzas))
        await asyncio.sleep(self.delay.get(push.node, 0))
        queue = self.answers[push.node]
        return queue.popleft() if queue else RESULT


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def setup(config: Config | None = None, policy: RetryPolicy | None = None):
    engine = Engine(config or Config())
    script = Script()
    outcomes: list[Outcome] = []
    dispatcher = Dispatcher(engine, script, policy or RetryPolicy(max_attempts=4),
                            on_outcome=outcomes.append, sleep=no_sleep)
    return engine, script, dispatcher, outcomes


def test_wait_is_retried_and_not_counted_then_result_resets():
    async def main():
        engine, script, dispatcher, outcomes = setup()
        enable(engine, "bob@example.org", "n1")
        reg = engine.registration(("bob@example.org", APP, "n1"))
        script.answers["n1"].extend([CANCEL])
        dispatcher.handle(ev(**offline("bob@example.org", "m0")))
        await dispatcher.drain()
        assert reg.errors == 1
        script.answers["n1"].extend([WAIT, WAIT])
        dispatcher.handle(ev(**offline("bob@example.org", "m1")))
        await dispatcher.drain()
        assert [o.status for o in outcomes] == ["error", "delivered"]
        assert outcomes[1].attempts == 3
        assert script.sent[1:] == [("n1", ("m1",))] * 3
        assert reg.errors == 0 and reg.state == "bound"

    asyncio.run(main())


def test_wait_until_attempts_run_out_gives_up_uncounted():
    async def main():
        engine, script, dispatcher, outcomes = setup()
        enable(engine, "bob@example.org", "n1")
        script.answers["n1"].extend([WAIT] * 10)
        dispatcher.handle(ev(**offline("bob@example.org", "m1")))
        await dispatcher.drain()
        assert [(o.status, o.attempts) for o in outcomes] == [("gave-up", 4)]
        assert engine.registration(("bob@example.org", APP, "n1")).errors == 0

    asyncio.run(main())


def test_timeouts_are_retried_then_one_counted_error():
    async def main():
        engine, script, dispatcher, outcomes = setup()
        enable(engine, "bob@example.org", "n1")
        script.answers["n1"].extend([TIMEOUT, RESULT])
        dispatcher.handle(ev(**offline("bob@example.org", "m1")))
        await dispatcher.drain()
        assert (outcomes[-1].status, outcomes[-1].attempts) == ("delivered", 2)
        script.answers["n1"].extend([TIMEOUT] * 4)
        dispatcher.handle(ev(**offline("bob@example.org", "m2")))
        await dispatcher.drain()
        assert (outcomes[-1].status, outcomes[-1].attempts) == ("error", 4)
        assert engine.registration(("bob@example.org", APP, "n1")).errors == 1

    asyncio.run(main())


def test_counted_errors_disable_and_later_pushes_are_dropped():
    async def main():
        engine, script, dispatcher, outcomes = setup(Config(max_errors=3))
        enable(engine, "bob@example.org", "n1")
        script.answers["n1"].extend([CANCEL] * 3)
        for i in range(5):  # all decided before any answer: the last two meet a disabled reg
            dispatcher.handle(ev(**offline("bob@example.org", f"m{i}")))
        await dispatcher.drain()
        reg = engine.registration(("bob@example.org", APP, "n1"))
        assert reg.state == "disabled"
        assert reg.reason == "max_errors: 3 counted errors in a row, last cancel"
        assert [o.status for o in outcomes] == ["error"] * 3 + ["dropped"] * 2
        assert len(script.sent) == 3
        assert engine.audit_log[-1].action == "disable"

    asyncio.run(main())


def test_order_per_registration_and_a_slow_one_blocks_no_other():
    async def main():
        engine, script, dispatcher, outcomes = setup()
        for n in range(5):
            enable(engine, f"u{n}@example.org", f"n{n}")
        script.delay["n0"] = 0.05
        for i in range(20):
            for n in range(5):
                dispatcher.handle(ev(**offline(f"u{n}@example.org", f"m{i}")))
        await dispatcher.drain()
        assert len(outcomes) == 100 and {o.status for o in outcomes} == {"delivered"}
        for n in range(5):
            ids = [o.push.stanzas[0] for o in outcomes if o.push.node == f"n{n}"]
            assert ids == [f"m{i}" for i in range(20)]
        # every fast registration finished before the slow one's second push was answered
        slow_done = [i for i, o in enumerate(outcomes) if o.push.node == "n0"]
        assert slow_done[1] > max(i for i, o in enumerate(outcomes) if o.push.node != "n0")

    asyncio.run(main())


def test_close_reports_what_was_not_answered():
    async def main():
        engine, script, dispatcher, outcomes = setup()
        enable(engine, "bob@example.org", "n1")
        script.delay["n1"] = 10
        for i in range(3):
            dispatcher.handle(ev(**offline("bob@example.org", f"m{i}")))
        await asyncio.sleep(0.01)
        await dispatcher.close(grace=0.05)
        assert [o.status for o in outcomes] == ["undelivered"] * 3
        dispatcher.submit(engine.handle(ev(**offline("bob@example.org", "late"))))
        assert outcomes[-1].status == "undelivered" and dispatcher.pending == 0

    asyncio.run(main())


def test_max_in_flight_caps_concurrent_publishes():
    async def main():
        engine = Engine(Config())
        busy, peak = 0, 0

        async def send(push) -> Answer:
            nonlocal busy, peak
            busy += 1
            peak = max(peak, busy)
            await asyncio.sleep(0.01)
            busy -= 1
            return RESULT

        outcomes: list[Outcome] = []
        dispatcher = Dispatcher(engine, send, on_outcome=outcomes.append, max_in_flight=3)
        for n in range(10):
            enable(engine, f"u{n}@example.org", f"n{n}")
            dispatcher.handle(ev(**offline(f"u{n}@example.org", "m1")))
        await dispatcher.drain()
        assert len(outcomes) == 10 and peak == 3

    asyncio.run(main())
