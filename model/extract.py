"""Extract the psm machines once into plain data: the IR every generated artifact is rendered
from (runtime tables, DOT, Mermaid, rules table)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from .actions import ACTION_DOCS, ACTION_FIRES
from .config import Config
from .events import CALL_EVENTS, EVENTS, SESSION, EventSpec
from .guards import GUARD_DOCS
from .registration import REJECTIONS as REGISTRATION_REJECTIONS
from .registration import TIMER_EVENTS, Registration
from .rules import ALL_RULES, PUSH_RULES, TIME_RULES, V2_RULES
from .session import REJECTIONS as SESSION_REJECTIONS
from .session import PushSession

_CONVENTION_CALLBACKS = ("on_transition",)

PUSH_ACTION = "send_push"
"""The action that emits a push (the registration's dedup step, whichever rule decided it)."""


def row_pushes(rule: str, actions: tuple[str, ...]) -> bool:
    """The one definition of "this row pushes": it runs the action that emits a push, or it is
    tagged with a push rule and runs an action (a session row handing stanzas to the
    registration it is bound to). A push-rule row without actions decides that nothing is
    pushed (rule b for an outgoing copy)."""
    return PUSH_ACTION in actions or (rule in PUSH_RULES and bool(actions))


SENDING_ACTIONS = frozenset({PUSH_ACTION, "send_probe", "send_held"})
"""Actions that send a push: the dedup step, a retried registration's probe, and held pushes
sent when due (what the diagrams and the rules table mark as pushing)."""


V2_MACHINE_EVENTS = frozenset(
    {spec.machine_event for spec in EVENTS if spec.version >= 2} | set(CALL_EVENTS.values()))
"""Machine events only contract version 2 raises."""


def v2_row(event: str, rule: str) -> bool:
    """A row only a version-2 event takes (its event is v2, or its rule is: a v1 event's row
    for a v2 stanza, such as a call's end queued to a session)."""
    return event in V2_MACHINE_EVENTS or rule in V2_RULES


@dataclass(frozen=True, slots=True)
class GuardRef:
    name: str
    expected: bool

    @property
    def label(self) -> str:
        return self.name if self.expected else f"not {self.name}"


@dataclass(frozen=True, slots=True)
class TransitionIR:
    machine: str
    source: str
    target: str
    event: str
    event_name: str
    guards: tuple[GuardRef, ...]
    actions: tuple[str, ...]
    internal: bool
    rule: str
    why: str
    triggers: tuple[str, ...] = ()
    """The contract events that lead to this transition (for a registration event that an
    action fires: the session events whose transitions fire it; for a timer: its option)."""

    @property
    def pushes(self) -> bool:
        return row_pushes(self.rule, self.actions)

    @property
    def sends(self) -> bool:
        """It pushes (``pushes``), or sends a probe or held pushes (the time-based rules)."""
        return self.pushes or any(a in SENDING_ACTIONS for a in self.actions)

    @property
    def guard_label(self) -> str:
        return " and ".join(g.label for g in self.guards)


@dataclass(frozen=True, slots=True)
class RejectionIR:
    state: str
    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class MachineIR:
    name: str
    class_name: str
    doc: str
    states: tuple[str, ...]
    initial: str
    events: tuple[tuple[str, str], ...]
    transitions: tuple[TransitionIR, ...]
    rejections: tuple[RejectionIR, ...]
    timer_events: tuple[tuple[str, str], ...] = ()
    """Events raised by a clock, not by a contract event (registration.py TIMER_EVENTS)."""
    timers: tuple[TransitionIR, ...] = ()
    """The transitions of the timer events the bounded checker raises with ``--expiry``:
    apart from ``transitions``, which the checker explores and mutates (it raises contract
    events only)."""
    timer_rejections: tuple[RejectionIR, ...] = ()
    clock_timers: tuple[TransitionIR, ...] = ()
    """The transitions of the time-based rules' timer events (burst_window, retry_after: rule
    tags in TIME_RULES), which only the checker's time bounds raise (`pushrules check --time`);
    an engine takes them as the others."""

    def rows(self, state: str, event: str) -> tuple[TransitionIR, ...]:
        return tuple(t for t in self.transitions if t.source == state and t.event == event)

    def timer_rows(self, state: str, event: str) -> tuple[TransitionIR, ...]:
        return tuple(t for t in self.timers + self.clock_timers
                     if t.source == state and t.event == event)

    @property
    def every_transition(self) -> tuple[TransitionIR, ...]:
        """Contract-driven and timer transitions: what a reader of the rules sees."""
        return self.transitions + self.timers + self.clock_timers

    @property
    def every_rejection(self) -> tuple[RejectionIR, ...]:
        return self.rejections + self.timer_rejections

    @property
    def every_event(self) -> tuple[tuple[str, str], ...]:
        return self.events + self.timer_events


@dataclass(frozen=True, slots=True)
class ModelIR:
    machines: tuple[MachineIR, ...]
    guards: tuple[tuple[str, str], ...]
    actions: tuple[tuple[str, str], ...]
    rules: tuple[tuple[str, str], ...]
    events: tuple[EventSpec, ...]
    options: tuple[tuple[str, str, str], ...] = ()
    """(name, default, meaning) of every rule option (config.py)."""
    fires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The registration events each action fires (actions.py ACTION_FIRES)."""

    def machine(self, name: str) -> MachineIR:
        return next(m for m in self.machines if m.name == name)


def _transition_ir(name: str, t: Any, names: dict[str, str]) -> TransitionIR:
    """One psm transition as plain data."""
    event = str(next(iter(t.events)))
    return TransitionIR(
        machine=name,
        source=t.source.id,
        target=t.target.id,
        event=event,
        event_name=names[event],
        guards=tuple(GuardRef(str(c.func), bool(c.expected_value)) for c in t.cond),
        actions=tuple(
            str(c.func) for c in t.on
            if str(c.func) not in _CONVENTION_CALLBACKS and not str(c.func).startswith("on_")
        ),
        internal=bool(t.internal),
        rule=t.rule,
        why=t.why,
    )


def extract_machine(
    name: str, cls: Any, rejections: dict[tuple[str, str], str],
    timer_events: Collection[str] = (),
) -> MachineIR:
    states = tuple(s.id for s in cls.states)
    initial = next(s.id for s in cls.states if s.initial)
    every_event = tuple((e.id, e.name) for e in cls.events)
    names = dict(every_event)
    transitions = [_transition_ir(name, t, names) for state in cls.states
                   for t in state.transitions]
    rejected = tuple(RejectionIR(s, e, r) for (s, e), r in sorted(rejections.items()))
    return MachineIR(
        name=name, class_name=cls.__name__, doc=(cls.__doc__ or "").strip(), states=states,
        initial=initial, **_by_kind(every_event, transitions, rejected, timer_events),
    )


def _by_kind(every_event: tuple[tuple[str, str], ...], transitions: list[TransitionIR],
             rejected: tuple[RejectionIR, ...], timer_events: Collection[str]) -> dict[str, Any]:
    """MachineIR's events, rows and rejections of the contract events apart from those of the
    timer events, and the time-based rules' timer rows apart from the checker's."""
    # Timer events all of whose rows carry a time-based rule's tag: only the checker's time
    # bounds raise them (``--time``; ``--expiry`` raises ``expire``).
    clock_events = {e for e in timer_events
                    if all(t.rule in TIME_RULES for t in transitions if t.event == e)}
    return {
        "events": tuple(e for e in every_event if e[0] not in timer_events),
        "transitions": tuple(t for t in transitions if t.event not in timer_events),
        "rejections": tuple(r for r in rejected if r.event not in timer_events),
        "timer_events": tuple(e for e in every_event if e[0] in timer_events),
        "timers": tuple(t for t in transitions if t.event in timer_events
                        and t.event not in clock_events),
        "timer_rejections": tuple(r for r in rejected if r.event in timer_events),
        "clock_timers": tuple(t for t in transitions if t.event in clock_events),
    }


def _triggers(session: MachineIR, event: str) -> tuple[str, ...]:
    """The contract events behind a registration event."""
    for spec in EVENTS:
        if spec.target != SESSION and spec.machine_event == event:
            return (spec.name,)
    if event in TIMER_EVENTS:
        return (f"time: {TIMER_EVENTS[event]}",)
    if event in CALL_EVENTS.values():  # rule e: a call stanza on any event that brings one
        return tuple(spec.name for spec in EVENTS if spec.calls)
    found = [t.event_name for t in session.transitions
             if any(event in ACTION_FIRES[a] for a in t.actions)]
    return tuple(dict.fromkeys(found))


def _with_triggers(session: MachineIR, registration: MachineIR) -> tuple[MachineIR, MachineIR]:
    def own(t: TransitionIR) -> TransitionIR:
        return replace(t, triggers=(t.event_name,))

    def caused(t: TransitionIR) -> TransitionIR:
        return replace(t, triggers=_triggers(session, t.event))

    return (replace(session, transitions=tuple(map(own, session.transitions))),
            replace(registration, transitions=tuple(map(caused, registration.transitions)),
                    timers=tuple(map(caused, registration.timers)),
                    clock_timers=tuple(map(caused, registration.clock_timers))))


def extract() -> ModelIR:
    return ModelIR(
        machines=_with_triggers(
            extract_machine("session", PushSession, SESSION_REJECTIONS),
            extract_machine("registration", Registration, REGISTRATION_REJECTIONS,
                            TIMER_EVENTS),
        ),
        guards=tuple(sorted(GUARD_DOCS.items())),
        actions=tuple(sorted(ACTION_DOCS.items())),
        rules=tuple(ALL_RULES.items()),
        events=EVENTS,
        options=tuple((name, repr(default), doc) for name, default, doc in Config.option_docs()),
        fires=dict(ACTION_FIRES),
    )
