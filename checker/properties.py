"""The named properties, checked on every explored transition and state (see PROPERTIES.md).

The model part of a state (explore.py) is ``(sessions, registrations, order)`` with
``sessions[i] = (state, bound_registration_or_-1)`` and
``registrations[j] = (state, session_or_-1, errors, pushed_mask)``. Beside it the checker keeps
ghost state per registration, ``(delivered_mask, ghost_errors)``: the stanzas pushed to it since
it was last enabled anew, and the counted errors in a row as the contract defines them, both
kept from the pushes and push-results the checker saw, independently of the model's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .bounded import USER, BoundedWorld

PROPERTIES: dict[str, str] = {
    "no_push_to_active":
        "no push to a registration whose session is active (after the event)",
    "no_loss":
        "every important stanza queued to, or in the queue of, a bound ack_delayed/hibernated "
        "session is pushed to its registration; every important stanza archived for the user "
        "(addressed to them) is pushed to each registration not bound to a live session; every "
        "important stanza stored offline is pushed to every enabled registration",
    "at_most_once":
        "at most one push per (stanza, registration) while the registration stays enabled, "
        "and at most one push per registration and event",
    "never_disabled_or_removed":
        "nothing is pushed to a disabled, removed or never-enabled registration",
    "disable_only_after_max_errors":
        "push-result disables a registration exactly when max_errors counted errors in a row "
        "are reached; the model's error count is that count; nothing else but push-disable and "
        "eviction disables",
    "wait_never_counts":
        "a wait error changes neither the error count nor the registration state",
    "resume_stops_pushes":
        "smacks-hibernation-end pushes nothing and leaves the session active; a stanza queued "
        "to an active session pushes nothing (until the next ack-delay/hibernation)",
    "every_event_handled":
        "every event in every state is taken or rejected with a declared reason, and a "
        "rejected event changes nothing; no other exception",
    "deterministic":
        "at most one row of a machine is enabled for a (state, event)",
    "rule_matches_path":
        "a push's rule is the one of the event's path (a/… for the session event, b/archive, "
        "c/offline); other events push nothing",
    "pushes_only_to_user":
        "pushes go only to existing registrations of the event's user",
    "no_push_unbound":
        "a rule (a) push goes to the registration bound to the event's session; a b/archive "
        "push to a registration not bound to a live session",
    "session_follows_contract":
        "after an accepted session event the session is in the contract's state: bind, "
        "ack-received and hibernation-end -> active, ack-delayed -> ack_delayed, "
        "hibernation-start -> hibernated, destroyed -> offline; other events keep its state",
    "enable_disable_follow_contract":
        "push-enable leaves that registration bound to the enabling session; push-disable "
        "disables exactly the enabled registrations matching jid (and node, when given)",
    "eviction_least_recent":
        "push-enable evicts exactly the least recently enabled registrations beyond "
        "max_devices (recency kept by the checker from the enables it saw)",
    "disable_recorded":
        "every registration an event disables (client, eviction, errors) gets exactly one "
        "entry in the audit trail, and no other entry is written",
    "binding_consistent":
        "a bound registration is bound to exactly one live session and back; an orphaned one "
        "to no live session; a session that is offline holds no registration",
    "max_devices":
        "at most max_devices enabled registrations per user",
    "push_content":
        "a push covers stanzas of its event, in order, and is important iff one of them is",
    "no_dead_state":
        "every reachable state has a successor other than itself, and from every reachable "
        "state a state with every session offline is reachable",
    "no_unreachable_state":
        "every state of both machines occurs in some reachable state",
    "every_transition_covered":
        "every row of both tables is taken by some explored transition",
    "fields_in_domain":
        "every reachable state fits the bounded world: each field stays within the values the "
        "bounds allow (an error count at most max_errors + 1, an owner among the sessions that "
        "enable push, ...); a step out of it is not explored",
    "table_complete":
        "every (state, event) of both machines has rows or a declared rejection, never both",
}

ENABLED = ("bound", "orphaned")
LIVE = ("active", "ack_delayed", "hibernated")
RULE_OF = {"ackd": "a/ack-delayed", "hibs": "a/hibernation-start", "queued": "a/queued",
           "archive": "b/archive", "offline": "c/offline"}


def check_state(model: tuple, max_devices: int) -> list[str]:
    """Invariants of the model part of a state. Reads only the states, bindings and owners
    (compiled.py memoizes it on what it read)."""
    sessions, regs, _ = model
    bad: list[str] = []
    enabled = 0
    consistent = True
    for j in range(len(regs)):
        rstate, owner = regs[j][0], regs[j][1]
        if rstate in ENABLED:
            enabled += 1
        holders = [i for i in range(len(sessions)) if sessions[i][1] == j]
        if rstate == "bound":
            if (len(holders) != 1 or holders[0] != owner
                    or sessions[owner][0] not in LIVE):
                consistent = False
        elif holders or owner != -1:
            consistent = False
    for i in range(len(sessions)):
        binding = sessions[i][1]
        if binding >= 0 and (sessions[i][0] not in LIVE or regs[binding][0] != "bound"):
            consistent = False
    if not consistent:
        bad.append("binding_consistent")
    if enabled > max_devices:
        bad.append("max_devices")
    return bad


SESSION_TARGET = {"bind": "active", "ackr": "active", "hibe": "active", "ackd": "ack_delayed",
                  "hibs": "hibernated", "destroy": "offline"}


def check_transition(world: BoundedWorld, pre: tuple[Sequence, Sequence],
                     post: tuple[Sequence, Sequence], changed: tuple[Iterable[int], Iterable[int]],
                     ghosts: Sequence, recency: Callable[[], tuple], key: tuple, event: Any,
                     pushes: list, max_errors: int, max_devices: int) -> list[str]:
    """Properties of one taken transition: model part ``pre`` (sessions, registrations) with
    ghost state ``ghosts`` and ``recency()`` (enabled registrations, least recently enabled
    first), event, pushes, model part ``post``. ``changed`` holds (at least) the sessions and
    registrations whose part may differ between ``pre`` and ``post``.

    Each check reads only the parts it needs (compiled.py memoizes this function on what it
    read). Who holds a registration is read from its owner field, before and after, and from
    the changed sessions: binding_consistent, checked on every state, makes those the only
    sessions that can hold it."""
    bad: set[str] = set()
    psess, pregs = pre
    qsess, qregs = post
    changed_s, changed_r = changed
    kind = key[0]
    reg_index = world.reg_index
    stanza_index = world.stanza_index
    live_sessions = len(world.sids)
    pushed_to: dict[int, set[str]] = {}
    event_stanzas = _event_stanzas(event)
    by_id = {s.id: s for s in event_stanzas}
    order = [s.id for s in event_stanzas]

    def holders(j: int) -> set[int]:
        """Sessions that may hold registration j before or after the event."""
        found = {i for i in changed_s if psess[i][1] == j or qsess[i][1] == j}
        found |= {o for o in (pregs[j][1], qregs[j][1]) if 0 <= o < live_sessions}
        return found

    def held_live(j: int) -> bool:
        """Registration j is bound to a live session before the event."""
        o = pregs[j][1]
        return 0 <= o < live_sessions and psess[o][1] == j and psess[o][0] in LIVE

    for push in pushes:
        j = reg_index.get((push.user, push.jid, push.node))
        if push.user != USER or j is None or pregs[j][0] == "absent":
            bad.add("pushes_only_to_user")
            if j is None:
                continue
        if pregs[j][0] not in ENABLED:
            bad.add("never_disabled_or_removed")
        if push.rule != RULE_OF.get(kind):
            bad.add("rule_matches_path")
        if j in pushed_to:
            bad.add("at_most_once")
        seen = pushed_to.setdefault(j, set())
        for sid in push.stanzas:
            if sid is None:
                continue
            if sid in seen or (ghosts[j][0] >> stanza_index[sid]) & 1:
                bad.add("at_most_once")
            seen.add(sid)
        if any(qsess[i][0] == "active" for i in holders(j)):
            bad.add("no_push_to_active")
        if kind in ("ackd", "hibs", "queued") and psess[key[1]][1] != j:
            bad.add("no_push_unbound")
        if kind == "archive" and held_live(j):
            bad.add("no_push_unbound")
        if (not push.stanzas or any(sid not in by_id for sid in push.stanzas)
                or [o for o in order if o in push.stanzas] != list(push.stanzas)
                or push.important != any(by_id[sid].important for sid in push.stanzas
                                         if sid in by_id)):
            bad.add("push_content")

    def delivered(j: int, sid: str) -> bool:
        return sid in pushed_to.get(j, ()) or bool((ghosts[j][0] >> stanza_index[sid]) & 1)

    # no loss of important stanzas
    if kind in ("ackd", "hibs", "queued"):
        i = key[1]
        j = psess[i][1]
        woken = kind != "queued" or psess[i][0] in ("ack_delayed", "hibernated")
        if j >= 0 and woken:
            for s in event_stanzas:
                if s.important and s.id is not None and not delivered(j, s.id):
                    bad.add("no_loss")
    elif kind in ("archive", "offline"):
        s = event_stanzas[0]
        if s.important and (kind == "offline" or s.to_bare == USER):
            for j in range(len(world.nodes)):
                if pregs[j][0] not in ENABLED:
                    continue
                if kind == "archive" and held_live(j):
                    continue
                if not delivered(j, s.id):
                    bad.add("no_loss")

    # registrations leave the enabled states only for a reason
    for j in changed_r:
        if pregs[j][0] in ENABLED and qregs[j][0] not in ENABLED:
            allowed = (kind == "disable" or kind == "enable"
                       or (kind == "result" and key[1] == j))
            if not allowed:
                bad.add("disable_only_after_max_errors")
    if kind == "result":
        j, outcome = key[1], key[2]
        before, after = pregs[j], qregs[j]
        if before[0] in ENABLED:
            count = 0 if outcome == "ok" else ghosts[j][1] + (outcome != "wait")
            if (after[0] == "disabled") != (count >= max_errors):
                bad.add("disable_only_after_max_errors")
            if after[0] != "absent" and after[2] != count:
                bad.add("disable_only_after_max_errors")
            if outcome == "wait" and (after[0] != before[0] or after[2] != before[2]):
                bad.add("wait_never_counts")
    if kind in SESSION_TARGET or kind in ("queued", "enable", "disable"):
        i = key[1]
        expected = SESSION_TARGET.get(kind, psess[i][0])
        if qsess[i][0] != expected:
            bad.add("session_follows_contract")
    if kind == "enable":
        i, j = key[1], reg_index[(USER, event.jid, event.node)]
        if qsess[i][1] != j or qregs[j][0] != "bound" or qregs[j][1] != i:
            bad.add("enable_disable_follow_contract")
        newest = [x for x in recency() if x != j] + [j]
        keep = set(newest[max(len(newest) - max_devices, 0):])
        if {x for x in range(len(world.nodes)) if qregs[x][0] in ENABLED} != keep:
            bad.add("eviction_least_recent")
    elif kind == "disable":
        node = event.node
        for j in range(len(world.nodes)):
            before, after = pregs[j], qregs[j]
            matches = (before[0] in ENABLED
                       and (node is None or world.nodes[j] == node))
            if (after[0] in ENABLED) if matches else (after[0] != before[0]):
                bad.add("enable_disable_follow_contract")
    if kind == "hibe" and (pushes or qsess[key[1]][0] != "active"):
        bad.add("resume_stops_pushes")
    if kind == "queued" and psess[key[1]][0] == "active" and pushes:
        bad.add("resume_stops_pushes")
    if kind not in RULE_OF and pushes:
        bad.add("rule_matches_path")
    return sorted(bad)


def _event_stanzas(event: Any) -> tuple:
    queue = getattr(event, "queue", None)
    if queue is not None:
        return tuple(queue)
    stanza = getattr(event, "stanza", None)
    return () if stanza is None else (stanza,)
