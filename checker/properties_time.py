"""The time-based rules' properties (contract v2 part 2: burst_window, orphan_ttl, retry_after),
registered in properties.py's registry. Each holds trivially outside a time world
(``Bounds.time``), so the other bounds read nothing more.

Each is its own small spec over one step. They read the checker's own records, kept from the
pushes, push-results and clock events it saw (the ghost fields ``window``, ``retried`` and
``probe_ok``: environment.py ``time_ghost_writes``), the stanzas the model holds for a
registration before and after the step (its record: what it holds is the model's decision, and
what these specs check is that nothing held is lost), and, for a held stanza that the model
drops, the reason its notes give, which the spec confirms against the state after the step.
``expired_never_pushed`` (properties.py) is the orphan TTL's.
"""

from __future__ import annotations

import re

from .parts import LIVE
from .properties import Step, held_rule, transition_property

_DROPPED = re.compile(r"^(?P<jid>\S+) (?P<node>\S+): held (?P<sid>\S+) dropped when due: "
                      r"(?P<why>.*) \[burst/flush\]$")
_DISCARDED = re.compile(r"^(?P<jid>\S+) (?P<node>\S+): held (?P<sids>.+) discarded "
                        r"\[burst/hold\]$")
_ACTIVE_AGAIN = re.compile(r"^its session (?P<sid>\S+) is active again \(rule a\)$")
_BOUND_LIVE = re.compile(r"^bound to the live session (?P<sid>\S+) \(rule b\)$")


def _time(step: Step) -> bool:
    return step.world.bounds.time


def _own(step: Step, j: int) -> bool:
    """The step is a clock event of registration j."""
    return len(step.key) > 1 and step.key[1] == j and step.kind in ("flush", "window",
                                                                     "retry", "expire")


def _session_state(step: Step, sid: str) -> str | None:
    i = step.world.session_index.get(sid)
    if i is None or i >= len(step.world.sids):
        return None
    return str(step.post_sessions[i].state)


def _dropped_for_a_reason(step: Step, j: int, sid: str, rule: str) -> bool:
    """The model's notes drop held stanza ``sid`` of registration j for a reason the state
    after the step confirms: a rule-a stanza whose session is active again, a rule-b stanza
    of a registration bound to a live session, or every held stanza of a registration that is
    no longer enabled (discarded)."""
    node = step.world.nodes[j]
    for note in step.notes:
        found = _DROPPED.match(note)
        if found and found["node"] == node and found["sid"] == sid:
            why = found["why"]
            if (m := _ACTIVE_AGAIN.match(why)) and rule.startswith("a/"):
                return _session_state(step, m["sid"]) == "active"
            if (m := _BOUND_LIVE.match(why)) and rule == "b/archive":
                return _session_state(step, m["sid"]) in LIVE
            return False
        found = _DISCARDED.match(note)
        if found and found["node"] == node and sid in found["sids"].split(", "):
            return not step.enabled_after(j)
    return False


def _held_wrongly(step: Step, j: int, new: list[tuple[int, str]]) -> bool:
    """Stanzas newly held for j that should not have been: not of this event, urgent, to a
    registration not enabled, or with the burst window closed."""
    if not new:
        return False
    ids = {step.world.stanza_index[s.id] for s in step.stanzas if s.id is not None}
    return (not step.enabled_before(j) or not step.ghosts[j].window or step.kind == "flush"
            or any(k not in ids or rule == "e/call" for k, rule in new))


@transition_property
def held_stanza_sent(step: Step) -> bool:
    """A stanza held wrongly, or gone from the held ones neither pushed nor dropped for a
    confirmed reason; something left held after the registration's flush; held stanzas with
    no flush due."""
    if not _time(step):
        return False
    stanzas = step.world.stanzas
    for j in step.changed_regs:
        pre, post = step.pre_regs[j], step.post_regs[j]
        if not pre.hold and not post.hold and step.kind != "flush":
            if post.held_any():
                return True  # held for ever: no flush comes due
            continue  # nothing held before or after (a flush is due exactly while held)
        before, after = tuple(pre.held), tuple(post.held)
        if bool(after) != bool(post.hold):
            return True  # held for ever (no flush comes due), or a flush of nothing
        if step.kind == "flush" and _own(step, j) and after:
            return True
        kept = {k for k, _ in after}
        pushed = step.pushed_to().get(j, set())
        for k, rule in before:
            sid = stanzas[k].id
            if k in kept or sid in pushed:
                continue
            if sid is None or not _dropped_for_a_reason(step, j, sid, rule):
                return True
        was = {k for k, _ in before}
        if _held_wrongly(step, j, [(k, rule) for k, rule in after if k not in was]):
            return True
    return False


@transition_property
def one_push_per_window(step: Step) -> bool:
    """A push that is not urgent, not a probe and not the flush at the window's end, to a
    registration whose burst window (since its last push) is still open."""
    if not _time(step):
        return False
    return any(not p.urgent and step.enabled_before(j) and not (step.kind == "flush"
                                                               and _own(step, j))
               and step.ghosts[j].window for j, p in step.known_pushes())


@transition_property
def flush_rechecks_rules(step: Step) -> bool:
    """At a flush: a held rule-a stanza pushed to a registration whose session is active, a
    rule-b stanza pushed to one bound to a live session, or a push to one not enabled."""
    if not _time(step) or step.kind != "flush":
        return False
    for j, push in step.known_pushes():
        if not step.enabled_before(j):
            return True
        owner = step.pre_regs[j].owner
        session = step.pre_sessions[owner] if 0 <= owner < len(step.world.sids) else None
        for sid in push.stanzas:
            rule = held_rule(step, j, sid)
            if rule is None:
                return True  # pushed at its flush but never held
            if session is not None and session.binding == j and (
                    (rule.startswith("a/") and session.state == "active")
                    or (rule == "b/archive" and session.state in LIVE)):
                return True
    return False


@transition_property
def probe_once_per_retry(step: Step) -> bool:
    """A probe (a push to a registration not enabled) of more than one stanza, a second one
    in the step, or one to a registration not retried or whose retry has not come due since
    it was disabled or last probed; a retry coming due for a registration not retried; a
    disable for counted errors, or a failed probe, after which no retry is due (the wait
    starts over: the model's record says a retry is ahead)."""
    if not _time(step):
        return False
    if step.kind == "retry" and not step.ghosts[step.key[1]].retried:
        return True
    if step.kind == "result" and step.key[2] not in ("ok", "wait"):
        j = step.key[1]
        retried = step.enabled_before(j) or step.ghosts[j].retried
        if retried and not step.enabled_after(j) and not step.post_regs[j].retry:
            return True  # disabled for counted errors (or a failed probe): no retry is due
    probed: set[int] = set()
    for j, push in step.known_pushes():
        if step.enabled_before(j):
            continue
        ghost = step.ghosts[j]
        if len(push.stanzas) != 1 or j in probed or not ghost.retried or not ghost.probe_ok:
            return True
        probed.add(j)
    return False
