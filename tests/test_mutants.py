"""The checker builds mutant tables without cli/, from the same template as `pushrules render`,
and derives its operators from the model IR."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pushrules.checker.mutants import PUSH_ACTION, mutants, pushing_states
from pushrules.checker.tablegen import tables_source
from pushrules.model.extract import extract

ROOT = Path(__file__).resolve().parents[1]


def test_tables_built_in_memory_are_the_generated_tables() -> None:
    assert tables_source(extract()) == (ROOT / "generated" / "tables.py").read_text()


def test_checker_does_not_import_the_command_line() -> None:
    for path in (ROOT / "checker").glob("*.py"):
        text = path.read_text()
        assert "pushrules.render" not in text and "from pushrules import" not in text, path


def test_pushing_states_come_from_the_rows_that_push() -> None:
    ir = extract()
    registration = next(m for m in ir.machines if m.name == "registration")
    assert pushing_states(registration) == ["bound", "orphaned"]
    session = next(m for m in ir.machines if m.name == "session")
    assert pushing_states(session) == []


def test_swap_mutants_follow_a_renamed_state() -> None:
    """Rename the orphaned state in the IR: the swap mutant names the new state, so no state
    name is written in the operators."""
    ir = extract()
    rename = {"orphaned": "left_behind"}

    def renamed(m):  # type: ignore[no-untyped-def]
        if m.name != "registration":
            return m
        rows = tuple(dataclasses.replace(t, source=rename.get(t.source, t.source),
                                         target=rename.get(t.target, t.target))
                     for t in m.transitions)
        return dataclasses.replace(m, states=tuple(rename.get(s, s) for s in m.states),
                                   transitions=rows)

    changed = dataclasses.replace(ir, machines=tuple(renamed(m) for m in ir.machines))
    swaps = [m.id for m in mutants(changed) if m.id.startswith("swap-")]
    assert "swap-registrations registration left_behind push_archive 0 -> bound" in swaps
    assert all("left_behind" in m and "orphaned" not in m for m in swaps)
    assert PUSH_ACTION == "send_push"
