"""The runtime integrators embed: the engine driven by the generated tables, trace parsing,
replay, and (later) dispatch and stores."""

from pushrules.generated.events import EVENT_CLASSES, Event
from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.model.world import ImpossibleEvent

from .engine import Engine

__all__ = ["Config", "Engine", "EVENT_CLASSES", "Event", "ImpossibleEvent", "Push", "Stanza",
           "parse_stanza"]
