"""The runtime integrators embed: the engine driven by the generated tables (``engine``), trace
parsing (``trace``) and replay (``replay``), XEP-0357 dispatch over XMPP (``xmpp``) and the
stores that keep state across restarts and nodes (``store``). The top-level ``pushrules``
package re-exports the public names."""

from pushrules.generated.events import EVENT_CLASSES, Event
from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.model.world import ImpossibleEvent

from .engine import Engine

__all__ = ["Config", "Engine", "EVENT_CLASSES", "Event", "ImpossibleEvent", "Push", "Stanza",
           "parse_stanza"]
