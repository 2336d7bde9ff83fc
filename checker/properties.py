"""The named properties, checked on every explored transition and state (see PROPERTIES.md).

``PROPERTIES`` names and documents all of them. Those decided by one transition are small
functions in ``TRANSITION_PROPERTIES``, those decided by one state in ``STATE_PROPERTIES``
(registered with ``@transition_property`` / ``@state_property``, as model/guards.py registers
guards); each returns True when the property is violated. The others are decided by the
explorers: ``every_event_handled``, ``deterministic``, ``disable_recorded`` (from the step
itself), ``fields_in_domain`` (the packed layout), the coverage and graph properties.

They read the records of a state by name (checker/parts.py): a session's ``state`` and
``binding``, a registration's ``state``, ``owner``, ``errors`` and ``pushed``, and the
checker's ghost fields of a registration, ``delivered`` (the stanzas pushed to it since it was
last enabled anew) and ``errors`` (the counted errors in a row as the contract defines them),
both kept from the pushes and push-results the checker saw, independently of the model.

Each reads only what it needs, and only when it applies: compiled.py memoizes the properties on
the fields they read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bounded import CHAT_SETTINGS, ROOM, USER, BoundedWorld
from .parts import ENABLED, LIVE

PROPERTIES: dict[str, str] = {
    "no_push_to_active":
        "no push to a registration whose session is active (after the event); v2: rule d "
        "(the bare JID reaches no session) and a call's end excepted, rule e only to a "
        "session that is not also CSI-active",
    "no_loss":
        "every important stanza queued to, or in the queue of, a bound ack_delayed/hibernated "
        "session is pushed to its registration; every important stanza archived for the user "
        "(addressed to them) is pushed to each registration not bound to a live session; every "
        "important stanza stored offline is pushed to every enabled registration (with time: "
        "or held for it; and a registration whose probe is due gets one of them as its probe)",
    "at_most_once":
        "at most one push per (stanza, registration) while the registration stays enabled, "
        "and at most one push per registration and event",
    "never_disabled_or_removed":
        "nothing is pushed to a disabled, removed or never-enabled registration",
    "disable_only_after_max_errors":
        "push-result disables a registration exactly when max_errors counted errors in a row "
        "are reached; the model's error count is that count; nothing else but push-disable, "
        "eviction and (with --expiry) the registration's own expire disables",
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
    "no_missed_ring":
        "v2: a call proposal (on stanza-queued, archive, offline or groupchat) is pushed to "
        "every enabled registration not bound to an active, CSI-active session, urgent "
        "(rule e/call; to the queued session's own registration rule a may push it); the "
        "user's own archived proposal rings none of its devices",
    "call_end_only_where_rung":
        "v2: a call's end (retract, reject) is pushed, not urgent, to exactly the enabled "
        "registrations its proposal was pushed to since they were enabled, and nowhere else",
    "chat_settings_respected":
        "v2: nothing but a call is pushed from a chat whose setting is never, nor a stanza "
        "that does not mention the user from a chat that is on-mention (settings as the "
        "checker saw the chat-settings events; groupchat_default without one)",
    "echo_never_pushed":
        "v2: the room's echo of the user's own message (from room/nick, the nick of the "
        "user's setting for the room) is never pushed",
    "remote_disabled_never_pushed":
        "v2: nothing is pushed to a registration the push service disabled "
        "(push-remote-disable) until a push-enable enables it again; the remote disable "
        "leaves it not enabled and changes no other registration",
    "urgent_only_for_calls":
        "v2: a push is urgent exactly when its rule is e/call",
    "expired_never_pushed":
        "with --expiry (and --time): nothing is pushed to a registration that expired (took "
        "expire) until a push-enable enables it again; expire disables exactly its "
        "registration",
    "held_stanza_sent":
        "time: coalescing loses no stanza: a stanza is held only from the event that brought "
        "it, while the registration's burst window is open, not urgent; each held stanza "
        "leaves the held ones only by being pushed to it or dropped for a reason the model "
        "gives and the state confirms (its rule-a session active again, rule b's registration "
        "bound to a live session, or the registration disabled); a flush resolves them all; "
        "held stanzas always have a flush due",
    "one_push_per_window":
        "time: at most one push per registration per burst window besides urgent ones (and "
        "probes): no push goes to a registration within the window of its last push, but the "
        "flush at the window's end (windows as the checker saw the pushes and the clock)",
    "flush_rechecks_rules":
        "time: at a flush no held rule-a stanza is pushed to a registration whose session is "
        "active, no rule-b stanza to one bound to a live session, and nothing to one that is "
        "not enabled",
    "probe_once_per_retry":
        "time: a push to a registration that is not enabled is a probe: of one stanza, only "
        "to a registration disabled for counted errors whose retry came due (or whose probe "
        "was answered wait) since it was disabled or last probed; a retry comes due only for "
        "such a registration; a disable for counted errors or a failed probe starts the wait "
        "for the next retry",
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

RULE_OF = {"ackd": "a/ack-delayed", "hibs": "a/hibernation-start", "queued": "a/queued",
           "archive": "b/archive", "offline": "c/offline", "groupchat": "d/groupchat"}
"""The push rule of each event kind's path; other events push nothing."""
SESSION_TARGET = {"bind": "active", "ackr": "active", "hibe": "active", "ackd": "ack_delayed",
                  "hibs": "hibernated", "destroy": "offline"}
"""The session state the contract puts a session in after each session event kind."""
FAN_OUT_PATHS = ("archive", "offline", "groupchat")
"""Event kinds whose stanza fans out to the user's registrations (rules b, c, d)."""
RULE_A = ("ackd", "hibs", "queued")
"""Event kinds of rule (a): the session's registration is pushed."""
OWN_DISABLE = ("result", "expire", "remote")
"""Event kinds (kind, registration) that may disable their own registration."""


# --- state properties ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class State:
    """The model part of a state as the state properties see it."""

    sessions: Sequence[Any]
    regs: Sequence[Any]
    max_devices: int


StateProperty = Callable[[State], bool]
STATE_PROPERTIES: dict[str, StateProperty] = {}


EXPLORER_PROPERTIES = ("every_event_handled", "deterministic", "disable_recorded",
                       "fields_in_domain", "no_dead_state", "no_unreachable_state",
                       "every_transition_covered", "table_complete")
"""The properties the explorers decide themselves (the step's outcome, layout, coverage,
the state graph)."""


def state_property(fn: StateProperty) -> StateProperty:
    """Register ``fn`` (True when violated) as the state property of its name."""
    assert fn.__name__ in PROPERTIES, fn.__name__
    STATE_PROPERTIES[fn.__name__] = fn
    return fn


@state_property
def binding_consistent(st: State) -> bool:
    """A bound registration is held by exactly its owner, a live session; any other by none."""
    sessions, regs = st.sessions, st.regs
    for j in range(len(regs)):
        reg = regs[j]
        rstate, owner = reg.state, reg.owner
        holders = [i for i in range(len(sessions)) if sessions[i].binding == j]
        if rstate == "bound":
            if len(holders) != 1 or holders[0] != owner or sessions[owner].state not in LIVE:
                return True
        elif owner != -1 or holders != _probing_holder(reg, sessions):
            return True
    for i in range(len(sessions)):
        binding = sessions[i].binding
        if binding >= 0 and (sessions[i].state not in LIVE or (
                regs[binding].state != "bound" and regs[binding].probe_owner != i)):
            return True
    return False


def _probing_holder(reg: Any, sessions: Sequence[Any]) -> list[int]:
    """The sessions that may hold a registration that is not bound: with time, a registration
    disabled for counted errors stays held by the live session it was bound to, whose
    stanzas can probe it (``probe_owner``, a constant -1 outside the time bound)."""
    i = reg.probe_owner if reg.state == "disabled" else -1
    return [i] if i >= 0 and sessions[i].state in LIVE else []


@state_property
def max_devices(st: State) -> bool:
    """More registrations enabled than max_devices allows."""
    return sum(1 for j in range(len(st.regs)) if st.regs[j].state in ENABLED) > st.max_devices


def check_state(model: tuple[Any, ...], max_devices: int) -> list[str]:
    """The state properties violated by the model part ``(sessions, registrations, _)``."""
    st = State(model[0], model[1], max_devices)
    return [name for name, violated in STATE_PROPERTIES.items() if violated(st)]


# --- transition properties -----------------------------------------------------------------

@dataclass(slots=True)
class Step:
    """One taken transition as the transition properties see it: the model part before
    (``pre_sessions``, ``pre_regs``) and after (``post_*``), the sessions and registrations
    whose part may differ (at least), the checker's ghost fields before (``ghosts``) and
    ``recency()`` (enabled registrations, least recently enabled first), the event key and
    event, and the pushes decided."""

    world: BoundedWorld
    pre_sessions: Sequence[Any]
    pre_regs: Sequence[Any]
    post_sessions: Sequence[Any]
    post_regs: Sequence[Any]
    changed_sessions: Iterable[int]
    changed_regs: Iterable[int]
    ghosts: Sequence[Any]
    recency: Callable[[], tuple[Any, ...]]
    key: tuple[Any, ...]
    event: Any
    pushes: list[Any]
    max_errors: int
    max_devices: int
    session_ghosts: Any = ()
    """v2: the checker's record of each session (its CSI state as the events gave it)."""
    setting: Callable[[], int] = lambda: 0
    """v2: the checker's record of the user's setting for the room (0: none, else 1 + its
    index in bounded.CHAT_SETTINGS)."""
    notes: tuple[str, ...] = ()
    """time: what the model said about the step (its --explain notes): why a held stanza was
    dropped."""
    stanzas: tuple[Any, ...] = field(init=False)
    kind: str = field(init=False)
    _targets: list[int | None] | None = field(init=False, default=None)
    _known: list[tuple[int, Any]] | None = field(init=False, default=None)
    _pushed_to: dict[int, set[str]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.stanzas = _event_stanzas(self.event)
        self.kind = self.key[0]

    def targets(self) -> list[int | None]:
        """Per push, the index of the registration it goes to (None: not one of the world's)."""
        if self._targets is None:
            index = self.world.reg_index
            self._targets = [index.get((p.user, p.jid, p.node)) for p in self.pushes]
        return self._targets

    def known_pushes(self) -> list[tuple[int, Any]]:
        """(registration index, push) of each push to a registration of the world."""
        if self._known is None:
            self._known = [(j, p) for j, p in zip(self.targets(), self.pushes, strict=True)
                           if j is not None]
        return self._known

    def pushed_to(self) -> dict[int, set[str]]:
        """Per registration pushed by this event, the stanza ids pushed to it."""
        if self._pushed_to is None:
            out: dict[int, set[str]] = {}
            for j, push in self.known_pushes():
                out.setdefault(j, set()).update(s for s in push.stanzas if s is not None)
            self._pushed_to = out
        return self._pushed_to

    def delivered_before(self, j: int, sid: str) -> bool:
        """Stanza ``sid`` was pushed to registration j since it was last enabled anew."""
        return bool(self.ghosts[j].delivered_has(self.world.stanza_index[sid]))

    def delivered(self, j: int, sid: str) -> bool:
        """... before, or by this event."""
        return sid in self.pushed_to().get(j, ()) or self.delivered_before(j, sid)

    def reached(self, j: int, stanza: Any) -> bool:
        """The event's ``stanza`` was pushed to registration j, now or before (by its id); one
        without an id (never deduplicated): by a push of this event covering a stanza
        without an id (the fan-out events bring one stanza)."""
        if stanza.id is not None:
            return self.delivered(j, stanza.id)
        return any(k == j and None in p.stanzas for k, p in self.known_pushes())

    def holders(self, j: int) -> set[int]:
        """Sessions that may hold registration j before or after the event: its owner
        before and after, and the changed sessions bound to it (binding_consistent, checked
        on every state, makes those the only sessions that can hold it)."""
        pre, post = self.pre_sessions, self.post_sessions
        found = {i for i in self.changed_sessions if pre[i].binding == j or post[i].binding == j}
        live = len(self.world.sids)
        found |= {o for o in (self.pre_regs[j].owner, self.post_regs[j].owner) if 0 <= o < live}
        return found

    def held_live(self, j: int) -> bool:
        """Registration j is bound to a live session before the event."""
        o = self.pre_regs[j].owner
        if not 0 <= o < len(self.world.sids):
            return False
        session = self.pre_sessions[o]
        return session.binding == j and session.state in LIVE

    def enabled_before(self, j: int) -> bool:
        return self.pre_regs[j].state in ENABLED

    def enabled_after(self, j: int) -> bool:
        return self.post_regs[j].state in ENABLED


TransitionProperty = Callable[[Step], bool]
TRANSITION_PROPERTIES: dict[str, TransitionProperty] = {}


def transition_property(fn: TransitionProperty) -> TransitionProperty:
    """Register ``fn`` (True when violated) as the transition property of its name."""
    assert fn.__name__ in PROPERTIES, fn.__name__
    TRANSITION_PROPERTIES[fn.__name__] = fn
    return fn


@transition_property
def pushes_only_to_user(step: Step) -> bool:
    """A push to another user, or to a registration that does not exist."""
    return any(p.user != USER or j is None or step.pre_regs[j].state == "absent"
               for j, p in zip(step.targets(), step.pushes, strict=True))


@transition_property
def never_disabled_or_removed(step: Step) -> bool:
    """A push to a registration that was not enabled (with time: a registration the contract
    retries may be probed, probe_once_per_retry says when)."""
    time = step.world.bounds.time
    return any(not step.enabled_before(j) and not (time and step.ghosts[j].probe_ok)
               for j, _ in step.known_pushes())


@transition_property
def rule_matches_path(step: Step) -> bool:
    """A push whose rule is not its event's path, or a push from an event with no path."""
    rule = RULE_OF.get(step.kind)
    if step.kind == "flush":  # the coalesced push goes by the rule of its first stanza
        return any(j != step.key[1] or held_rule(step, j, p.stanzas[0]) != p.rule
                   for j, p in step.known_pushes())
    if rule is None:
        return bool(step.pushes)
    return any(p.rule not in allowed_rules(step, rule, j) for j, p in step.known_pushes())


@transition_property
def at_most_once(step: Step) -> bool:
    """Two pushes to one registration in one event, or a stanza pushed to it again."""
    seen: dict[int, set[str]] = {}
    for j, push in step.known_pushes():
        if j in seen:
            return True
        sent = seen[j] = set()
        for sid in push.stanzas:
            if sid is None:
                continue
            if sid in sent or step.delivered_before(j, sid):
                return True
            sent.add(sid)
    return False


@transition_property
def no_push_to_active(step: Step) -> bool:
    """A push to a registration held by a session that is active after the event (v2: a
    groupchat to the bare JID reaches no session, so rule d pushes every registration; rule e
    rings one unless the session is also CSI-active; a call's end goes where the call went)."""
    post = step.post_sessions
    for j, push in step.known_pushes():
        if push.rule in ("d/groupchat", "e/call-end"):
            continue
        if not step.enabled_before(j):
            continue  # time: a probe; "were it enabled" counts its session for rule a only
        if step.kind == "flush" and push.rule == "c/offline":
            continue  # held: the contract re-checks rules a and b only (flush_rechecks_rules)
        call = push.rule == "e/call"
        if any(post[i].state == "active" and (not call or step.session_ghosts[i].csi)
               for i in step.holders(j)):
            return True
    return False


@transition_property
def no_push_unbound(step: Step) -> bool:
    """A rule (a) push to another registration than the session's; a b/archive push to a
    registration bound to a live session."""
    kind = step.kind
    for j, push in step.known_pushes():
        rule = push.rule  # (v2: rule e's pushes on these events are no_missed_ring's)
        if kind in RULE_A and rule.startswith("a/") \
                and step.pre_sessions[step.key[1]].binding != j:
            return True
        if kind == "archive" and rule == "b/archive" and step.held_live(j):
            return True
    return False


@transition_property
def push_content(step: Step) -> bool:
    """A push with no stanza, a stanza not of its event, out of order, or an importance
    that is not whether one of its stanzas is important."""
    stanzas_of = step.stanzas
    if step.kind == "flush":  # a flush pushes the stanzas held for it, in order
        stanzas_of = tuple(step.world.stanzas[k] for k, _ in step.pre_regs[step.key[1]].held)
    by_id = {s.id: s for s in stanzas_of}
    order = [s.id for s in stanzas_of]
    for _, push in step.known_pushes():
        stanzas = push.stanzas
        if (not stanzas or any(sid not in by_id for sid in stanzas)
                or [o for o in order if o in stanzas] != list(stanzas)
                or push.important != any(by_id[sid].important for sid in stanzas
                                         if sid in by_id)):
            return True
    return False


@transition_property
def no_loss(step: Step) -> bool:
    """An important stanza that the event's path must push and that was not pushed."""
    kind = step.kind
    if kind in RULE_A:
        return _session_loses(step)
    if kind in FAN_OUT_PATHS:
        return _fan_out_loses(step)
    return False


def _session_loses(step: Step) -> bool:
    """Rule (a): the bound registration of a woken session misses an important stanza of
    the event (stanza-queued wakes only an ack_delayed or hibernated session)."""
    session = step.pre_sessions[step.key[1]]
    j = session.binding
    woken = step.kind != "queued" or session.state in ("ack_delayed", "hibernated")
    if j < 0 or not woken:
        return False
    owed = [s for s in step.stanzas if s.important and s.id is not None
            and not step.delivered(j, s.id) and not exempt(step, s, rule_a=True)]
    if not step.enabled_before(j):  # time: held by the session it was bound to, retried
        return bool(owed) and probe_due(step, j) and j not in step.pushed_to()
    return any(not held_now(step, j, s) for s in owed)


def _fan_out_loses(step: Step) -> bool:
    """Rules (b), (c): an enabled registration (for b/archive, one not bound to a live
    session) misses an important stanza for the user."""
    stanza = step.stanzas[0]
    archive = step.kind == "archive"
    if not stanza.important or (archive and stanza.to_bare != USER) or exempt(step, stanza):
        return False
    for j in range(len(step.world.nodes)):
        if archive and step.held_live(j):
            continue
        if not step.enabled_before(j):
            if probe_due(step, j) and not step.reached(j, stanza):
                return True  # time: its probe (the stanza is the first one due)
            continue
        if not step.reached(j, stanza) and not held_now(step, j, stanza):
            return True
    return False


@transition_property
def disable_only_after_max_errors(step: Step) -> bool:
    """A registration leaving the enabled states for no reason (only push-disable,
    push-enable's eviction and its own push-result may); a push-result disabling other than
    exactly at max_errors counted errors in a row, or leaving another error count."""
    kind, key = step.kind, step.key
    probed_in = probe_enables(step)  # time: a successful probe evicts beyond max_devices
    for j in step.changed_regs:
        allowed = kind in ("disable", "enable") or (kind in OWN_DISABLE and key[1] == j) \
            or probed_in
        if not allowed and step.enabled_before(j) and not step.enabled_after(j):
            return True
    if kind != "result" or not step.enabled_before(key[1]):
        return False
    j, outcome = key[1], key[2]
    after = step.post_regs[j]
    count = 0 if outcome == "ok" else step.ghosts[j].errors + (outcome != "wait")
    if (after.state == "disabled") != (count >= step.max_errors):
        return True
    return bool(after.state != "absent" and after.errors != count)


@transition_property
def wait_never_counts(step: Step) -> bool:
    """A wait error changing an enabled registration's state or error count."""
    key = step.key
    if step.kind != "result" or key[2] != "wait" or not step.enabled_before(key[1]):
        return False
    before, after = step.pre_regs[key[1]], step.post_regs[key[1]]
    return bool(after.state != before.state or after.errors != before.errors)


@transition_property
def session_follows_contract(step: Step) -> bool:
    """A session event leaving its session in another state than the contract says."""
    kind = step.kind
    if kind not in SESSION_TARGET and kind not in ("queued", "enable", "disable", "csi"):
        return False
    i = step.key[1]
    expected = SESSION_TARGET.get(kind) or step.pre_sessions[i].state
    return bool(step.post_sessions[i].state != expected)


@transition_property
def enable_disable_follow_contract(step: Step) -> bool:
    """push-enable not leaving its registration bound to the enabling session; push-disable
    not disabling exactly the enabled registrations it matches."""
    if step.kind == "enable":
        i, j = step.key[1], _enabled(step)
        reg = step.post_regs[j]
        return bool(step.post_sessions[i].binding != j or reg.state != "bound" or reg.owner != i)
    if step.kind == "disable":
        node = step.event.node
        for j in range(len(step.world.nodes)):
            before, after = step.pre_regs[j].state, step.post_regs[j].state
            matches = before in ENABLED and (node is None or step.world.nodes[j] == node)
            if (after in ENABLED) if matches else (after != before):
                return True
    return False


@transition_property
def eviction_least_recent(step: Step) -> bool:
    """push-enable keeping other registrations than the max_devices most recently
    enabled (recency as the checker saw the enables)."""
    if step.kind != "enable" and not probe_enables(step):
        return False
    j = _enabled(step) if step.kind == "enable" else step.key[1]
    newest = [x for x in step.recency() if x != j] + [j]
    keep = set(newest[max(len(newest) - step.max_devices, 0):])
    return {x for x in range(len(step.world.nodes)) if step.enabled_after(x)} != keep


@transition_property
def resume_stops_pushes(step: Step) -> bool:
    """smacks-hibernation-end pushing or leaving its session not active; a stanza queued to
    an active session pushed."""
    kind, i = step.kind, step.key[1] if len(step.key) > 1 else -1
    if kind == "hibe":
        return bool(step.pushes) or step.post_sessions[i].state != "active"
    return kind == "queued" and step.pre_sessions[i].state == "active" and any(
        p.rule.startswith("a/") for p in step.pushes)  # v2: a call rings elsewhere


def disable_misses_its_target(step: Step) -> bool:
    """The registration the step's own event names (``step.key[1]``) is still enabled after
    it, or another registration changed state: a disabling event (expiry, remote disable) must
    disable exactly its own."""
    j = step.key[1]
    return step.enabled_after(j) or any(
        x != j and step.pre_regs[x].state != step.post_regs[x].state
        for x in step.changed_regs)


@transition_property
def expired_never_pushed(step: Step) -> bool:
    """A push to a registration that expired since it was last enabled (the checker's own
    mark: set by a taken expire, cleared by the push-enable that enables it again); an expire
    that leaves its registration enabled or changes another one."""
    if not step.world.bounds.expiry:
        return False
    if step.kind == "expire" and disable_misses_its_target(step):
        return True
    return any(step.ghosts[j].expired for j, _ in step.known_pushes())


def probe_enables(step: Step) -> bool:
    """time: the step is the push-result of a probe that enables its registration again."""
    return step.world.bounds.time and step.kind == "result" \
        and not step.enabled_before(step.key[1]) and step.enabled_after(step.key[1])


def probe_due(step: Step, j: int) -> bool:
    """time: registration j is retried and its probe is due (the checker's ghost records:
    disabled for counted errors, its retry came due and no probe went since): the next
    stanza the rules would push to it is its probe."""
    if not step.world.bounds.time:
        return False
    ghost = step.ghosts[j]
    return bool(ghost.retried and ghost.probe_ok)


def held_now(step: Step, j: int, stanza: Any) -> bool:
    """time: the model holds ``stanza`` for registration j after the step (burst_window);
    held_stanza_sent checks that it was right to and that it is sent or dropped for a
    reason."""
    if not step.world.bounds.time or stanza.id is None:
        return False
    reg = step.post_regs[j]
    return bool(reg.hold) and reg.held_has(step.world.stanza_index[stanza.id])


def held_rule(step: Step, j: int, sid: str | None) -> str | None:
    """time: the rule the model held stanza ``sid`` for registration j with (before the
    step), None when it was not held."""
    if sid is None:
        return None
    k = step.world.stanza_index[sid]
    return next((rule for index, rule in step.pre_regs[j].held if index == k), None)


def _enabled(step: Step) -> int:
    """The registration a push-enable enables."""
    return step.world.reg_index[(USER, step.event.jid, step.event.node)]


def check_transition(step: Step) -> list[str]:
    """The names of the transition properties ``step`` violates, sorted."""
    return sorted([name for name, violated in TRANSITION_PROPERTIES.items() if violated(step)])


def exempt(step: Step, stanza: Any, rule_a: bool = False) -> bool:
    """v2: ``stanza`` need not be pushed by the event's path: the chat setting or the echo
    rule keeps it back, or it is a call's end (it goes only where the proposal went); on the
    fan-out paths a proposal too (no_missed_ring says where it must go)."""
    if not step.world.bounds.v2:
        return False
    facts = step.world.facts_of[stanza]
    if facts.call == "end" or (facts.call == "propose" and not rule_a):
        return True
    return held_back(step, stanza) is not None


def held_back(step: Step, stanza: Any) -> str | None:
    """v2: why the contract keeps ``stanza`` from being pushed ("echo" or "setting"), by the
    checker's record of the user's setting for the room; None: it does not."""
    world = step.world
    facts = world.facts_of[stanza]
    n = step.setting() if facts.chat == ROOM else 0
    notify, nick = CHAT_SETTINGS[n - 1] if n else (None, None)
    if facts.groupchat and nick is not None and facts.nick == nick:
        return "echo"
    if facts.call is not None:
        return None  # calls ignore chat settings
    if notify is None:
        notify = world.config.groupchat_default if facts.groupchat else "always"
    if notify == "never" or (notify == "on-mention" and not facts.mentions_user):
        return "setting"
    return None


def allowed_rules(step: Step, rule: str, j: int) -> tuple[str, ...]:
    """The rules a push to registration j may carry on the event's path: the path's; in v2,
    for a call stanza rule e instead (a proposal queued to the session bound to j: rule a
    too, it is in the smacks queue rule a pushes)."""
    if not step.world.bounds.v2 or step.kind not in (*FAN_OUT_PATHS, "queued"):
        return (rule,)
    facts = step.world.facts_of[step.stanzas[0]]
    if facts.call == "end":
        return ("e/call-end",)
    if facts.call == "propose":
        own = step.kind == "queued" and step.pre_sessions[step.key[1]].binding == j
        return ("e/call", rule) if own else ("e/call",)
    return (rule,)


def _event_stanzas(event: Any) -> tuple[Any, ...]:
    queue = getattr(event, "queue", None)
    if queue is not None:
        return tuple(queue)
    stanza = getattr(event, "stanza", None)
    return () if stanza is None else (stanza,)


from . import properties_time as _time  # noqa: E402  (registers the time properties)
from . import properties_v2 as _v2  # noqa: E402  (registers the version-2 properties)

assert set(PROPERTIES) == {*TRANSITION_PROPERTIES, *STATE_PROPERTIES, *EXPLORER_PROPERTIES}, (
    _v2.__name__, _time.__name__)
