"""A time counterexample as a trace with ``at``: times and option values that realize its order.

The time bound explores the clock's events in any order (checker/PROPERTIES.md, "Time"): a
held push, an expiry or a retry comes due, or a burst window ends, whenever its due time is
ahead. A counterexample is such an order. To replay it (``pushrules replay --strict``), each
contract event gets an ``at`` one second after the event before, each clock event becomes a
``tick`` to exactly its due time (read from the model's own records: ``hold_until``,
``expire_at``, ``retry_at``, ``last_sent + burst_window``), and the options burst_window,
orphan_ttl and retry_after get values. Which values realize the order is found by trying
each candidate on a real world over the same tables (TableWorld): the trace is kept only when
every step, run with those times, decides the pushes the explored step decided and the clock
fires exactly the due time the explored clock event reached (nothing else comes due first).
An order no candidate realizes is reported as such (the abstraction also explores orders that
one value per option cannot produce: see PROPERTIES.md).
"""

from __future__ import annotations

import dataclasses
import json
from itertools import permutations
from typing import TYPE_CHECKING, Any

from pushrules.generated import events as ge
from pushrules.model.records import TIMER_NAMES

from .bounded import TimerEvent
from .explore import Violation
from .properties import PROPERTIES

if TYPE_CHECKING:
    from .compiled import CompiledExplorer

CANDIDATES = [dict(zip(("burst_window", "orphan_ttl", "retry_after"), values, strict=True))
              for scale in (1000, 10) for values in permutations((scale, 2 * scale, 3 * scale))]
"""Option values tried, in order: with durations far apart and one second between contract
events, the due times of different kinds come in the order of the durations and those of one
kind in the order they started; the small ones let a due time pass between events."""

_DUE = {"flush": "hold_until", "expire": "expire_at", "retry": "retry_at"}


def _shape(pushes: list[Any]) -> list[tuple[Any, ...]]:
    """Pushes compared without their time."""
    return [(p.node, p.rule, p.stanzas, p.important, p.urgent) for p in pushes]


def _steps(explorer: CompiledExplorer, violation: Violation) -> list[tuple[Any, list[Any]]]:
    """(event, pushes the explored step decided) along the counterexample's path."""
    chain = []
    n = violation.state
    while n > 0:
        chain.append((int(explorer._parent[n]), int(explorer._via[n])))
        n = chain[-1][0]
    chain.reverse()
    if violation.via >= 0:
        chain.append((violation.state, violation.via))
    out = []
    for state, e in chain:
        leaf, _ = explorer.compute(e, explorer.code(state))
        out.append((leaf.event, leaf.pushes))
    return out


def _due(world: Any, event: TimerEvent, window: float) -> float | None:
    reg = world.registration((event.user, event.jid, event.node))
    if reg is None:
        return None
    if event.EVENT == "window":
        return None if reg.last_sent is None else float(reg.last_sent + window)
    due = getattr(reg, _DUE[event.EVENT])
    return None if due is None else float(due)


def _realize(explorer: CompiledExplorer, steps: list[tuple[Any, list[Any]]],
             options: dict[str, Any]) -> list[tuple[Any, float]] | None:
    """The steps with their times under ``options``, or None when they decide otherwise."""
    wd = explorer.world
    config = dataclasses.replace(wd.config, **options)
    world = explorer.world_cls(config, explain=True, clock=lambda: 0.0)
    timed: list[tuple[Any, float]] = []
    for event in wd.prefix():
        world.handle(dataclasses.replace(event, at=0))
        timed.append((event, 0.0))
    now = 0.0
    for event, pushes in steps:
        if isinstance(event, TimerEvent):
            due = _due(world, event, config.burst_window)
            if due is None or due <= now:
                return None
            got = world.handle(ge.Tick(at=due))
            fired = [(step.timer, step.reg) for step in world.due_log]
            want = [] if event.EVENT == "window" else [(TIMER_NAMES[event.EVENT],
                                                        f"{event.jid} {event.node}")]
            if fired != want:
                return None  # another due time came first, or this one was not due
            now = due
        else:
            now += 1
            got = world.handle(dataclasses.replace(event, at=now))
            if world.due_log:
                return None  # something came due before it that the explored step did not
        if _shape(got) != _shape(pushes):
            return None
        timed.append((event, now))
    return timed


def timed_trace(explorer: CompiledExplorer, violation: Violation) -> str | None:
    """The counterexample as a replayable trace with ``at`` (None: no candidate realizes it)."""
    if violation.state < 0:
        return None
    steps = _steps(explorer, violation)
    for options in CANDIDATES:
        try:
            timed = _realize(explorer, steps, options)
        except Exception:  # noqa: BLE001  (a mutant's model may fail where the order differs)
            timed = None
        if timed is not None:
            return _render(explorer, violation, timed, options)
    return None


def _render(explorer: CompiledExplorer, violation: Violation, timed: list[tuple[Any, float]],
            options: dict[str, int]) -> str:
    wd = explorer.world
    sets = " ".join(f"--set {name}={value}" for name, value in
                    [("max_errors", wd.config.max_errors), ("max_devices", wd.config.max_devices),
                     *options.items()])
    lines = [f"# pushrules: {sets}",
             f"# property violated: {violation.prop}: {PROPERTIES[violation.prop]}",
             f"# {violation.detail}",
             f"# bounds: {wd.bounds.describe()}",
             f"# replay: pushrules replay --strict {sets} TRACE",
             "# the clock's events are ticks to their due times (checker/timing.py)"]
    setup = len(wd.prefix())
    for n, (event, at) in enumerate(timed):
        if n == 0 and setup:
            lines.append("# setup: leave the orphaned registration(s)")
        if n == setup:
            lines.append("# exploration")
        if n == len(timed) - 1 and violation.via >= 0:
            lines.append("# the violating step")
        if isinstance(event, TimerEvent):
            lines.append(f"# the clock: {event.EVENT} of {event.node}")
            lines.append(json.dumps({"event": "tick", "at": _number(at)}))
        else:
            line = wd.to_json(event)
            line["at"] = _number(at)
            lines.append(json.dumps(line))
    return "\n".join(lines) + "\n"


def _number(at: float) -> int | float:
    return int(at) if float(at).is_integer() else at

