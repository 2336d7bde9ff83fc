"""Routing contract events to machine instances, shared by every engine.

A subclass supplies ``_session_step`` and ``_registration_step``: how one machine instance takes
one event (the generated table, or a python-statemachine instance). Everything else (which
instance an event goes to, fan-out, records, pushes, explanations) is declared in the model and
the same for all engines, so engines can only differ in the transition they take.
"""

from __future__ import annotations

import heapq
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from sys import intern
from typing import Any, NamedTuple

from .config import Config
from .context import Ctx
from .errors import PushrulesError
from .events import (
    CALL_EVENTS,
    CLOCK,
    EVENTS,
    KNOWN_REGISTRATION,
    REGISTRATION,
    SESSION,
    USER_FACT,
    USER_REGISTRATIONS,
)
from .facts import FACTS
from .records import (
    DUE_FIELDS,
    TIMER_NAMES,
    ChatSetting,
    Push,
    RegistrationRecord,
    RegKey,
    SessionRecord,
)
from .rules import PROBE_PATHS, PROBE_RULE, PUSH_RULES


class ImpossibleEvent(PushrulesError, ValueError):
    """A well-formed event that the current state does not allow; nothing was changed.
    ``field`` names the event field the state contradicts (for error messages). Raised as one
    of the kinds below, which callers (the checker) tell apart by type."""

    def __init__(self, message: str, field: str = "event") -> None:
        super().__init__(message)
        self.field = field


class DeclaredRejection(ImpossibleEvent):
    """The model declares the (state, event) impossible, with the reason in the message."""


class UndeclaredRejection(ImpossibleEvent):
    """No row is enabled and the model declares no rejection: a gap in model/ (the checker's
    ``every_event_handled`` reports it); nothing was changed."""


class UnknownRegistration(ImpossibleEvent):
    """A push-result for a registration the user does not have."""


class ModelError(PushrulesError, RuntimeError):
    """The model has no transition for an event its own actions raised: a defect in model/."""


UNDECLARED = "no enabled transition and no declared rejection"
"""The reason an engine gives when no row is enabled and the model declares no rejection."""


def session_rejection(event: Any, state: str, reason: str) -> ImpossibleEvent:
    """The one place a rejected session event's error is built: ``reason`` is the declared
    rejection of (state, event), or UNDECLARED."""
    kind = UndeclaredRejection if reason == UNDECLARED else DeclaredRejection
    return kind(f"{event.EVENT} for session {event.session} in state {state}: {reason}")


class Route(NamedTuple):
    """How WorldBase.handle routes one contract event (from the model's event specs):
    ``target`` is SESSION, USER_REGISTRATIONS, REGISTRATION, KNOWN_REGISTRATION, USER_FACT or
    CLOCK; ``user_field`` names the event field holding the user of a fan-out; ``calls``: the
    event brings a stanza for a user, which rule e fans out when it is a call (v2)."""

    target: str
    machine_event: str
    user_field: str
    calls: bool = False


ROUTES: dict[str, Route] = {spec.name: Route(spec.target, spec.machine_event, spec.user_field,
                                             spec.calls)
                            for spec in EVENTS}
"""Contract event name -> its route: the one router, also the engine's fast path's source."""


@dataclass(frozen=True, slots=True)
class Due:
    """A timer event as the context's event: raised by the world's clock for one registration
    (model/registration.py TIMER_EVENTS), not by a contract event."""

    timer: str
    at: float
    user: str
    jid: str
    node: str

    @property
    def EVENT(self) -> str:  # noqa: N802 - the name every event's kind goes by
        return self.timer


@dataclass(frozen=True, slots=True)
class DueStep:
    """What one timer event decided (for --explain): when, which, for whom, and why."""

    at: float
    timer: str
    reg: str
    notes: tuple[str, ...]
    pushes: int


_TIMERS = tuple(DUE_FIELDS.items())
"""(timer event, due field) by kind: the index is the order at the same time."""
_KIND = {timer: kind for kind, (timer, _) in enumerate(_TIMERS)}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: float
    user: str
    jid: str
    node: str
    action: str
    reason: str


class WorldBase(ABC):
    """Sessions, registrations and the dispatch of contract events."""

    def __init__(self, config: Config | None = None, *, explain: bool = False,
                 clock: Any = time.time) -> None:
        self.config = config or Config()
        self.explain = explain
        self.clock = clock
        self.sessions: dict[str, SessionRecord] = {}
        self.users: dict[str, dict[tuple[str, str], RegistrationRecord]] = {}
        self.chats: dict[str, dict[str, ChatSetting]] = {}
        """user -> chat -> the user's setting for it (v2 chat-settings): a fact of the user."""
        self.calls: dict[str, dict[str, dict[tuple[str, str], None]]] = {}
        """user -> call id -> the (jid, node) of the registrations its proposal was pushed to
        (v2, rule e/call-end): a fact of the call; call ids are per user."""
        self.time: float = 0.0
        """The trace's clock (v2 ``at``); ``timed`` once any event carried ``at``."""
        self.timed = False
        self._due: list[tuple[float, int, int, RegKey]] = []
        """The due queue: (when, timer kind, order, registration), a heap; an entry whose
        registration's due field no longer says ``when`` is stale (skipped)."""
        self._due_order = 0
        self.due_log: list[DueStep] = []
        """With ``explain``: what the timer events of the last call decided."""
        self.audit_log: list[AuditEntry] = []
        self._pushes: list[Push] = []
        self._seq = 0
        self.last_notes: list[str] = []

    # --- storage: WorldBase reads and writes ``sessions`` and ``users`` only here ------------
    # (a checker's world overrides these to load records from a packed state and to know what
    # a step changed: checker/lazyworld.py; the containers themselves are plain dicts)
    def session(self, sid: str) -> SessionRecord | None:
        return self.sessions.get(sid)

    def _store_session(self, record: SessionRecord) -> None:
        self.sessions[record.sid] = record

    def _forget_session(self, sid: str) -> None:
        del self.sessions[sid]

    def _has_registrations(self, user: str) -> bool:
        return bool(self.users.get(user))

    def _store_registration(self, reg: RegistrationRecord) -> None:
        regs = self.users.get(reg.user)
        if regs is None:
            regs = self.users[reg.user] = {}
        regs[(reg.jid, reg.node)] = reg

    def chat_setting(self, user: str, chat: str) -> ChatSetting | None:
        settings = self.chats.get(user)
        return None if settings is None else settings.get(chat)

    def store_chat_setting(self, user: str, chat: str, setting: ChatSetting) -> None:
        self.chats.setdefault(user, {})[chat] = setting

    def call_targets(self, user: str, call_id: str) -> dict[tuple[str, str], None]:
        calls = self.calls.get(user)
        targets = None if calls is None else calls.get(call_id)
        return {} if targets is None else targets

    def add_call_target(self, reg: RegistrationRecord, call_id: str) -> None:
        calls = self.calls.setdefault(reg.user, {})
        calls.setdefault(call_id, {})[(reg.jid, reg.node)] = None
        while len(calls) > self.config.dedup_window:  # bounded like the dedup memory
            del calls[next(iter(calls))]

    def forget_calls_of(self, reg: RegistrationRecord) -> None:
        """A registration disabled (and so one enabled anew) is in no call."""
        calls = self.calls.get(reg.user)
        if not calls:
            return
        key = (reg.jid, reg.node)
        for call_id in [c for c, targets in calls.items() if key in targets]:
            del calls[call_id][key]
            if not calls[call_id]:
                del calls[call_id]

    # --- a user's facts beyond sessions and registrations, as data a store keeps ------------
    def user_facts(self, user: str) -> dict[str, Any]:
        """JSON-able: the user's chat settings and calls (v2). A store keeps this one record
        per user and hands it back to ``restore_user_facts``; empty when there is nothing."""
        facts: dict[str, Any] = {}
        chats = self.chats.get(user)
        if chats:
            facts["chats"] = {chat: [s.notify, s.nick] for chat, s in chats.items()}
        calls = self.calls.get(user)
        if calls:
            facts["calls"] = {call_id: [list(key) for key in targets]
                              for call_id, targets in calls.items()}
        return facts

    def restore_user_facts(self, user: str, facts: dict[str, Any]) -> None:
        """Replace the user's facts by what ``user_facts`` gave. Raises KeyError, TypeError or
        ValueError on data it did not write (a store reports that as corrupt)."""
        self.chats.pop(user, None)
        self.calls.pop(user, None)
        chats = facts.get("chats", {})
        if chats:
            self.chats[user] = {str(chat): ChatSetting(str(notify), None if nick is None
                                                       else str(nick))
                                for chat, (notify, nick) in chats.items()}
        calls = facts.get("calls", {})
        if calls:
            self.calls[user] = {str(call_id): {(str(jid), str(node)): None
                                               for jid, node in targets}
                                for call_id, targets in calls.items()}

    # --- World protocol used by actions ------------------------------------------------------
    def push_time(self) -> float | None:
        """The time a push decided now carries: the trace's, once it has times."""
        return self.time if self.timed else None

    def advance_time(self, at: float | None) -> None:
        """An event's ``at`` (None: the time of the event before): what comes due at or before
        it happens first, in time order (its pushes go with the event's). The trace parser has
        already refused an ``at`` going back (a malformed line)."""
        if at is not None:
            if self._due:
                self._run_due(at)
            self.time = at
            self.timed = True

    # --- the clock: timer events come due (contract v2 time-based rules) ---------------------
    def schedule(self, reg: RegistrationRecord, timer: str) -> None:
        """The registration's ``timer`` (its due field is set) goes into the due queue."""
        kind = _KIND[timer]
        when = getattr(reg, _TIMERS[kind][1])
        self._due_order += 1
        heapq.heappush(self._due, (when, kind, self._due_order, reg.key))

    def rebuild_due(self) -> None:
        """The due queue again from the registration records' due fields (after records were
        loaded or restored: a store keeps the fields, not the queue)."""
        self._due = []
        for regs in self.users.values():
            for reg in regs.values():
                for timer, field in _TIMERS:
                    if getattr(reg, field) is not None:
                        self.schedule(reg, timer)

    def next_due(self) -> float | None:
        """When the next timer event comes due (None: none is running)."""
        due = self._due
        while due and self._stale(due[0]) is None:
            heapq.heappop(due)
        return due[0][0] if due else None

    def run_due(self, until: float) -> list[Push]:
        """Advance the clock to ``until``, firing every timer event due at or before it in
        time order; the pushes they decided (each with its due time)."""
        self._pushes = pushes = list[Push]()
        self.due_log = []
        if self._due:
            self._run_due(until)
        if until > self.time:
            self.time = until
        return pushes

    def flush_held(self) -> list[Push]:
        """End of input: every held push is sent at its due time, checked against the state
        then; no expiry or retry is simulated past the last event (the clock stays)."""
        self._pushes = pushes = list[Push]()
        self.due_log = []
        now = self.time
        flushes = sorted(entry for entry in self._due if entry[1] == _KIND["flush"])
        for entry in flushes:
            self._fire_due(entry)
        self.time = now
        return pushes

    def _stale(self, entry: tuple[float, int, int, RegKey]) -> RegistrationRecord | None:
        """The registration of a due-queue entry, or None when the entry is stale."""
        reg = self.registration(entry[3])
        if reg is None or getattr(reg, _TIMERS[entry[1]][1]) != entry[0]:
            return None
        return reg

    def _run_due(self, until: float) -> None:
        due = self._due
        while due and due[0][0] <= until:
            self._fire_due(heapq.heappop(due))

    def _fire_due(self, entry: tuple[float, int, int, RegKey]) -> None:
        reg = self._stale(entry)
        if reg is None:
            return
        when, kind = entry[0], entry[1]
        timer = _TIMERS[kind][0]
        self.time = when
        notes: list[str] | None = [] if self.explain else None
        ctx = Ctx(self, Due(timer, when, *reg.key), None, None, "", (), notes)
        before = len(self._pushes)
        self._fire(reg, timer, ctx)
        if notes is not None:
            self.due_log.append(DueStep(when, TIMER_NAMES[timer], f"{reg.jid} {reg.node}",
                                        tuple(notes),
                                        len(self._pushes) - before))

    def registration(self, key: RegKey) -> RegistrationRecord | None:
        regs = self.users.get(key[0])
        return None if regs is None else regs.get((key[1], key[2]))

    def registrations_of(self, user: str) -> list[RegistrationRecord]:
        regs = self.users.get(user)
        return [] if regs is None else list(regs.values())

    def emit(self, push: Push) -> None:
        self._pushes.append(push)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def now(self) -> float:
        return float(self.clock())

    def audit(self, reg: RegistrationRecord, action: str, reason: str) -> None:
        self.audit_log.append(AuditEntry(self.now(), reg.user, reg.jid, reg.node, action, reason))

    def fire_registration(self, key: RegKey, event: str, ctx: Ctx) -> None:
        reg = self.registration(key)
        if reg is None:
            reg = self._new_registration(*key)
            self._store_registration(reg)
        self._fire(reg, event, ctx)

    def _fire(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> None:
        if not self._registration_step(reg, event, ctx.for_registration(reg)):
            raise ModelError(f"registration {reg.jid} {reg.node} in state {reg.state} has no "
                             f"transition for {event}")

    # --- dispatch ----------------------------------------------------------------------------
    def handle(self, event: Any) -> list[Push]:
        """Apply one contract event; return the pushes decided. Raises ImpossibleEvent (and
        changes nothing) when the current state does not allow the event."""
        route = ROUTES[event.EVENT]
        self._pushes = pushes = list[Push]()
        self.due_log = []
        # Time first: what comes due before the event happens before it, even when the
        # event itself is then rejected (the clock is not the event's).
        self.advance_time(event.at)
        notes: list[str] | None = [] if self.explain else None
        target = route.target
        if target == USER_REGISTRATIONS and notes is None \
                and not self._has_registrations(getattr(event, route.user_field)):
            return pushes  # no registration to fan out to (the note below is for --explain)
        ctx = Ctx(self, event, None, None, "", (), notes)
        if target == SESSION:
            self._handle_session(event, route.machine_event, ctx)
            if route.calls and event.stanza.call is not None:
                assert ctx.session is not None
                self._fan_out(ctx.session.user, CALL_EVENTS[event.stanza.call], ctx)
        else:
            self._handle_other(event, route, ctx)
        if notes is not None:
            self.last_notes = notes
        return pushes

    def _handle_other(self, event: Any, route: Route, ctx: Ctx) -> None:
        target = route.target
        if target == REGISTRATION:
            self._fire(self._known_registration(event), route.machine_event, ctx)
            return
        if target == USER_REGISTRATIONS:
            stanza = event.stanza
            machine_event = route.machine_event
            if route.calls and stanza.call is not None:
                machine_event = CALL_EVENTS[stanza.call]  # rule e takes calls (v2)
            self._fan_out(getattr(event, route.user_field), machine_event, ctx)
        elif target == KNOWN_REGISTRATION:
            known = self.registration((event.user, event.jid, event.node))
            if known is None:
                ctx.note(f"{event.jid} {event.node}: no such registration of {event.user}: "
                         f"a routine no-op")
            else:
                self._fire(known, route.machine_event, ctx)
        elif target in (USER_FACT, CLOCK):
            FACTS[event.EVENT].apply(ctx)

    def _known_registration(self, event: Any) -> RegistrationRecord:
        reg = self.registration((event.user, event.jid, event.node))
        if reg is None:
            known_jid = any(r.jid == event.jid for r in self.registrations_of(event.user))
            raise UnknownRegistration(f"push-result for {event.jid} {event.node}: no such "
                                      f"registration of {event.user}",
                                      "node" if known_jid else "jid")
        return reg

    def _fan_out(self, user: str, machine_event: str, ctx: Ctx) -> None:
        """Send ``machine_event`` to every registration of ``user`` with the event's stanza."""
        ctx.stanzas = (ctx.event.stanza,)
        regs = self.registrations_of(user)
        if not regs:
            ctx.note(f"{user} has no push registration: nothing to push")
        for each in regs:
            self._fire(each, machine_event, ctx)

    def _handle_session(self, event: Any, machine_event: str, ctx: Ctx) -> None:
        sid = event.session
        record = self.session(sid)
        fresh = record is None
        if record is None:
            record = self._open_session(sid)  # stored while the step runs
        ctx.session = record
        reason = self._session_apply(record, machine_event, ctx)
        if reason is not None:
            if fresh:
                self._forget_session(sid)  # removed: it is rejected
            raise session_rejection(event, record.state, reason)
        self._drop_if_ended(sid, record)

    def _open_session(self, sid: str) -> SessionRecord:
        """A new session record, stored under ``sid``."""
        # Interned: a user's sessions and registrations share one string for the user.
        record = self._new_session(sid, intern(sid.split("/", 1)[0]))
        self._store_session(record)
        return record

    def _drop_if_ended(self, sid: str, record: SessionRecord) -> None:
        if record.state == "offline" and record.binding is None:
            self._forget_session(sid)  # a destroyed session is the same as one never bound

    def _session_apply(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        """Take the session transition, or change nothing and say why it is impossible. An
        engine may override this to decide and take the transition in one step."""
        reason = self._session_rejection(record, event, ctx)
        if reason is None:
            self._session_step(record, event, ctx)
        return reason

    # --- bookkeeping shared by the engines -----------------------------------------------------
    def _enter(self, ctx: Ctx, machine: str, name: str, source: str, target: str, rule: str,
               why: str, event: str) -> None:
        """Called by an engine when it takes a transition, before its actions run."""
        if rule in PUSH_RULES:
            ctx.rule = rule
        elif rule == PROBE_RULE:  # a probe goes by the rule of its path (rule a: the session's)
            ctx.rule = PROBE_PATHS.get(event, ctx.rule)
        if ctx.notes is not None:
            arrow = source if source == target else f"{source} -> {target}"
            ctx.notes.append(f"{machine} {name} {event}: {arrow} [{rule}] {why}")

    def _new_session(self, sid: str, user: str) -> SessionRecord:
        return SessionRecord(sid, user)

    def _new_registration(self, user: str, jid: str, node: str) -> RegistrationRecord:
        return RegistrationRecord(user, jid, node)

    # An engine implements either these two, used by the default ``_session_apply``, or
    # ``_session_apply`` itself (the generated Engine decides and takes in one step).
    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        """None when the session machine can take the event now, else why not: the declared
        rejection, or UNDECLARED."""
        raise NotImplementedError

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        """Take the session transition (guards already known to allow one)."""
        raise NotImplementedError

    @abstractmethod
    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        """Take the registration transition; False when none is enabled."""
