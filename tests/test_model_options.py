"""Options the model owns that other parts only execute: the timeout-counting policy the
dispatcher reads, the orphan TTL, and the one definition of "this row pushes"."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pushrules.model.config import Config
from pushrules.model.extract import extract, row_pushes
from pushrules.model.rules import PUSH_RULES
from pushrules.runtime import Engine
from pushrules.runtime.trace import parse_event
from pushrules.runtime.xmpp.dispatcher import Dispatcher, Outcome, RetryPolicy
from pushrules.runtime.xmpp.transport import TIMEOUT

APP = "push.example.net"
BOB = "bob@example.org"


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def _final_timeout(config: Config) -> tuple[list[Outcome], int]:
    """One push whose every send times out: the outcomes and the errors counted."""
    engine = Engine(config)
    session = f"{BOB}/phone"
    engine.handle(parse_event({"event": "session-bind", "session": session}))
    engine.handle(parse_event({"event": "push-enable", "session": session, "jid": APP,
                               "node": "n1"}))
    engine.handle(parse_event({"event": "session-destroyed", "session": session}))
    outcomes: list[Outcome] = []

    async def always_times_out(push):
        return TIMEOUT

    async def main() -> None:
        dispatcher = Dispatcher(engine, always_times_out, RetryPolicy(max_attempts=3),
                                on_outcome=outcomes.append, sleep=_no_sleep)
        stanza = (f"<message xmlns='jabber:client' id='m1' from='alice@example.org/pc' "
                  f"to='{BOB}' type='chat'><body>hi</body></message>")
        dispatcher.handle(parse_event({"event": "message/offline/handle", "user": BOB,
                                       "stanza": stanza}))
        await dispatcher.drain()

    asyncio.run(main())
    return outcomes, engine.registration((BOB, APP, "n1")).errors


def test_a_final_timeout_counts_as_an_error_by_default():
    outcomes, errors = _final_timeout(Config())
    assert [(o.status, o.attempts) for o in outcomes] == [("error", 3)]
    assert errors == 1


def test_the_model_option_makes_a_final_timeout_uncounted():
    config = Config().with_settings({"final_timeout_counts": "false"})
    outcomes, errors = _final_timeout(config)
    assert [(o.status, o.attempts) for o in outcomes] == [("gave-up", 3)]
    assert errors == 0


def test_orphan_ttl_is_an_option_and_never_negative():
    assert Config().orphan_ttl == 0
    assert Config().with_settings({"orphan_ttl": "30"}).orphan_ttl == 30
    with pytest.raises(ValueError, match="orphan_ttl must not be negative"):
        Config().with_settings({"orphan_ttl": "-1"})


def test_options_help_names_every_option():
    shown = Config.options_help()
    for name in Config.__dataclass_fields__:
        assert f"{name} (" in shown


def test_one_definition_of_a_pushing_row():
    ir = extract()
    pushing = [t for m in ir.machines for t in m.transitions if t.pushes]
    assert pushing and all("send_push" in t.actions or (t.rule in PUSH_RULES and t.actions)
                           for t in pushing)
    # The registration's dedup row pushes whatever rule decided it; a session row of rule (a)
    # pushes by handing its stanzas on.
    assert any(t.rule == "dedup" and t.pushes for t in ir.machine("registration").transitions)
    assert any(t.rule == "a/queued" and t.pushes for t in ir.machine("session").transitions)
    # The session rows that hand a stanza to the registration push, as do send_push rows;
    # a push-rule row without actions (rule b for an outgoing copy) does not.
    assert any(t.rule == "b/archive" and not t.pushes for t in ir.machine("registration")
               .transitions)
    assert all(t.pushes == row_pushes(t.rule, t.actions) for m in ir.machines
               for t in m.transitions)


def test_actions_fire_only_the_registration_events_they_declare():
    """ACTION_FIRES (what the diagrams name the contract event behind a registration edge by)
    matches what the action bodies do, over every example trace."""
    import sys

    from replaykit import EXAMPLES, example_config, example_traces

    from pushrules.model.actions import ACTION_FIRES, ACTIONS
    from pushrules.model.world import ImpossibleEvent
    from pushrules.runtime.trace import TraceError, read_trace

    fired: set[tuple[str, str]] = set()

    class Recording(Engine):
        def fire_registration(self, key, event, ctx):
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_name not in ACTIONS:
                frame = frame.f_back
            if frame is not None:
                fired.add((frame.f_code.co_name, event))
            super().fire_registration(key, event, ctx)

    # every example: the top-level ones and contract v2's (examples/v2: the time-based rules'
    # probe that evicts is there, as a store without their times cannot replay it)
    for trace in [*example_traces(), *sorted((EXAMPLES / "v2").glob("*.jsonl"))]:
        engine = Recording(example_config(trace))
        with trace.open("rb") as lines:
            try:
                for item in read_trace(lines):
                    with contextlib.suppress(ImpossibleEvent):
                        engine.handle(item.event)
            except TraceError:
                pass  # the examples of malformed input end there
    # Not in the examples: a session that enables another node unbinds the one it held.
    engine = Recording(Config())
    for data in ({"event": "session-bind", "session": f"{BOB}/phone"},
                 {"event": "push-enable", "session": f"{BOB}/phone", "jid": APP, "node": "n1"},
                 {"event": "push-enable", "session": f"{BOB}/phone", "jid": APP, "node": "n2"}):
        engine.handle(parse_event(data))
    assert fired, "no action fired a registration event"
    for name, event in fired:
        assert event in ACTION_FIRES[name], (name, event)
    declared = {(name, event) for name, events in ACTION_FIRES.items() for event in events}
    assert declared == fired, declared - fired  # every declared one happens in some example
