"""The engine: the world driven by the generated transition tables (no rule written here)."""

from __future__ import annotations

from typing import Any

from pushrules.generated import tables
from pushrules.model.context import Ctx
from pushrules.model.records import RegistrationRecord, SessionRecord
from pushrules.model.world import WorldBase

Row = tuple[tuple[tuple[Any, bool], ...], str, tuple[Any, ...], str, str]


def choose(rows: tuple[Row, ...] | None, ctx: Ctx) -> Row | None:
    """The row whose guards all hold, or None."""
    if rows is None:
        return None
    for row in rows:
        for predicate, expected in row[0]:
            if predicate(ctx) is not expected:
                break
        else:
            return row
    return None


class Engine(WorldBase):
    """Embed this: ``engine.handle(event) -> list[Push]``.

    Events are the typed classes of ``pushrules.generated.events``; ``ImpossibleEvent`` is
    raised, with nothing changed, for an event the current state does not allow.
    """

    _SESSION = tables.SESSION
    _REGISTRATION = tables.REGISTRATION

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chosen: Row | None = None

    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        row = choose(self._SESSION[record.state].get(event), ctx)
        self._chosen = row
        if row is not None:
            return None
        return tables.SESSION_REJECTIONS.get((record.state, event), "no enabled transition")

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        row = self._chosen
        assert row is not None
        self._take(record, "session", record.sid, event, row, ctx)

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        row = choose(self._REGISTRATION[reg.state].get(event), ctx)
        if row is None:
            return False
        self._take(reg, "registration", f"{reg.jid} {reg.node}", event, row, ctx)
        return True

    def _take(self, record: Any, machine: str, label: str, event: str, row: Row,
              ctx: Ctx) -> None:
        _, target, actions, rule, why = row
        self._enter(ctx, machine, label, record.state, target, rule, why, event)
        for act in actions:
            act(ctx)
        record.state = target
