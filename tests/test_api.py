"""The public API: `from pushrules import ...` names every part an integrator needs, loads
nothing until used, and every error pushrules raises on purpose is a PushrulesError."""

from __future__ import annotations

import subprocess
import sys

import pushrules
from pushrules.model.events import EVENTS


def test_all_names_resolve_and_cover_every_contract_event():
    for name in pushrules.__all__:
        assert getattr(pushrules, name) is not None, name
    assert {spec.class_name for spec in EVENTS} <= set(pushrules.__all__)
    assert pushrules.SessionBind is pushrules.events.SessionBind
    assert pushrules.EVENT_CLASSES["session-bind"] is pushrules.SessionBind
    assert set(dir(pushrules)) >= set(pushrules.__all__)


def test_importing_pushrules_loads_neither_the_engine_nor_the_model():
    probe = ("import sys, pushrules; "
             "print(sorted(m for m in sys.modules if m.startswith('pushrules')))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['pushrules']"


def test_an_unknown_name_is_an_attribute_error():
    try:
        pushrules.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def _error_classes() -> dict[str, type]:
    from pushrules.checker.packed import BoundExceeded
    from pushrules.model.stanza import StanzaError
    from pushrules.model.world import ImpossibleEvent, ModelError
    from pushrules.render import RenderError
    from pushrules.runtime.store.base import (
        StoreConflict,
        StoreCorrupt,
        StoreError,
        StoreUnavailable,
    )
    from pushrules.runtime.store.local_redis import PortTaken, RedisServerMissing
    from pushrules.runtime.trace import TraceError
    from pushrules.runtime.xmpp.publish import PublishError
    from pushrules.serve_cmd import SettingsError

    found = [ImpossibleEvent, ModelError, StanzaError, TraceError, PublishError, StoreError,
             StoreUnavailable, StoreCorrupt, StoreConflict, RedisServerMissing, PortTaken,
             RenderError, SettingsError, BoundExceeded]
    return {cls.__name__: cls for cls in found}


def test_every_error_class_is_a_pushrules_error_and_keeps_its_builtin_base():
    classes = _error_classes()
    assert len(classes) == 14
    for name, cls in classes.items():
        assert issubclass(cls, pushrules.PushrulesError), name
    for name in ("ImpossibleEvent", "StanzaError", "TraceError", "PublishError", "SettingsError"):
        assert issubclass(classes[name], ValueError), name
    for name in ("ModelError", "StoreError", "RedisServerMissing", "PortTaken", "RenderError"):
        assert issubclass(classes[name], RuntimeError), name
    assert issubclass(classes["StoreUnavailable"], classes["StoreError"])
