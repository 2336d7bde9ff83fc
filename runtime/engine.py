"""The engine: the world driven by the generated transition tables (no rule written here)."""

from __future__ import annotations

from typing import Any

from pushrules.generated import tables
from pushrules.model.context import Ctx
from pushrules.model.events import SESSION, USER_REGISTRATIONS
from pushrules.model.records import Push, RegistrationRecord, SessionRecord
from pushrules.model.rules import SETS_RULE
from pushrules.model.world import ROUTES, UNDECLARED, WorldBase, session_rejection

Row = tuple[tuple[tuple[Any, bool], ...], str, tuple[Any, ...], str, str]
FlaggedRows = tuple[tuple[Any, ...], ...]
"""A cell's rows, each a generated row plus whether its rule pushes."""


def _with_push_flag(table: dict[str, dict[str, tuple[Row, ...]]]
                    ) -> dict[str, dict[str, FlaggedRows]]:
    """The generated rows, each with one more field: whether its rule decides the push's rule
    (a push rule, or a probe's: then taking it must set ``ctx.rule``). Computed once, so the
    hot path skips ``_enter`` when there is nothing for it to do."""
    return {
        state: {event: tuple((*row, row[3] in SETS_RULE) for row in rows)
                for event, rows in by_event.items()}
        for state, by_event in table.items()
    }


def _with_timers(table: dict[str, dict[str, tuple[Row, ...]]],
                 timers: dict[str, dict[str, tuple[Row, ...]]]
                 ) -> dict[str, dict[str, tuple[Row, ...]]]:
    """The registration rows of contract events and of the timer events (the world's clock
    raises these: model/world.py run_due) in one table."""
    return {state: {**table.get(state, {}), **timers.get(state, {})}
            for state in {*table, *timers}}


def _plain_target(rows: FlaggedRows) -> str | None:
    """The target of a cell whose one row has no guard, no action and no push rule."""
    if len(rows) == 1 and not rows[0][0] and not rows[0][2] and not rows[0][5]:
        return str(rows[0][1])
    return None


def _routes(rows: dict[str, dict[str, FlaggedRows]]) -> dict[str, tuple[Any, ...]]:
    """Contract event name -> how ``Engine.handle`` may shortcut it. A fan-out event: (None,
    the field naming its user). A session event: ({state: target} of the cells that only
    change the state of a live session, its machine event, {state: (rows, whether a row can
    end the session, the target when the one row only changes the state)}, whether rule e
    may fan its stanza out). Derived from the
    router WorldBase uses (``ROUTES``) and the generated table (no rule is written here); any
    other case takes ``WorldBase.handle``."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, route in ROUTES.items():
        if route.target == USER_REGISTRATIONS:
            out[name] = (None, route.user_field)
        elif route.target == SESSION:
            cells = {state: (cell, any(row[1] == tables.SESSION_INITIAL for row in cell),
                             _plain_target(cell))
                     for state, by_event in rows.items()
                     if (cell := by_event.get(route.machine_event))}
            state_only = {state: plain for state, (_, may_end, plain) in cells.items()
                          if plain is not None and not may_end}
            out[name] = (state_only, route.machine_event, cells, route.calls)
    return out


def _reason(state: str, event: str) -> str:
    """Why the session machine rejects ``event`` in ``state`` (no row was enabled)."""
    reason: str = tables.SESSION_REJECTIONS.get((state, event), UNDECLARED)
    return reason


class Engine(WorldBase):
    """Embed this: ``engine.handle(event) -> list[Push]``.

    Events are the typed classes of ``pushrules.generated.events``; ``ImpossibleEvent`` is
    raised, with nothing changed, for an event the current state does not allow.
    """

    _SESSION_ROWS = _with_push_flag(tables.SESSION)

    # --- the clock, for an integrator (time only ever comes from here and from events' `at`)
    def advance(self, until: float) -> list[Push]:
        """Time passes to ``until`` (seconds on the events' clock) with no event: the held
        pushes, expiries and retries due by then happen, in time order; their pushes. Raises
        ValueError for a time before the clock's (nothing changes)."""
        if until < self.time:
            raise ValueError(f"advance to {until!r}: earlier than the clock's {self.time!r} "
                             f"(time never goes back)")
        self.timed = True
        return self.run_due(until)

    def flush(self) -> list[Push]:
        """End of input: every held push is sent, each at its due time, checked against the
        state then (no expiry or retry is simulated; the clock stays). Their pushes."""
        return self.flush_held()
    _REGISTRATION_ROWS = _with_push_flag(_with_timers(tables.REGISTRATION,
                                                      tables.REGISTRATION_TIMERS))

    def handle(self, event: Any) -> list[Push]:
        route = _ROUTES.get(event.EVENT)
        if route is None or self.explain or event.at is not None:
            return super().handle(event)  # v2 times and calls take the general path
        state_only = route[0]
        if state_only is None:
            # A fan-out event for a user with no registration: nothing to do (as in WorldBase).
            if self._has_registrations(getattr(event, route[1])):
                return super().handle(event)
            self._pushes = pushes = list[Push]()
            return pushes
        if route[3] and event.stanza.call is not None:
            return super().handle(event)
        sid = event.session
        record = self.session(sid)  # a storage method: a stored engine tracks what it touched
        if record is not None:
            # Fast path, same outcome as the general one: a cell that only changes the state
            # (routine acks, stanzas to an active session, resumption).
            state = record.state
            target = state_only.get(state)
            if target is not None:
                record.state = target
                return []  # nothing was emitted: WorldBase's list of pushes is not needed
            cell = route[2].get(state)
            if cell is None:
                raise session_rejection(event, state, _reason(state, route[1]))
        else:
            cell = route[2].get(tables.SESSION_INITIAL)
            if cell is None:
                initial = tables.SESSION_INITIAL
                raise session_rejection(event, initial, _reason(initial, route[1]))
            record = self._open_session(sid)
            state = None
        rows, may_end, plain = cell
        self._pushes = pushes = []
        if plain is not None:
            record.state = plain  # one row, no guard, action or push rule: no context needed
        elif not self._take_first(rows, record, "session", route[1],
                                  Ctx(self, event, record, None, "", (), None)):
            # No row enabled, nothing changed (guards run before any action).
            if state is None:
                self._forget_session(sid)  # the record opened above
            raise session_rejection(event, record.state, _reason(record.state, route[1]))
        if may_end:
            self._drop_if_ended(sid, record)
        return pushes

    def _session_apply(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        # Decide and take in one step: the hot path of every session event.
        rows = self._SESSION_ROWS[record.state].get(event)
        if rows is not None and self._take_first(rows, record, "session", event, ctx):
            return None
        return _reason(record.state, event)

    def _fire(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> None:
        # WorldBase._fire in one call less; without a row (nothing changed) it goes the
        # general way, which raises ModelError.
        rows = self._REGISTRATION_ROWS[reg.state].get(event)
        if rows is None or not self._take_first(rows, reg, "registration", event,
                                                ctx.for_registration(reg)):
            super()._fire(reg, event, ctx)

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        rows = self._REGISTRATION_ROWS[reg.state].get(event)
        return rows is not None and self._take_first(rows, reg, "registration", event, ctx)

    def _take_first(self, rows: FlaggedRows, record: Any, machine: str, event: str,
                    ctx: Ctx) -> bool:
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


_ROUTES = _routes(Engine._SESSION_ROWS)
