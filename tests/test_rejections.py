"""Rejections are told apart by type (model/world.py), built in one place, and the engine's
fast path raises them itself, with the same message as the general router."""

from __future__ import annotations

import types

import pytest

from pushrules.checker.tableworld import TableWorld, world_class
from pushrules.generated import tables
from pushrules.generated.events import PushEnable, PushResult, SessionBind, SmacksHibernationEnd
from pushrules.model.reference import ReferenceWorld
from pushrules.model.world import (
    DeclaredRejection,
    ImpossibleEvent,
    UndeclaredRejection,
    UnknownRegistration,
    WorldBase,
)
from pushrules.runtime.engine import Engine

SID = "bob@example.org/phone"
PUSH = "push.example.net"


def _rejected(world: WorldBase, *events: object) -> ImpossibleEvent:
    *setup, last = events
    for event in setup:
        world.handle(event)
    with pytest.raises(ImpossibleEvent) as caught:
        world.handle(last)
    return caught.value


@pytest.mark.parametrize("events", [
    (SessionBind(SID), SessionBind(SID)),                     # a live session binds again
    (PushEnable(SID, PUSH, "n1"),),                           # a new session: none opened
    (SessionBind(SID), SmacksHibernationEnd(SID)),            # resumption of an active one
])
def test_declared_rejection_is_its_own_kind_with_one_message_on_every_engine(
        events: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _rejected(ReferenceWorld(), *events)
    table = _rejected(TableWorld(), *events)
    engine = Engine()
    for event in events[:-1]:
        engine.handle(event)
    # the fast path decides the rejection itself: the general router is not run again
    monkeypatch.setattr(WorldBase, "handle", lambda self, event: pytest.fail("re-run"))
    with pytest.raises(ImpossibleEvent) as caught:
        engine.handle(events[-1])
    for exc in (reference, table, caught.value):
        assert type(exc) is DeclaredRejection
        assert str(exc) == str(reference)
    if len(events) == 1:
        assert SID not in engine.sessions  # a rejected first event leaves no session behind


def test_push_result_for_no_registration_is_unknown_registration() -> None:
    exc = _rejected(Engine(), PushResult("bob@example.org", PUSH, "n1", True, None))
    assert isinstance(exc, UnknownRegistration) and exc.field == "jid"


def test_a_gap_in_the_tables_is_an_undeclared_rejection() -> None:
    gap = types.ModuleType("gap")
    gap.__dict__.update(vars(tables))
    gap.SESSION_REJECTIONS = {k: v for k, v in tables.SESSION_REJECTIONS.items()
                              if k != ("active", "session_bind")}
    exc = _rejected(world_class(gap)(), SessionBind(SID), SessionBind(SID))
    assert type(exc) is UndeclaredRejection
    assert "no declared rejection" in str(exc)
