"""The engine: the world driven by the generated transition tables (no rule written here)."""

from __future__ import annotations

from typing import Any

from pushrules.generated import tables
from pushrules.model.context import Ctx
from pushrules.model.events import EVENTS, SESSION
from pushrules.model.records import Push, RegistrationRecord, SessionRecord
from pushrules.model.rules import PUSH_RULES
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


def _with_push_flag(table: dict[str, dict[str, tuple[Row, ...]]]) -> dict[str, dict[str, tuple]]:
    """The generated rows, each with one more field: whether its rule is a push rule (then
    taking it must set ``ctx.rule``). Computed once, so the hot path skips ``_enter`` when
    there is nothing for it to do."""
    return {
        state: {event: tuple((*row, row[3] in PUSH_RULES) for row in rows)
                for event, rows in by_event.items()}
        for state, by_event in table.items()
    }


def _state_only_cells(table: dict[str, dict[str, tuple[Row, ...]]]) -> dict[str, dict[str, str]]:
    """Contract event name -> {state: target} for the session cells whose one row has no
    guard, no action and no push rule, and does not end the session: taking such a row only
    changes the state. Derived from the generated table (no rule is written here)."""
    out: dict[str, dict[str, str]] = {}
    for spec in EVENTS:
        if spec.target != SESSION:
            continue
        for state, by_event in table.items():
            rows = by_event.get(spec.machine_event, ())
            if len(rows) != 1:
                continue
            guards, target, actions, rule, _ = rows[0]
            if not guards and not actions and rule not in PUSH_RULES \
                    and target != tables.SESSION_INITIAL:
                out.setdefault(spec.name, {})[state] = target
    return out


class Engine(WorldBase):
    """Embed this: ``engine.handle(event) -> list[Push]``.

    Events are the typed classes of ``pushrules.generated.events``; ``ImpossibleEvent`` is
    raised, with nothing changed, for an event the current state does not allow.
    """

    _SESSION_ROWS = _with_push_flag(tables.SESSION)
    _REGISTRATION_ROWS = _with_push_flag(tables.REGISTRATION)
    _STATE_ONLY = _state_only_cells(tables.SESSION)

    def handle(self, event: Any) -> list[Push]:
        # Fast path, same outcome as the general one: an event on a live session whose cell
        # only changes the state (routine acks, stanzas to an active session, resumption).
        cells = self._STATE_ONLY.get(event.EVENT)
        if cells is not None and not self.explain:
            record = self.sessions.get(event.session)
            if record is not None:
                target = cells.get(record.state)
                if target is not None:
                    record.state = target
                    self._pushes = pushes = []
                    return pushes
        return super().handle(event)

    def _session_apply(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        # Decide and take in one step: the hot path of every session event.
        rows = self._SESSION_ROWS[record.state].get(event)
        if rows is not None and self._take_first(rows, record, "session", event, ctx):
            return None
        return tables.SESSION_REJECTIONS.get((record.state, event), "no enabled transition")

    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        if choose(self._SESSION_ROWS[record.state].get(event), ctx) is not None:
            return None
        return tables.SESSION_REJECTIONS.get((record.state, event), "no enabled transition")

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        reason = self._session_apply(record, event, ctx)
        assert reason is None, reason

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        rows = self._REGISTRATION_ROWS[reg.state].get(event)
        return rows is not None and self._take_first(rows, reg, "registration", event, ctx)

    def _take_first(self, rows: tuple, record: Any, machine: str, event: str, ctx: Ctx) -> bool:
        """Take the first row whose guards all hold; False when there is none."""
        for guards, target, actions, rule, why, push in rows:
            for predicate, expected in guards:
                if predicate(ctx) is not expected:
                    break
            else:
                if push or ctx.notes is not None:
                    label = record.sid if machine == "session" else f"{record.jid} {record.node}"
                    self._enter(ctx, machine, label, record.state, target, rule, why, event)
                for act in actions:
                    act(ctx)
                record.state = target
                return True
        return False
