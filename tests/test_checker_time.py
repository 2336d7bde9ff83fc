"""The checker with time (`pushrules check --time`, with and without --v2): the real model
passes every property at both time bounds and takes every row of the time-based rules there;
named time mutants are killed by the expected property; the rules that live in actions (the
window, the flush's re-check, urgent pushes never held), which no row mutant reaches, fail
their property when switched off in the model; a time counterexample replays with `at`."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

from pushrules.checker.bounded import (
    APP,
    CLOCK_KINDS,
    TIME_BOUNDS,
    TIME_V2_BOUNDS,
    USER,
    Bounds,
)
from pushrules.checker.compiled import CompiledExplorer, _session_value
from pushrules.checker.environment import QUEUE_EVENTS, is_session_event, queue_after
from pushrules.checker.explore import Result
from pushrules.checker.mutants import EQUIVALENT, build_tables, mutants, run_mutant
from pushrules.checker.parts import ENABLED, RegistrationPart
from pushrules.checker.tableworld import TableWorld, world_class
from pushrules.generated import tables as generated_tables
from pushrules.model import actions as model_actions
from pushrules.model.config import Config
from pushrules.model.extract import V2_MACHINE_EVENTS
from pushrules.model.rules import TIME_RULES
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.replay import replay

TIME_PROPERTIES = ("held_stanza_sent", "one_push_per_window", "flush_rechecks_rules",
                   "probe_once_per_retry", "expired_never_pushed")


@pytest.fixture(scope="module")
def explorers() -> dict[bool, tuple[CompiledExplorer, Result]]:
    """Both time bounds, explored once (about 5 and 25 s of CPU)."""
    out = {}
    for v2 in (False, True):
        explorer = CompiledExplorer(TIME_V2_BOUNDS if v2 else TIME_BOUNDS)
        out[v2] = (explorer, explorer.run())
    return out


@pytest.fixture(scope="module")
def explored(explorers: dict[bool, tuple[CompiledExplorer, Result]]) -> dict[bool, Result]:
    return {v2: result for v2, (_, result) in explorers.items()}


def _time_rows() -> set[tuple[str, str, int]]:
    """(state, event, row) of every registration row of a time-based rule, clock rows too."""
    out = set()
    for table in (generated_tables.REGISTRATION, generated_tables.REGISTRATION_TIMERS):
        for state, by_event in table.items():
            for event, rows in by_event.items():
                out |= {(state, event, n) for n, row in enumerate(rows) if row[3] in TIME_RULES}
    return out


@pytest.mark.parametrize("v2", [False, True])
def test_the_real_model_passes_at_the_time_bounds(explored: dict[bool, Result], v2: bool) -> None:
    result = explored[v2]
    assert result.ok, {name: v.detail for name, v in result.violations.items()}
    assert not result.uncovered and not result.left_to_time
    assert set(TIME_PROPERTIES) <= set(result.properties)
    assert result.states > 100_000 and result.transitions > 10 * result.states


def test_every_time_row_is_taken_at_one_of_the_time_bounds(explored: dict[bool, Result]) -> None:
    """Each time bound requires the time rows of its own events (v1's and the clock's; v2's)
    and lists the others: together they take every one."""
    left = {v2: set(explored[v2].other_time_rows) for v2 in (False, True)}
    assert left[False] and left[True] and not left[False] & left[True]
    assert all(row.split(" --", 1)[1].split("[", 1)[0] in V2_MACHINE_EVENTS
               for row in left[False])
    assert not any(row.split(" --", 1)[1].split("[", 1)[0] in V2_MACHINE_EVENTS
                   for row in left[True])
    assert len(_time_rows()) > len(left[False]) + len(left[True])  # some taken at both


def _time_mutant(mutant_id: str, v2: bool = False) -> Any:
    return next(m for m in mutants(time=True, v2=v2) if m.id == mutant_id)


@pytest.mark.parametrize("mutant_id, prop", [
    ("drop-action registration orphaned flush 0 send_held", "held_stanza_sent"),
    ("drop-action registration disabled push_result 2 retry_later", "probe_once_per_retry"),
    ("dup-action registration disabled push_session 0 send_probe", "probe_once_per_retry"),
    ("drop-action registration disabled push_offline 0 send_probe", "no_loss"),
    ("dup-action registration disabled push_result 0 enable_after_probe", "disable_recorded"),
    ("drop-guard registration disabled push_archive 0 probe_ready", "expired_never_pushed"),
    ("drop-guard registration disabled push_offline 1 not probe_ready", "deterministic"),
])
def test_time_mutants_are_killed_by_the_expected_property(mutant_id: str, prop: str) -> None:
    outcome, _, _ = run_mutant(_time_mutant(mutant_id), TIME_BOUNDS)
    assert prop in outcome.killed_by


def test_v2_time_mutant_is_killed_and_every_listed_equivalent_is_a_time_mutant() -> None:
    mutant = _time_mutant("drop-action registration disabled push_call 0 send_probe", v2=True)
    result = CompiledExplorer(TIME_V2_BOUNDS, world_class(build_tables(mutant.ir))).run(
        stop_at_first=True)
    assert "no_missed_ring" in result.violations
    ids = {m.id for v2 in (False, True) for m in mutants(time=True, v2=v2)}
    assert {i for i in EQUIVALENT if "probe" in i or "flush" in i or "retry 0" in i} <= ids


def _hold_nothing(ctx: Any, reg: Any, fresh: list[Any], due: float) -> None:
    model_actions._emit(ctx, reg, fresh, ctx.rule)


@pytest.mark.parametrize("name, replacement, prop, bounds", [
    # a push within the window is sent at once instead of held
    ("_hold", _hold_nothing, "one_push_per_window", TIME_BOUNDS),
    # the flush does not check the rules again
    ("_no_longer_pushed", lambda *args: None, "flush_rechecks_rules", TIME_BOUNDS),
    # urgent pushes are held like the others: the call does not ring now
    ("URGENT_RULES", frozenset(), "no_missed_ring", TIME_V2_BOUNDS),
])
def test_the_time_rules_in_actions_fail_their_property_when_switched_off(
        monkeypatch: pytest.MonkeyPatch, name: str, replacement: object, prop: str,
        bounds: Bounds) -> None:
    """The window, the flush's re-check and urgency live in send_push / send_held (model/
    actions.py), which no row mutant changes: switched off in the model, the property fails."""
    monkeypatch.setattr(model_actions, name, replacement)
    result = CompiledExplorer(bounds).run(max_states=60_000, graph_checks=False)
    assert prop in result.violations, sorted(result.violations)


def test_a_time_counterexample_replays_with_at() -> None:
    """The flush that sends nothing: its counterexample is a trace with `at` and ticks to the
    due times; replayed (--strict) on the mutant the held stanza is never pushed, and the real
    model (the CLI, with the options the trace names) sends it at the window's end."""
    mutant = _time_mutant("drop-action registration orphaned flush 0 send_held")
    tables = build_tables(mutant.ir)
    explorer = CompiledExplorer(TIME_BOUNDS, world_class(tables))
    violation = explorer.run(stop_at_first=True).violations["held_stanza_sent"]
    text = violation.as_trace(explorer.world)
    header, *lines = text.splitlines()
    assert header.startswith("# pushrules: --set")
    events = [json.loads(line) for line in lines if not line.startswith("#")]
    assert all("at" in event for event in events)
    assert events[-1]["event"] == "tick"
    settings = header.removeprefix("# pushrules:").split()[1::2]
    config = Config().with_settings(dict(s.split("=") for s in settings))

    def pushed(engine: TableWorld) -> list[dict[str, Any]]:
        out, err = io.StringIO(), io.StringIO()
        assert replay(text.splitlines(True), out, err, config=config, strict=True,
                      engine=engine) == 0, err.getvalue()
        return [json.loads(line) for line in out.getvalue().splitlines()]

    due = events[-1]["at"]
    assert not [p for p in pushed(world_class(tables)(config)) if p["at"] >= due]
    real = subprocess.run([sys.executable, "-m", "pushrules.cli", "replay", "--strict",
                           *header.removeprefix("# pushrules:").split(), "-"],
                          input=text, capture_output=True, text=True, check=False)
    assert real.returncode == 0, real.stderr
    at_due = [json.loads(line) for line in real.stdout.splitlines()
              if json.loads(line)["at"] == due]
    assert at_due and at_due[0]["rule"] == "b/archive"


# --- soundness: concrete runs with times land in explored states ------------------------------

def _model_codes(explorer: CompiledExplorer) -> set[tuple[int, ...]]:
    """The model part (records, enabling order) of every explored state, as packed words."""
    lay = explorer.layout
    masks = [0] * lay.words
    for f in range(lay.model_fields):
        masks[lay.word[f]] |= ((1 << lay.bits[f]) - 1) << lay.shift[f]
    rows = (explorer._codes & np.array(masks, dtype=np.uint64)).tolist()
    return {tuple(row) for row in rows}


def _abstracted(explorer: CompiledExplorer, world: TableWorld, now: float,
                window: float) -> tuple[int, ...]:
    """A concrete world's model part as the time bound keeps it: each time as whether it is
    still ahead of ``now`` (the window: ``now < last_sent + burst_window``)."""
    lay, wd = explorer.layout, explorer.world
    values: dict[int, Any] = {}
    for i, sid in enumerate(wd.sids):
        values.update(zip(lay.s[i], _session_value(wd, world.sessions.get(sid)), strict=True))
    table = world.users.get(USER, {})
    enabled = []
    for j, node in enumerate(wd.nodes):
        reg = table.get((APP, node))
        value = list(explorer._reg_value(reg))
        if reg is not None:
            value[WINDOW] = int(reg.last_sent is not None and now < reg.last_sent + window)
            if reg.state in ENABLED:
                enabled.append((reg.seq, j))
        values.update(zip(lay.r[j], value, strict=True))
    values[lay.order] = tuple(j for _, j in sorted(enabled))
    values[lay.chat] = None
    return lay.pack(values)


WINDOW = RegistrationPart._fields.index("window")


def _random_run(explorer: CompiledExplorer, rng: random.Random,
                check: Callable[[TableWorld, float, float, list[Any]], None]) -> None:
    """One concrete run of the time bound's contract events, raised as its environment raises
    them, with random option values and times (due times passing between events, several
    events at one time), checked after every event."""
    wd = explorer.world
    window, ttl, retry = (rng.choice([1, 2, 3, 5, 8]) for _ in range(3))
    config = dataclasses.replace(wd.config, burst_window=window, orphan_ttl=ttl,
                                 retry_after=retry)
    world = TableWorld(config, clock=lambda: 0.0)
    trace: list[Any] = []
    for setup in wd.prefix():
        world.handle(dataclasses.replace(setup, at=0))
        trace.append(setup)
    keys = [k for k in explorer.keys if k[0] not in CLOCK_KINDS]
    tracked = set(explorer.tracked)
    now, queues, pending = 0.0, {i: () for i in tracked}, set()
    for _ in range(16):
        key = rng.choice(keys)
        kind = key[0]
        reg = world.registration((USER, APP, wd.nodes[key[1]])) if kind == "result" else None
        if (kind == "queued" and key[2] in queues.get(key[1], ())) or (
                kind == "offline" and any(s.state == "active" for s in world.sessions.values())
        ) or (reg is not None and key[1] not in pending):
            continue
        now += rng.choice([0, 0.5, 1, 2, 3])
        event = dataclasses.replace(
            wd.event(key, queues.get(key[1], ()) if kind in QUEUE_EVENTS else ()), at=now)
        trace.append(event)
        try:
            pushes, accepted = world.handle(event), True
        except ImpossibleEvent:  # rejected; what came due before it still happened
            pushes, accepted = world._pushes, False
        new = queue_after(key, key[1] in tracked, partial(queues.get, key[1], ())) \
            if accepted and is_session_event(kind) else None
        if new is not None:
            queues[key[1]] = new
        for i in tracked:
            if world.sessions.get(wd.sids[i]) is None:
                queues[i] = ()
        pending |= {wd.reg_index[(p.user, p.jid, p.node)] for p in pushes}
        if accepted and kind == "result":
            pending.discard(key[1])
        check(world, now, window, trace)


def test_concrete_runs_with_times_land_in_explored_states(
        explorers: dict[bool, tuple[CompiledExplorer, Result]]) -> None:
    """Soundness of the time abstraction, tested: 300 concrete runs on the real tables, with
    random burst_window, orphan_ttl, retry_after and `at` (the model's own clock firing the
    due times), never reach a model state the time bound did not explore."""
    explorer = explorers[False][0]
    codes = _model_codes(explorer)
    checked = 0

    def check(world: TableWorld, now: float, window: float, trace: list[Any]) -> None:
        nonlocal checked
        code = _abstracted(explorer, world, now, window)
        assert code in codes, (explorer.model(code), [(e.EVENT, e.at) for e in trace])
        checked += 1

    rng = random.Random(14)
    for _ in range(300):
        _random_run(explorer, rng, check)
    assert checked > 2000
