"""Events that change a fact rather than a machine's state (contract v2): no state decides
them and none rejects them, so they are declared here, each with its rule tag and rationale,
instead of as transitions. The world runs the action of the event's fact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .context import Ctx
from .records import ChatSetting


@dataclass(frozen=True, slots=True)
class Fact:
    event: str
    """The contract event."""
    rule: str
    why: str
    apply: Callable[[Ctx], None]
    doc: str


def store_chat_setting(ctx: Ctx) -> None:
    event = ctx.event
    ctx.world.store_chat_setting(event.user, event.chat, ChatSetting(event.notify, event.nick))
    nick = "" if event.nick is None else f", nick {event.nick}"
    ctx.note(f"{event.user}: chat {event.chat} set to {event.notify}{nick}")


def pass_time(ctx: Ctx) -> None:
    ctx.note(f"time is now {ctx.event.at}: nothing else happens")


FACTS: dict[str, Fact] = {f.event: f for f in (
    Fact("chat-settings", "chat/settings",
         "the user's XEP-0492 setting for the chat replaces the whole previous one, nick "
         "included", store_chat_setting,
         "store the user's setting (notify, nick) for the chat, replacing the previous one"),
    Fact("tick", "clock", "time passes; nothing else happens (a tick is always possible)",
         pass_time, "advance the clock"),
)}
"""Contract event -> its fact (events.py targets USER_FACT and CLOCK)."""
