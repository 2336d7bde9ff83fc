"""The version-2 properties (contract v2: calls, CSI, chat settings, echo, remote disable),
registered in properties.py's registry. Each holds trivially outside a v2 world
(``Bounds.v2``), so a version-1 exploration reads nothing more.

They read the contract's facts of each stanza from the bounded world (``world.facts_of``: the
checker wrote the XML, so it knows which stanza is a groupchat, a mention, an echo, a call's
proposal or end) and the checker's own records, kept from the events it saw: the ghost fields
``rang`` (the call's proposal was pushed to the registration since it was last enabled),
``remote`` (push-remote-disable since it was last enabled), each session's CSI state
(``step.session_ghosts[i].csi``) and the user's setting for the room (``step.setting()``).
None reads the model's classification or its stored settings, so a model that stores or
applies them wrongly is caught.
"""

from __future__ import annotations

from typing import Any

from .properties import (
    FAN_OUT_PATHS,
    Step,
    disable_misses_its_target,
    held_back,
    held_now,
    probe_due,
    transition_property,
)

CALL_PATHS = (*FAN_OUT_PATHS, "queued")
"""Event kinds on which rule e fans a call stanza out (the contract's four events)."""


def _v2(step: Step) -> bool:
    return step.world.bounds.v2


def _call(step: Step, kind: str, outgoing: bool = False) -> Any:
    """The event's stanza when it is a call stanza of ``kind`` on rule e's events, incoming
    (or with ``outgoing``, the user's own archived copy), or None."""
    if not _v2(step) or step.kind not in CALL_PATHS:
        return None
    stanza = step.stanzas[0]
    facts = step.world.facts_of[stanza]
    return stanza if facts.call == kind and facts.outgoing == outgoing else None


def _rings_itself(step: Step, j: int) -> bool:
    """Registration j is bound to a session that is active and CSI-active (before the event):
    the open app rings the call itself (with time, a retried registration rings: the contract
    counts the session it was bound to for rule a only)."""
    o = step.pre_regs[j].owner  # a retried registration: none ("were it enabled" is rule a's)
    if not 0 <= o < len(step.world.sids):
        return False
    session = step.pre_sessions[o]
    return (session.binding == j and session.state == "active"
            and bool(step.session_ghosts[o].csi))


def _pushes_of(step: Step, sid: str) -> list[tuple[int, Any]]:
    """(registration, push) of every push of this event covering stanza ``sid``."""
    return [(j, p) for j, p in step.known_pushes() if sid in p.stanzas]


@transition_property
def no_missed_ring(step: Step) -> bool:
    """A call proposal not pushed (now or before) to an enabled registration that is not bound
    to an active, CSI-active session; a push of it by rule e that is not urgent; a push of
    the user's own outgoing proposal (the caller's devices do not ring)."""
    own = _call(step, "propose", outgoing=True)
    if own is not None:  # the user's own call (an archived copy) rings none of its devices
        return bool(_pushes_of(step, own.id))
    call = _call(step, "propose")
    if call is None:
        return False
    for j in range(len(step.world.nodes)):
        due = step.enabled_before(j) or probe_due(step, j)  # time: a probe due rings too
        if due and not _rings_itself(step, j) \
                and not step.reached(j, call) and not held_now(step, j, call):
            return True
    return any(p.rule == "e/call" and not p.urgent for _, p in _pushes_of(step, call.id))


@transition_property
def call_end_only_where_rung(step: Step) -> bool:
    """A call's end pushed to a registration its proposal was not pushed to, or pushed
    urgent; an enabled registration that was rung and does not get the end (unless it had
    it already: dedup)."""
    if not _v2(step):
        return False
    call = _call(step, "end")
    for j, push in step.known_pushes():
        # rule e's push, or the end pushed on rule e's events by another rule (a smacks queue
        # is pushed as it is by rule a: a contract question, see PROPERTIES.md)
        ends = push.rule == "e/call-end" or (call is not None and call.id in push.stanzas)
        if ends and (not step.ghosts[j].rang or push.urgent or push.rule != "e/call-end"):
            return True
    if call is None:
        return False
    return any((step.enabled_before(j) or probe_due(step, j)) and step.ghosts[j].rang
               and not step.reached(j, call) and not held_now(step, j, call)
               for j in range(len(step.world.nodes)))


def _held(step: Step, why: str) -> bool:
    """A push covering a stanza of the event that the contract holds back for ``why``."""
    if not _v2(step):
        return False
    by_id = {s.id: s for s in step.stanzas if s.id is not None}
    idless = [s for s in step.stanzas if s.id is None]
    if len(idless) == 1:  # a push's None is that stanza (a fan-out event brings one)
        by_id[None] = idless[0]
    return any(sid in by_id and held_back(step, by_id[sid]) == why
               for _, push in step.known_pushes() for sid in push.stanzas)


@transition_property
def chat_settings_respected(step: Step) -> bool:
    """A push of a stanza that the user's setting for its chat keeps back (never, or
    on-mention and no mention of the user); calls ignore settings."""
    return _held(step, "setting")


@transition_property
def echo_never_pushed(step: Step) -> bool:
    """A push of the room's echo of the user's own message."""
    return _held(step, "echo")


@transition_property
def remote_disabled_never_pushed(step: Step) -> bool:
    """A push to a registration the push service disabled since it was last enabled; a
    remote disable that leaves its registration enabled or changes another one."""
    if not _v2(step):
        return False
    if step.kind == "remote" and disable_misses_its_target(step):
        return True
    return any(step.ghosts[j].remote for j, _ in step.known_pushes())


@transition_property
def urgent_only_for_calls(step: Step) -> bool:
    """An urgent push whose rule is not e/call, or an e/call push that is not urgent."""
    if not _v2(step):
        return False
    return any(bool(p.urgent) != (p.rule == "e/call") for _, p in step.known_pushes())
