"""Random event sequences (hypothesis): the generated runtime and the python-statemachine
reference take the same decisions, and the contract's invariants hold after every event."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replaykit import BOB, DESKTOP, PHONE, PUSH, SECRET, msg, stanza

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.reference import ReferenceWorld
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine

CAROL = "carol@example.org"
SESSIONS = [PHONE, DESKTOP, f"{CAROL}/pc"]
USERS = [BOB, CAROL]
JIDS = [PUSH, "push.other.net"]
NODES = ["n1", "n2", "n3"]
ERRORS = [None, "wait", "cancel", "auth", "modify", "continue"]
LIVE = {"active", "ack_delayed", "hibernated"}

stanzas = st.builds(
    lambda mid, to, body: stanza(msg(mid, body, to=to)),
    st.sampled_from(["m1", "m2", "m3", "m4", None]),
    st.sampled_from([BOB, f"{BOB}/phone", CAROL, "alice@example.org"]),
    st.sampled_from(["hi", None]),
)
queues = st.lists(stanzas, max_size=3).map(tuple)
session = st.sampled_from(SESSIONS)
WEIGHTS = {  # how often each event is drawn: stanzas and the push paths more than lifecycle
    "session-bind": 2, "push-enable": 2, "push-disable": 1, "smacks-ack-delayed": 2,
    "smacks-ack-received": 1, "smacks-hibernation-start": 2, "smacks-hibernation-end": 1,
    "stanza-queued": 4, "session-destroyed": 2, "archive-message-added": 3,
    "message/offline/handle": 3, "push-result": 2,
}
BY_NAME = {
    "session-bind": st.builds(EV["session-bind"], session=session),
    "push-enable": st.builds(EV["push-enable"], session=session, jid=st.sampled_from(JIDS),
                             node=st.sampled_from(NODES), secret=st.just(SECRET)),
    "push-disable": st.builds(EV["push-disable"], session=session, jid=st.sampled_from(JIDS),
                              node=st.sampled_from([*NODES, None])),
    "smacks-ack-delayed": st.builds(EV["smacks-ack-delayed"], session=session, queue=queues),
    "smacks-ack-received": st.builds(EV["smacks-ack-received"], session=session),
    "smacks-hibernation-start": st.builds(EV["smacks-hibernation-start"], session=session,
                                          queue=queues),
    "smacks-hibernation-end": st.builds(EV["smacks-hibernation-end"], session=session),
    "stanza-queued": st.builds(EV["stanza-queued"], session=session, stanza=stanzas),
    "session-destroyed": st.builds(EV["session-destroyed"], session=session),
    "archive-message-added": st.builds(  # mostly addressed to for_user, as MAM archives them
        lambda user, mid, own: EV["archive-message-added"](
            for_user=user, stanza=stanza(msg(mid, to=user if own else "alice@example.org"))),
        st.sampled_from(USERS), st.sampled_from(["m1", "m2", "m3", "m4", None]),
        st.booleans() | st.just(True)),
    "message/offline/handle": st.builds(EV["message/offline/handle"],
                                        user=st.sampled_from(USERS), stanza=stanzas),
    "push-result": st.builds(EV["push-result"], user=st.sampled_from(USERS),
                             jid=st.sampled_from(JIDS), node=st.sampled_from(NODES),
                             ok=st.booleans(), error_type=st.sampled_from(ERRORS)),
}
events = st.sampled_from([n for n, w in WEIGHTS.items() for _ in range(w)]).flatmap(
    BY_NAME.__getitem__)
# Every trace starts with each session bound and most of them enabled, so that the random part
# mostly exercises possible events (uniformly random events are nearly all impossible).
prologues = st.lists(st.tuples(st.sampled_from(JIDS), st.sampled_from(NODES)),
                     min_size=len(SESSIONS), max_size=len(SESSIONS)).map(
    lambda regs: [e for s, (jid, node) in zip(SESSIONS, regs, strict=True)
                  for e in (EV["session-bind"](session=s),
                            EV["push-enable"](session=s, jid=jid, node=node, secret=SECRET))])
traces = st.builds(lambda head, tail: head + tail, prologues, st.lists(events, max_size=60))
configs = st.builds(lambda e, d: Config(max_errors=e, max_devices=d),
                    st.integers(1, 3), st.integers(1, 3))


def _step(world, event) -> list[str] | str:
    try:
        return [json.dumps(p.to_json()) for p in world.handle(event)]
    except ImpossibleEvent as exc:
        return f"impossible: {exc}"


def _state(world) -> tuple:
    sessions = sorted((s.sid, s.state, s.binding) for s in world.sessions.values())
    regs = sorted((r.key, r.state, r.session, r.errors, r.reason, tuple(r.pushed))
                  for regs in world.users.values() for r in regs.values())
    return sessions, regs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, trace=traces)
def test_engine_and_reference_agree(config: Config, trace: list) -> None:
    engine, reference = Engine(config, clock=lambda: 0.0), ReferenceWorld(config, clock=lambda: 0.0)
    for event in trace:
        assert _step(engine, event) == _step(reference, event), event
        assert _state(engine) == _state(reference), event


def _check_invariants(world: Engine, event, pushes, before: dict, seen: dict) -> None:
    config = world.config
    for sid, record in world.sessions.items():
        assert record.state in LIVE, sid
        if record.binding is not None:  # a session holds at most one, bound to it alone
            reg = world.registration(record.binding)
            assert (reg.state, reg.session) == ("bound", sid)
    for user, regs in world.users.items():
        enabled = [r for r in regs.values() if r.state in ("bound", "orphaned")]
        assert len(enabled) <= config.max_devices, user
        for reg in regs.values():
            if reg.state == "bound":
                assert world.sessions[reg.session].binding == reg.key
            else:
                assert reg.session is None
            if reg.state == "disabled":
                assert reg.reason
    for push in pushes:
        reg = world.registration((push.user, push.jid, push.node))
        assert reg.state != "disabled", "a disabled registration is never pushed to"
        assert SECRET not in json.dumps(push.to_json())
        ids = [i for i in push.stanzas if i is not None]
        key = reg.key
        assert not set(ids) & seen.setdefault(key, set()), "pushed twice to one registration"
        seen[key].update(ids)
        was = before.get(key)
        if push.rule.startswith("a/"):
            assert event.session.split("/")[0] == push.user
            assert was is not None and was[0] == "bound" and was[1] == event.session
        elif push.rule == "b/archive":
            assert was is not None and was[0] == "orphaned", "b skips live-bound registrations"
        else:
            assert push.rule == "c/offline" and was is not None and was[0] != "disabled"
    for regs in world.users.values():
        for reg in regs.values():
            if reg.state == "disabled":
                seen.pop(reg.key, None)  # re-enabled later, it is a new registration


@settings(max_examples=300, deadline=None)
@given(config=configs, trace=traces)
def test_contract_invariants(config: Config, trace: list) -> None:
    world = Engine(config, clock=lambda: 0.0)
    seen: dict = {}
    for event in trace:
        before = {r.key: (r.state, r.session) for regs in world.users.values()
                  for r in regs.values()}
        snapshot = _state(world)
        try:
            pushes = world.handle(event)
        except ImpossibleEvent:
            assert _state(world) == snapshot, "an impossible event changed something"
            continue
        _check_invariants(world, event, pushes, before, seen)
