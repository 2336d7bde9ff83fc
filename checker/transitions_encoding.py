"""An independent second encoding of both machines, written by hand with the `transitions`
library from shared/spec/events.md and the model's documentation, not generated from the IR.

Routing, records and the named guards and actions are the shared ones (model/world.py,
model/guards.py, model/actions.py); only the stepping (which transition a machine takes, in
which state it ends, which actions run) is encoded here, as `transitions` Machines with named
conditions. The conformance tests check it against the psm reference and the generated runtime.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine
from transitions.core import MachineError

from pushrules.model.actions import ACTIONS
from pushrules.model.context import Ctx
from pushrules.model.guards import GUARDS
from pushrules.model.records import RegistrationRecord, SessionRecord
from pushrules.model.registration import REJECTIONS as REGISTRATION_REASONS
from pushrules.model.session import REJECTIONS as SESSION_REASONS
from pushrules.model.world import UNDECLARED, WorldBase

LIVE = ["active", "ack_delayed", "hibernated"]
ENABLED = ["bound", "orphaned"]

# (trigger, source(s), dest (None: internal, state unchanged), conditions, unless, actions, rule)
SESSION_TRANSITIONS: list[tuple[Any, ...]] = [
    ("session_bind", "offline", "active", [], [], [], "session/lifecycle"),
    ("push_enable", ["active", "ack_delayed"], None, [], [], ["bind_registration"],
     "reg/enable"),
    ("push_disable", ["active", "ack_delayed"], None, [], [], ["remove_registrations"],
     "reg/disable"),
    ("smacks_ack_delayed", "active", "ack_delayed", ["bound"], [], ["push_queue"],
     "a/ack-delayed"),
    ("smacks_ack_delayed", "active", "ack_delayed", [], ["bound"], [], "session/no-push"),
    ("smacks_ack_received", "ack_delayed", "active", [], [], [], "session/lifecycle"),
    ("smacks_ack_received", "active", None, [], [], [], "session/lifecycle"),
    ("smacks_hibernation_start", ["active", "ack_delayed"], "hibernated", ["bound"], [],
     ["push_queue"], "a/hibernation-start"),
    ("smacks_hibernation_start", ["active", "ack_delayed"], "hibernated", [], ["bound"], [],
     "session/no-push"),
    ("smacks_hibernation_end", "hibernated", "active", [], [], [], "session/lifecycle"),
    ("stanza_queued", "active", None, [], [], [], "session/no-push"),
    ("stanza_queued", ["ack_delayed", "hibernated"], None, ["bound"], [], ["push_stanza"],
     "a/queued"),
    ("stanza_queued", ["ack_delayed", "hibernated"], None, [], ["bound"], [],
     "session/no-push"),
    ("session_destroyed", LIVE, "offline", ["bound"], [], ["orphan_registration"],
     "reg/orphan"),
    ("session_destroyed", LIVE, "offline", [], ["bound"], [], "session/lifecycle"),
]

REGISTRATION_TRANSITIONS: list[tuple[Any, ...]] = [
    ("enable", ["absent", "disabled"], "bound", [], [], ["store_registration", "reset_errors"],
     "reg/enable"),
    ("enable", "bound", None, [], [], ["store_registration"], "reg/enable"),
    ("enable", "orphaned", "bound", [], [], ["store_registration"], "reg/enable"),
    ("unbind", "bound", "orphaned", [], [], ["release_session"], "reg/orphan"),
    ("disable", ENABLED, "disabled", [], [], ["disable_by_client"], "reg/disable"),
    ("evict", ENABLED, "disabled", [], [], ["evict_registration"], "reg/evict"),
    ("push_session", "bound", None, [], [], ["send_push"], "dedup"),
    ("push_archive", "orphaned", None, ["addressed_to_user"], [], ["send_push"], "b/archive"),
    ("push_archive", "orphaned", None, [], ["addressed_to_user"], [], "b/archive"),
    ("push_archive", "bound", None, [], [], [], "b/archive"),
    ("push_archive", "disabled", None, [], [], [], "reg/disable"),
    ("push_offline", ENABLED, None, [], [], ["send_push"], "c/offline"),
    ("push_offline", "disabled", None, [], [], [], "reg/disable"),
    ("push_result", ENABLED, None, ["result_ok"], [], ["reset_errors"], "errors/count"),
    ("push_result", ENABLED, None, ["result_wait"], [], [], "errors/count"),
    ("push_result", ENABLED, None, ["counted_error", "below_max_errors"], [], ["count_error"],
     "errors/count"),
    ("push_result", ENABLED, "disabled", ["counted_error"], ["below_max_errors"],
     ["count_error", "disable_for_errors"], "errors/count"),
    ("push_result", "disabled", None, [], [], [], "errors/count"),
    # the timer event: orphan_ttl elapsed bound to no live session (a store's clock raises it)
    ("expire", "orphaned", "disabled", [], [], ["disable_for_expiry"], "reg/expire"),
]


class _Cursor:
    """The one model of a Machine: it stands for whichever record is being stepped, so one
    Machine per kind serves every record (building a Machine per record is slow)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.record: Any = None
        self.world: WorldBase | None = None
        self._idle_state = "offline"

    @property
    def state(self) -> str:
        return self._idle_state if self.record is None else self.record.state

    @state.setter
    def state(self, value: str) -> None:
        if self.record is None:
            self._idle_state = value
        else:
            self.record.state = value


def _named(fn: Any) -> Any:
    def method(self: _Cursor, ctx: Ctx) -> Any:
        return fn(ctx)

    method.__name__ = fn.__name__
    return method


for _name, _fn in {**GUARDS, **ACTIONS}.items():
    setattr(_Cursor, _name, _named(_fn))


class _Enter:
    """`before` callback: report the transition taken to the world (rule tag, explanation)."""

    def __init__(self, cursor: _Cursor, dest: str | None, rule: str) -> None:
        self.cursor, self.dest, self.rule = cursor, dest, rule

    def __call__(self, ctx: Ctx) -> None:
        record, world = self.cursor.record, self.cursor.world
        assert world is not None
        label = record.sid if self.cursor.kind == "session" else f"{record.jid} {record.node}"
        world._enter(ctx, self.cursor.kind, label, record.state, self.dest or record.state,
                     self.rule, "transitions encoding", "")


def _machine(cursor: _Cursor, states: list[str], initial: str,
             table: list[tuple[Any, ...]]) -> Machine:
    machine = Machine(model=cursor, states=states, initial=initial, auto_transitions=False,
                      send_event=False, ignore_invalid_triggers=False)
    for trigger, source, dest, conditions, unless, actions, rule in table:
        machine.add_transition(trigger, source, dest, conditions=conditions, unless=unless,
                               before=[_Enter(cursor, dest, rule), *actions])
    return machine


class TransitionsWorld(WorldBase):
    """The world stepped by `transitions` Machines. The two Machines (and their cursors) are
    built once and shared by every world; a step points the cursor at the record and world."""

    _cursors: tuple[_Cursor, _Cursor] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if TransitionsWorld._cursors is None:
            session, registration = _Cursor("session"), _Cursor("registration")
            _machine(session, ["offline", *LIVE], "offline", SESSION_TRANSITIONS)
            _machine(registration, ["absent", *ENABLED, "disabled"], "absent",
                     REGISTRATION_TRANSITIONS)
            TransitionsWorld._cursors = (session, registration)
        self._session, self._registration = TransitionsWorld._cursors

    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        cursor = self._session
        saved, cursor.record = cursor.record, record
        cursor.world = self
        try:
            allowed = getattr(cursor, f"may_{event}")(ctx)
        except MachineError:
            allowed = False
        finally:
            cursor.record = saved
        if allowed:
            return None
        return SESSION_REASONS.get((record.state, event), UNDECLARED)

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        cursor = self._session
        saved, cursor.record = cursor.record, record
        cursor.world = self
        try:
            getattr(cursor, event)(ctx)
        finally:
            cursor.record = saved

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        cursor = self._registration
        saved, cursor.record = cursor.record, reg
        cursor.world = self
        try:
            return bool(getattr(cursor, event)(ctx))
        except MachineError:
            return False
        finally:
            cursor.record = saved


__all__ = ["TransitionsWorld", "REGISTRATION_REASONS"]
