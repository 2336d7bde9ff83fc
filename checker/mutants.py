"""Mutation testing of the properties: mutate the model IR, build its tables in memory with the
template `pushrules render` uses, and explore. A mutant is killed when some property fails.

Operators: drop a guard, retarget a transition (every other state), drop an action, duplicate
an action, and move the push of a row to another state that receives pushes (in this model:
between the registration states bound and orphaned, e.g. rule (b) pushing the bound
registrations instead of the orphaned ones). Every operator reads the model IR: the states,
rows and actions come from it, and the push action is the model's own ``send_push``. With
``timers`` (``pushrules check --mutants --expiry``) the timer rows (``MachineIR.timers``: orphan
expiry) are mutated too, and explored with the expiry bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from pushrules.model.actions import send_push
from pushrules.model.extract import (
    V2_MACHINE_EVENTS,
    MachineIR,
    ModelIR,
    TransitionIR,
    extract,
    v2_row,
)
from pushrules.model.guards import TIME_GUARDS, V2_GUARDS
from pushrules.model.rules import TIME_RULES

from .bounded import V2_ESCALATION, Bounds
from .compiled import CompiledExplorer
from .explore import Result
from .tablegen import build_tables
from .tableworld import world_class

PUSH_ACTION = send_push.__name__
"""The model's action that emits a push (by the name the IR's rows use)."""

# Mutants that no property can kill because they do not change behaviour, with the reason.
# Matched by mutant id; a survivor not listed here is a failure.
EQUIVALENT: dict[str, str] = {
    "dup-action registration absent enable 0 store_registration":
        "store_registration sets the same fields again; only the enabling order counts, "
        "and it is unchanged",
    "dup-action registration disabled enable 0 store_registration":
        "store_registration sets the same fields again",
    "dup-action registration bound enable 0 store_registration":
        "store_registration sets the same fields again",
    "dup-action registration orphaned enable 0 store_registration":
        "store_registration sets the same fields again",
    "dup-action registration absent enable 0 reset_errors": "resetting twice is resetting once",
    "dup-action registration disabled enable 0 reset_errors": "resetting twice is resetting once",
    "dup-action registration bound push_result 0 reset_errors":
        "resetting twice is resetting once",
    "dup-action registration orphaned push_result 0 reset_errors":
        "resetting twice is resetting once",
    "drop-action registration absent enable 0 reset_errors":
        "a new registration record starts with no errors",
    "dup-action registration bound unbind 0 release_session":
        "forgetting the session twice is forgetting it once",
    "dup-action session active push_enable 0 bind_registration":
        "re-enabling the registration just enabled changes only the enabling counter",
    "dup-action session ack_delayed push_enable 0 bind_registration":
        "re-enabling the registration just enabled changes only the enabling counter",
    "dup-action session active push_disable 0 remove_registrations":
        "the second removal finds nothing enabled to remove",
    "dup-action session ack_delayed push_disable 0 remove_registrations":
        "the second removal finds nothing enabled to remove",
    # version 2 (pushrules check --v2 --mutants)
    "dup-action session active csi_state 0 set_csi":
        "setting the session's client state twice to the event's state is setting it once",
    "dup-action session ack_delayed csi_state 0 set_csi":
        "setting the session's client state twice to the event's state is setting it once",
    "drop-guard registration bound push_call 1 not ringing_app":
        "in_pushed_queue holds only for a session that is ack_delayed or hibernated, "
        "ringing_app only for an active one: the dropped guard is implied",
    "drop-guard registration bound push_call 2 not in_pushed_queue":
        "outgoing_copy holds only on archive-message-added, which names no session, so "
        "in_pushed_queue is false there: the dropped guard is implied",
    # the time-based rules (pushrules check --time --mutants, with and without --v2)
    "dup-action registration disabled unbind 0 release_probe_session":
        "forgetting the probe's session twice is forgetting it once",
    "drop-guard registration disabled disable 0 probing":
        "remove_registrations fires disable at a disabled registration only while it is "
        "retried (probe set): the dropped guard is implied",
    "dup-action registration disabled push_result 1 probe_again":
        "readying the probe twice is readying it once",
    "dup-action registration bound flush 0 send_held":
        "the first send_held empties the held stanzas: the second has nothing to send",
    "dup-action registration orphaned flush 0 send_held":
        "the first send_held empties the held stanzas: the second has nothing to send",
    "dup-action registration disabled retry 0 ready_to_probe":
        "readying the probe twice is readying it once",
    **{f"dup-action registration disabled {event} 0 send_probe":
       "the second probe finds its stanza pushed (dedup): nothing more goes. Only a stanza "
       "without an id would go twice, and a time bound has none (one is held again by every "
       "event within a window: no bounded world holds that)"
       for event in ("push_session", "push_archive", "push_offline", "push_groupchat",
                     "push_call", "push_call_end")},
}


@dataclass(frozen=True)
class Mutant:
    id: str
    ir: ModelIR


def _row_id(t: TransitionIR, index: int) -> str:
    return f"{t.machine} {t.source} {t.event} {index}"


def _replaced(rows: tuple[TransitionIR, ...], old: TransitionIR, new: TransitionIR | None,
              extra: dict[int, TransitionIR]) -> tuple[TransitionIR, ...]:
    out = []
    for t in rows:
        if t is old:
            if new is not None:
                out.append(new)
        else:
            out.append(extra.get(id(t), t))
    return tuple(out)


def _replace(ir: ModelIR, machine: MachineIR, old: TransitionIR,
             new: TransitionIR | None, extra: dict[int, TransitionIR] | None = None) -> ModelIR:
    """``ir`` with row ``old`` of ``machine`` (a contract or a timer row) replaced by ``new``
    (None: dropped) and the rows in ``extra`` (by id) by theirs."""
    extra = extra or {}
    changed = dataclasses.replace(machine,
                                  transitions=_replaced(machine.transitions, old, new, extra),
                                  timers=_replaced(machine.timers, old, new, extra),
                                  clock_timers=_replaced(machine.clock_timers, old, new, extra))
    return dataclasses.replace(
        ir, machines=tuple(changed if m is machine else m for m in ir.machines))


def mutants(ir: ModelIR | None = None, timers: bool = False, v2: bool = False,
            only_v2: bool = False, time: bool | None = None) -> Iterator[Mutant]:
    """Every mutant of ``ir`` (the model's): of its contract rows, and with ``timers`` of its
    timer rows too (which only a checker with expiry explores). Without ``v2``, the rows only
    version-2 events take and the v2 guards are not mutated: a bound that raises no v2 event
    cannot kill them (``skipped_v2`` counts them). ``only_v2``: those alone (what
    ``pushrules check --v2 --mutants`` runs at the v2 mutant bound). The mutants of the
    time-based rules (``is_time_mutant``: a row of a time rule, or a dropped time guard) are
    left out unless ``time`` is given: then only they, those on version-2 events with ``time``
    and ``v2`` (the v2 time bound), those on version-1 events and the clock's with ``time``
    alone."""
    if time is not None:
        yield from (m for m, t, guard in _all_mutants(ir, timers=True, v2=True)
                    if _is_time(t, guard) and (t.event in V2_MACHINE_EVENTS) == v2)
        return
    if only_v2:
        v1 = {m.id for m in mutants(ir, timers)}
        yield from (m for m in mutants(ir, timers, v2=True) if m.id not in v1)
        return
    yield from (m for m, t, guard in _all_mutants(ir, timers, v2) if not _is_time(t, guard))


def _is_time(t: TransitionIR, guard: str | None) -> bool:
    """A mutant of a time-based rule: of its row, or dropping one of its guards."""
    return t.rule in TIME_RULES or guard in TIME_GUARDS


def _all_mutants(ir: ModelIR | None, timers: bool, v2: bool
                 ) -> Iterator[tuple[Mutant, TransitionIR, str | None]]:
    """(mutant, the row it mutates, the guard it drops or None), time-based rules included."""
    ir = ir or extract()
    for machine in ir.machines:
        rows = machine.transitions + (machine.timers + machine.clock_timers if timers else ())
        for t in rows:
            if not v2 and v2_row(t.event, t.rule):
                continue
            same = machine.rows if t in machine.transitions else machine.timer_rows
            index = same(t.source, t.event).index(t)
            row = _row_id(t, index)
            for g in t.guards:
                if not v2 and g.name in V2_GUARDS:
                    continue
                guards = tuple(x for x in t.guards if x != g)
                yield (Mutant(f"drop-guard {row} {g.label}",
                              _replace(ir, machine, t, dataclasses.replace(t, guards=guards))),
                       t, g.name)
            for mutant in _row_mutants(ir, machine, t, row):
                yield mutant, t, None
        for mutant, t in _swaps(ir, machine, v2):
            yield mutant, t, None


def _row_mutants(ir: ModelIR, machine: MachineIR, t: TransitionIR, row: str
                 ) -> Iterator[Mutant]:
    """Retarget row ``t`` to every other state, drop and duplicate each of its actions."""
    for state in machine.states:
        if state != t.target:
            yield Mutant(f"retarget {row} -> {state}",
                         _replace(ir, machine, t, dataclasses.replace(t, target=state)))
    for n, act in enumerate(t.actions):
        dropped = t.actions[:n] + t.actions[n + 1:]
        yield Mutant(f"drop-action {row} {act}",
                     _replace(ir, machine, t, dataclasses.replace(t, actions=dropped)))
        doubled = t.actions[:n + 1] + (act,) + t.actions[n + 1:]
        yield Mutant(f"dup-action {row} {act}",
                     _replace(ir, machine, t, dataclasses.replace(t, actions=doubled)))


def pushing_states(machine: MachineIR) -> list[str]:
    """The states of ``machine`` with a row that runs the push action (in this model the
    registration's bound and orphaned), in the machine's order."""
    return [state for state in machine.states
            if any(t.source == state and PUSH_ACTION in t.actions for t in machine.transitions)]


def _swaps(ir: ModelIR, machine: MachineIR, v2: bool
           ) -> Iterator[tuple[Mutant, TransitionIR]]:
    """Move the push action of a row to the rows of the same event in another pushing state
    that do not push: the rule then pushes the wrong records."""
    receivers = pushing_states(machine)
    if len(receivers) < 2:
        return
    for t in machine.transitions:
        if PUSH_ACTION not in t.actions or t.source not in receivers:
            continue
        if not v2 and v2_row(t.event, t.rule):
            continue
        for other in receivers:
            if other == t.source:
                continue
            others = [o for o in machine.rows(other, t.event) if PUSH_ACTION not in o.actions]
            if not others:
                continue
            index = machine.rows(t.source, t.event).index(t)
            stripped = dataclasses.replace(
                t, actions=tuple(a for a in t.actions if a != PUSH_ACTION))
            extra = {id(o): dataclasses.replace(o, actions=(*o.actions, PUSH_ACTION))
                     for o in others}
            yield (Mutant(f"swap-{machine.name}s {_row_id(t, index)} -> {other}",
                          _replace(ir, machine, t, stripped, extra)), t)


@dataclass
class MutantResult:
    id: str
    killed_by: list[str]
    states: int
    equivalent: str | None = None


ESCALATION = Bounds(sessions=2, push_sessions=2, orphans=1, stanzas=1, max_errors=2,
                    max_devices=2)
"""Survivors of the mutant bound are explored again here, up to ESCALATION_STATES states: three
registrations with two devices allowed make the eviction order observable."""
ESCALATION_STATES = 20_000
V2_ESCALATION_STATES = 500_000
"""A survivor of the v2 mutant bound is explored again at bounded.V2_ESCALATION (with the
id-less proposal p0), up to this many states (it has 405,500: all of them)."""


def run_mutant(mutant: Mutant, bounds: Bounds, escalation: Bounds | None = ESCALATION,
               ) -> tuple[MutantResult, Result, CompiledExplorer]:
    """Explore the mutant at ``bounds`` (stopping at the first violation); a survivor is
    explored again at ``escalation`` for at most ESCALATION_STATES states."""
    tables = build_tables(mutant.ir)
    explorer = CompiledExplorer(bounds, world_class(tables))
    result = explorer.run(stop_at_first=True)
    if escalation is ESCALATION and bounds.v2:
        escalation = V2_ESCALATION
    if bounds.time:
        escalation = None  # the time bounds are their own (TIME_MUTANT_BOUNDS)
    if escalation is not None:
        escalation = dataclasses.replace(escalation, expiry=bounds.expiry)
    if not result.violations and escalation is not None and escalation != bounds:
        explorer = CompiledExplorer(escalation, world_class(tables))
        result = explorer.run(stop_at_first=True, max_states=V2_ESCALATION_STATES
                              if bounds.v2 else ESCALATION_STATES)
    killed = sorted(result.violations)
    return (MutantResult(mutant.id, killed, result.states,
                         None if killed else EQUIVALENT.get(mutant.id)), result, explorer)


def selected(bounds: Bounds) -> list[Mutant]:
    """The mutants a bound runs (``pushrules check --mutants`` with its flags)."""
    if bounds.time:
        return list(mutants(time=True, v2=bounds.v2))
    return list(mutants(timers=bounds.expiry, only_v2=bounds.v2))


def run_all(bounds: Bounds) -> list[MutantResult]:
    return [run_mutant(m, bounds)[0] for m in selected(bounds)]


def time_mutants(ir: ModelIR | None = None) -> int:
    """How many mutants of the time-based rules the other bounds leave to the time bounds
    (``pushrules check --time --mutants``, with and without ``--v2``)."""
    return sum(1 for _, t, guard in _all_mutants(ir, timers=True, v2=True) if _is_time(t, guard))


def skipped_v2(timers: bool = False) -> int:
    """How many mutants a bound without v2 events leaves out (they need ``--v2``)."""
    return sum(1 for _ in mutants(timers=timers, v2=True)) - \
        sum(1 for _ in mutants(timers=timers))
