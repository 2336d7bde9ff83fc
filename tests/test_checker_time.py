"""The checker with time (`pushrules check --time`, with and without --v2): the real model
passes every property at both time bounds and takes every row of the time-based rules there;
named time mutants are killed by the expected property; the rules that live in actions (the
window, the flush's re-check, urgent pushes never held), which no row mutant reaches, fail
their property when switched off in the model; a time counterexample replays with `at`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest

from pushrules.checker.bounded import TIME_BOUNDS, TIME_V2_BOUNDS, Bounds
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.explore import Result
from pushrules.checker.mutants import EQUIVALENT, build_tables, mutants, run_mutant
from pushrules.checker.tableworld import TableWorld, world_class
from pushrules.generated import tables as generated_tables
from pushrules.model import actions as model_actions
from pushrules.model.config import Config
from pushrules.model.extract import V2_MACHINE_EVENTS
from pushrules.model.rules import TIME_RULES
from pushrules.runtime.replay import replay

TIME_PROPERTIES = ("held_stanza_sent", "one_push_per_window", "flush_rechecks_rules",
                   "probe_once_per_retry", "expired_never_pushed")


@pytest.fixture(scope="module")
def explored() -> dict[bool, Result]:
    """Both time bounds, explored once (about 5 and 25 s)."""
    return {v2: CompiledExplorer(TIME_V2_BOUNDS if v2 else TIME_BOUNDS).run()
            for v2 in (False, True)}


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
    assert len(_time_rows()) == 21


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
    mutant = _time_mutant("drop-guard registration disabled push_call 0 not ringing_app", v2=True)
    result = CompiledExplorer(TIME_V2_BOUNDS, world_class(build_tables(mutant.ir))).run(
        stop_at_first=True)
    assert "no_push_to_active" in result.violations
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
