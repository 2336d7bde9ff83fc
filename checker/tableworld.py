"""The generated runtime as the checker runs it: the world stepped by transition tables, with
every row's guards evaluated so determinism and row coverage can be checked.

The tables are generated/tables.py, or tables built in memory from a mutated IR (mutants.py) by
the same template `pushrules render` uses. No rule is written here: rows are taken as they are.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pushrules.generated import tables as generated_tables
from pushrules.model.context import Ctx
from pushrules.model.records import RegistrationRecord, SessionRecord
from pushrules.model.world import UNDECLARED, WorldBase


def enabled_rows(rows: tuple[Any, ...] | None, ctx: Ctx) -> list[int]:
    """Indexes of the rows whose guards all hold."""
    if not rows:
        return []
    found = []
    for index, row in enumerate(rows):
        for predicate, expected in row[0]:
            if predicate(ctx) is not expected:
                break
        else:
            found.append(index)
    return found


class TableWorld(WorldBase):
    """A world over one set of tables. ``taken`` collects (machine, state, event, row) for row
    coverage; ``nondeterministic`` collects (machine, state, event, rows) where more than one
    row was enabled (the first is taken, as the runtime does)."""

    tables: ModuleType = generated_tables
    _registration_rows: dict[str, dict[str, tuple[Any, ...]]]  # per class (so per tables)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken: set[tuple[str, str, str, int]] = set()
        self.nondeterministic: list[tuple[str, str, str, tuple[int, ...]]] = []
        self._pending: tuple[int, tuple[Any, ...]] | None = None

    def _pick(self, machine: str, table: dict[Any, Any], state: str, event: str,
              ctx: Ctx) -> tuple[int, tuple[Any, ...]] | None:
        rows = table.get(state, {}).get(event)
        found = enabled_rows(rows, ctx)
        if not found:
            return None
        if len(found) > 1:
            self.nondeterministic.append((machine, state, event, tuple(found)))
        return found[0], rows[found[0]]

    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        self._pending = self._pick("session", self.tables.SESSION, record.state, event, ctx)
        if self._pending is not None:
            return None
        reason: str = self.tables.SESSION_REJECTIONS.get((record.state, event), UNDECLARED)
        return reason

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        assert self._pending is not None
        index, row = self._pending
        self._take(record, "session", record.sid, event, index, row, ctx)

    @classmethod
    def registration_table(cls) -> dict[str, dict[str, tuple[Any, ...]]]:
        """The registration rows: the contract's and the model's timer rows (the timer events
        are raised only by a checker with expiry, through ``fire_registration``), per tables."""
        found = cls.__dict__.get("_registration_rows")
        if found is None:
            timers = getattr(cls.tables, "REGISTRATION_TIMERS", {})
            found = {state: {**cls.tables.REGISTRATION.get(state, {}), **timers.get(state, {})}
                     for state in {*cls.tables.REGISTRATION, *timers}}
            cls._registration_rows = found
        return found

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        picked = self._pick("registration", self.registration_table(), reg.state, event, ctx)
        if picked is None:
            return False
        self._take(reg, "registration", f"{reg.jid} {reg.node}", event, picked[0], picked[1],
                   ctx)
        return True

    def _take(self, record: Any, machine: str, label: str, event: str, index: int,
              row: tuple[Any, ...],
              ctx: Ctx) -> None:
        _, target, actions, rule, why = row
        self.taken.add((machine, record.state, event, index))
        self._enter(ctx, machine, label, record.state, target, rule, why, event)
        for act in actions:
            act(ctx)
        record.state = target


def world_class(tables: ModuleType) -> type[TableWorld]:
    """A TableWorld subclass over other tables (a mutant's)."""
    return type("MutantTableWorld", (TableWorld,), {"tables": tables})
