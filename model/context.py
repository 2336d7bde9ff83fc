"""What guards and actions see: the event, the records involved, and the world around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Config
    from .records import ChatSetting, Push, RegistrationRecord, RegKey, SessionRecord
    from .stanza import Stanza


class World(Protocol):
    """The state a machine driver keeps. The generated runtime and the reference model both
    implement it; actions only reach state through it."""

    config: Config
    time: float

    def session(self, sid: str) -> SessionRecord | None: ...
    def registrations_of(self, user: str) -> list[RegistrationRecord]: ...
    def fire_registration(self, key: RegKey, event: str, ctx: Ctx) -> None: ...
    def emit(self, push: Push) -> None: ...
    def next_seq(self) -> int: ...
    def now(self) -> float: ...
    def audit(self, reg: RegistrationRecord, action: str, reason: str) -> None: ...
    def chat_setting(self, user: str, chat: str) -> ChatSetting | None: ...
    def store_chat_setting(self, user: str, chat: str, setting: ChatSetting) -> None: ...
    def push_time(self) -> float | None: ...
    def call_targets(self, user: str, call_id: str) -> dict[tuple[str, str], None]: ...
    def add_call_target(self, reg: RegistrationRecord, call_id: str) -> None: ...
    def forget_calls_of(self, reg: RegistrationRecord) -> None: ...
    def schedule(self, reg: RegistrationRecord, timer: str) -> None: ...


@dataclass(slots=True)
class Ctx:
    world: World
    event: Any
    session: SessionRecord | None = None
    reg: RegistrationRecord | None = None
    rule: str = ""
    stanzas: tuple[Stanza, ...] = ()
    notes: list[str] | None = field(default=None)

    def note(self, text: str) -> None:
        if self.notes is not None:
            self.notes.append(text)

    def for_registration(self, reg: RegistrationRecord) -> Ctx:
        return Ctx(self.world, self.event, self.session, reg, self.rule, self.stanzas, self.notes)
