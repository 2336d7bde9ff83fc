"""`pushrules check --expiry`: the model's orphan expiry (timer event ``expire``, orphaned ->
disabled) explored as an environment event; the timer rows covered and mutated; an expired
registration never pushed until enabled again. Off, the explored world is unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from pushrules.check_cmd import MUTANT_BOUNDS, check
from pushrules.checker.bounded import BoundedWorld, Bounds, TimerEvent
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.conformance import compare_compiled
from pushrules.checker.explore import Explorer
from pushrules.checker.mutants import build_tables, mutants, run_mutant
from pushrules.checker.properties import PROPERTIES
from pushrules.checker.tableworld import world_class
from pushrules.checker.transitions_encoding import TransitionsWorld
from pushrules.model.extract import extract
from pushrules.model.reference import ReferenceWorld
from pushrules.runtime.engine import Engine
from pushrules.runtime.store.engine import StoredEngine

EXPIRY_BOUNDS = dataclasses.replace(MUTANT_BOUNDS, expiry=True)
SMALL = Bounds(sessions=2, push_sessions=1, orphans=1, stanzas=1, max_devices=2, expiry=True)
TIMER_ROW = ("registration", "orphaned", "expire", 0)


class TimerEngine(Engine):
    """The generated runtime with the timer rows, as the stored engine takes them."""

    _REGISTRATION_ROWS = StoredEngine._REGISTRATION_ROWS


@pytest.fixture(scope="module")
def expiry_run() -> tuple[CompiledExplorer, object]:
    explorer = CompiledExplorer(EXPIRY_BOUNDS)
    return explorer, explorer.run()


def test_without_expiry_no_timer_event_is_raised_and_the_mark_takes_no_bits() -> None:
    off = CompiledExplorer(MUTANT_BOUNDS)
    assert not any(key[0] == "expire" for key in off.keys)
    lay = off.layout
    assert all(lay.bits[g[3]] == 0 for g in lay.g)  # the expiry mark: a constant
    result = off.run()
    assert result.ok and TIMER_ROW not in off.taken
    on = CompiledExplorer(EXPIRY_BOUNDS)
    assert [k for k in on.keys if k[0] == "expire"] == [("expire", j)
                                                         for j in range(len(on.world.nodes))]
    assert all(on.layout.bits[g[3]] == 1 for g in on.layout.g)


def test_expiry_passes_every_property_and_takes_the_timer_row(expiry_run) -> None:  # type: ignore[no-untyped-def]
    explorer, result = expiry_run
    assert result.properties == {name: "pass" for name in PROPERTIES}, {
        name: v.detail for name, v in result.violations.items()}
    assert TIMER_ROW in explorer.taken
    off = CompiledExplorer(MUTANT_BOUNDS).run()
    assert result.states > off.states and result.transitions > off.transitions


def test_an_untaken_timer_row_is_reported_only_with_expiry() -> None:
    """The timer row counts for coverage when expiry is explored: with no orphan reachable
    (no session destroyed after an enable: one session, never enabling) it is missed."""
    bounds = Bounds(sessions=1, push_sessions=0, orphans=0, stanzas=1, expiry=True)
    result = CompiledExplorer(bounds).run()
    assert any("--expire[]-->" in row for row in result.uncovered)
    off = CompiledExplorer(dataclasses.replace(bounds, expiry=False)).run()
    assert not any("expire" in row for row in off.uncovered)


def test_table_complete_covers_the_timer_events() -> None:
    ir = extract()
    registration = ir.machine("registration")
    dropped = dataclasses.replace(registration, timer_rejections=tuple(
        r for r in registration.timer_rejections if r.state != "bound"))
    gap = dataclasses.replace(ir, machines=tuple(
        dropped if m is registration else m for m in ir.machines))
    result = CompiledExplorer(SMALL, world_class(build_tables(gap))).run()
    assert "table_complete" in result.violations
    assert "(bound, expire)" in result.violations["table_complete"].detail


def test_both_explorers_agree_with_expiry() -> None:
    reference, compiled = Explorer(SMALL).run(), CompiledExplorer(SMALL).run()
    assert (reference.states, reference.transitions, reference.properties) == (
        compiled.states, compiled.transitions, compiled.properties)
    assert compiled.states > CompiledExplorer(dataclasses.replace(SMALL, expiry=False)
                                              ).run().states


def test_every_engine_agrees_on_the_expiry_steps() -> None:
    compiled = CompiledExplorer(SMALL)
    compiled.run()
    steps = compiled.steps()
    assert any(isinstance(event, TimerEvent) for _, event in steps)
    count, disagreements = compare_compiled(compiled, {
        "engine": TimerEngine, "transitions": TransitionsWorld, "reference": ReferenceWorld})
    assert count == len(steps)
    assert not disagreements, [(d.engine, d.model, d.event, d.expected, d.got)
                               for d in disagreements]


def registration_states() -> tuple[str, ...]:
    return extract().machine("registration").states


def test_timer_rows_are_mutated_only_with_expiry_and_every_timer_mutant_is_killed() -> None:
    timers = [m for m in mutants(timers=True) if " expire " in m.id]
    assert timers and not any(" expire " in m.id for m in mutants())
    rows = extract().machine("registration").timers
    names = {("registration", r.source, r.event) for r in rows}
    assert all(tuple(m.id.split(" ")[1:4]) in names for m in timers)
    assert len(timers) == sum(len(registration_states()) - 1 + 2 * len(r.actions)
                              for r in rows)  # retargets, drops and duplicates
    for mutant in timers:
        outcome, _, _ = run_mutant(mutant, EXPIRY_BOUNDS)
        assert outcome.killed_by, mutant.id


def test_an_expiry_that_leaves_the_registration_enabled_is_caught_with_a_trace() -> None:
    mutant = next(m for m in mutants(timers=True)
                  if m.id == "retarget registration orphaned expire 0 -> orphaned")
    outcome, result, explorer = run_mutant(mutant, EXPIRY_BOUNDS)
    assert "expired_never_pushed" in outcome.killed_by
    violation = result.violations["expired_never_pushed"]
    assert any(isinstance(e, TimerEvent) for e in violation.trace)
    text = violation.as_trace(explorer.world)
    assert "# timer: expire u@example.org push.example.net" in text
    assert '"event": "expire"' not in text  # not a contract event: a comment, not a line
    for line in text.splitlines():
        if not line.startswith("#"):
            json.loads(line)


def test_a_push_after_expiry_violates_the_property() -> None:
    """A model that pushes rule (b) to a disabled registration (the archive row of disabled
    pushes): after an expiry, the checker's own mark catches it, besides
    never_disabled_or_removed."""
    ir = extract()
    registration = ir.machine("registration")
    rows = tuple(dataclasses.replace(t, actions=("send_push",))
                 if (t.source, t.event) == ("disabled", "push_offline") else t
                 for t in registration.transitions)
    pushing = dataclasses.replace(ir, machines=tuple(
        dataclasses.replace(m, transitions=rows) if m is registration else m
        for m in ir.machines))
    explorer = CompiledExplorer(EXPIRY_BOUNDS, world_class(build_tables(pushing)))
    result = explorer.run()
    assert {"expired_never_pushed", "never_disabled_or_removed"} <= set(result.violations)
    trace = result.violations["expired_never_pushed"].trace
    assert any(isinstance(e, TimerEvent) for e in trace)


def test_the_command_line_option() -> None:
    runner = CliRunner()
    args = ["--sessions", "2", "--push-sessions", "2", "--orphans", "0", "--stanzas", "3",
            "--max-devices", "1"]
    on = runner.invoke(check, [*args, "--expiry", "--json"])
    off = runner.invoke(check, [*args, "--json"])
    assert on.exit_code == off.exit_code == 0, on.output + off.output
    assert json.loads(on.output)["states"] > json.loads(off.output)["states"]
    assert json.loads(on.output)["properties"]["expired_never_pushed"] == "pass"
    text = runner.invoke(check, [*args, "--expiry"]).output
    assert "expiry=True" in text
    assert "expiry" not in runner.invoke(check, args).output.splitlines()[0]


def test_bounded_world_config_turns_the_model_option_on() -> None:
    assert BoundedWorld(SMALL).config.orphan_ttl > 0
    assert BoundedWorld(dataclasses.replace(SMALL, expiry=False)).config.orphan_ttl == 0
