"""The reference executable model: the world driven by python-statemachine instances.

Slow (tens of microseconds per event) and exact: an event psm does not allow raises
TransitionNotAllowed. The generated runtime must agree with it on every transition.
"""

from __future__ import annotations

from typing import Any

from statemachine.exceptions import TransitionNotAllowed

from .context import Ctx
from .records import RegistrationRecord, SessionRecord
from .registration import REJECTIONS as REGISTRATION_REJECTIONS
from .registration import Registration
from .session import REJECTIONS as SESSION_REJECTIONS
from .session import PushSession
from .world import UNDECLARED, WorldBase


class _Tracing:
    """Reports the transition psm picked to the world before its actions run."""

    world: WorldBase
    label: str
    kind: str

    def before_transition(self, transition: Any, ctx: Ctx) -> None:
        self.world._enter(ctx, self.kind, self.label, transition.source.id,
                          transition.target.id, transition.rule, transition.why,
                          str(next(iter(transition.events))))


class ReferenceSession(_Tracing, PushSession):
    kind = "session"


class ReferenceRegistration(_Tracing, Registration):
    kind = "registration"


def _machine(cls: type, record: Any, world: WorldBase, label: str) -> Any:
    machine = cls(model=record, state_field="state", start_value=record.state)
    machine.world = world
    machine.label = label
    return machine


class ReferenceWorld(WorldBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._machines: dict[int, Any] = {}

    def _sm(self, record: Any, cls: type, label: str) -> Any:
        machine = self._machines.get(id(record))
        if machine is None or machine.model is not record:
            machine = _machine(cls, record, self, label)
            self._machines[id(record)] = machine
        return machine

    def _session_rejection(self, record: SessionRecord, event: str, ctx: Ctx) -> str | None:
        machine = self._sm(record, ReferenceSession, record.sid)
        enabled = {e.id for e in machine.enabled_events(ctx=ctx)}
        if event in enabled:
            return None
        return SESSION_REJECTIONS.get((record.state, event), UNDECLARED)

    def _session_step(self, record: SessionRecord, event: str, ctx: Ctx) -> None:
        self._sm(record, ReferenceSession, record.sid).send(event, ctx=ctx)
        if record.state == "offline" and record.binding is None:
            self._machines.pop(id(record), None)

    def _registration_step(self, reg: RegistrationRecord, event: str, ctx: Ctx) -> bool:
        machine = self._sm(reg, ReferenceRegistration, f"{reg.jid} {reg.node}")
        try:
            machine.send(event, ctx=ctx)
        except TransitionNotAllowed:
            return False
        return True


__all__ = ["ReferenceWorld", "REGISTRATION_REJECTIONS"]
