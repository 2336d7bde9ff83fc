"""pushrules: when an XMPP server should send XEP-0357 push notifications.

The public API, for integrators::

    from pushrules import Engine, Config, SessionBind, PushEnable, parse_stanza, ImpossibleEvent

- ``Engine`` (the model's generated tables; ``handle(event) -> list[Push]``), ``Config`` (the
  rule options, ``--set``), ``Push`` (a decided push);
- the contract's typed events (``SessionBind``, ``PushEnable``, ... ``PushResult``, and v2's
  ``MessageBareGroupchat``, ``CsiState``, ``ChatSettings``, ``PushRemoteDisable``, ``Tick``;
  all of them in ``EVENT_CLASSES`` by contract name, the module as ``events``),
  ``parse_event`` (one JSON object to a typed event), ``Stanza`` and ``parse_stanza``;
- ``StoredEngine`` and ``open_store`` (state in SQLite or Redis);
- errors: ``PushrulesError`` is the base of every error pushrules raises on purpose;
  ``ImpossibleEvent`` (the state does not allow the event; nothing changed), ``StanzaError``,
  ``TraceError``, ``StoreError``, ``StoreUnavailable``.

Names are imported on first use, so ``pushrules --help`` does not load the engine. Further
packages: ``pushrules.model`` (the rules), ``pushrules.runtime`` (engine, replay, ``xmpp``
dispatch, ``store``), ``pushrules.generated`` (rendered from the model), ``pushrules.checker``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EVENTS = "pushrules.generated.events"
_LAZY: dict[str, str] = {
    "Engine": "pushrules.runtime.engine",
    "Config": "pushrules.model.config",
    "Push": "pushrules.model.records",
    "Stanza": "pushrules.model.stanza",
    "parse_stanza": "pushrules.model.stanza",
    "parse_event": "pushrules.runtime.trace",
    "StoredEngine": "pushrules.runtime.store",
    "open_store": "pushrules.runtime.store",
    "PushrulesError": "pushrules.model.errors",
    "ImpossibleEvent": "pushrules.model.world",
    "StanzaError": "pushrules.model.stanza",
    "TraceError": "pushrules.runtime.trace",
    "StoreError": "pushrules.runtime.store",
    "StoreUnavailable": "pushrules.runtime.store",
    "Event": _EVENTS,
    "EVENT_CLASSES": _EVENTS,
    # The contract's events (model/events.py; a test keeps this list complete).
    "SessionBind": _EVENTS,
    "PushEnable": _EVENTS,
    "PushDisable": _EVENTS,
    "SmacksAckDelayed": _EVENTS,
    "SmacksAckReceived": _EVENTS,
    "SmacksHibernationStart": _EVENTS,
    "SmacksHibernationEnd": _EVENTS,
    "StanzaQueued": _EVENTS,
    "SessionDestroyed": _EVENTS,
    "ArchiveMessageAdded": _EVENTS,
    "MessageOfflineHandle": _EVENTS,
    "PushResult": _EVENTS,
    "MessageBareGroupchat": _EVENTS,
    "CsiState": _EVENTS,
    "ChatSettings": _EVENTS,
    "PushRemoteDisable": _EVENTS,
    "Tick": _EVENTS,
}

__all__ = [
    "ArchiveMessageAdded", "ChatSettings", "Config", "CsiState", "EVENT_CLASSES", "Engine",
    "Event", "ImpossibleEvent", "MessageBareGroupchat", "MessageOfflineHandle", "Push",
    "PushDisable", "PushEnable", "PushRemoteDisable", "PushResult", "PushrulesError",
    "SessionBind", "SessionDestroyed", "SmacksAckDelayed", "SmacksAckReceived",
    "SmacksHibernationEnd", "SmacksHibernationStart", "Stanza", "StanzaError", "StanzaQueued",
    "StoreError", "StoreUnavailable", "StoredEngine", "Tick", "TraceError", "__version__",
    "events", "open_store", "parse_event", "parse_stanza",
]

if TYPE_CHECKING:
    from pushrules.generated import events as events
    from pushrules.generated.events import (
        EVENT_CLASSES,
        ArchiveMessageAdded,
        ChatSettings,
        CsiState,
        Event,
        MessageBareGroupchat,
        MessageOfflineHandle,
        PushDisable,
        PushEnable,
        PushRemoteDisable,
        PushResult,
        SessionBind,
        SessionDestroyed,
        SmacksAckDelayed,
        SmacksAckReceived,
        SmacksHibernationEnd,
        SmacksHibernationStart,
        StanzaQueued,
        Tick,
    )
    from pushrules.model.config import Config
    from pushrules.model.errors import PushrulesError
    from pushrules.model.records import Push
    from pushrules.model.stanza import Stanza, StanzaError, parse_stanza
    from pushrules.model.world import ImpossibleEvent
    from pushrules.runtime.engine import Engine
    from pushrules.runtime.store import StoredEngine, StoreError, StoreUnavailable, open_store
    from pushrules.runtime.trace import TraceError, parse_event


def __getattr__(name: str) -> Any:
    if name == "events":
        module = importlib.import_module(_EVENTS)
    elif name in _LAZY:
        module = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'pushrules' has no attribute {name!r}")
    globals()[name] = module  # imported once
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
