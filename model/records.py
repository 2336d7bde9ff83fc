"""The data the machines act on: session and registration records, and the push decided."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stanza import Stanza

RegKey = tuple[str, str, str]
"""A registration is identified by (user, jid, node)."""


class SessionRecord:
    """One XEP-0198 session. ``state`` is owned by the machine that drives it."""

    __slots__ = ("sid", "user", "state", "binding")

    def __init__(self, sid: str, user: str, state: str = "offline") -> None:
        self.sid = sid
        self.user = user
        self.state = state
        self.binding: RegKey | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"session": self.sid, "state": self.state, "binding": self.binding}


class RegistrationRecord:
    """One push registration (user, jid, node) with its lifecycle data."""

    __slots__ = (
        "user", "jid", "node", "state", "options", "session", "errors",
        "reason", "disabled_at", "seq", "pushed",
    )

    def __init__(self, user: str, jid: str, node: str, state: str = "absent") -> None:
        self.user = user
        self.jid = jid
        self.node = node
        self.state = state
        self.options: dict[str, str] = {}
        self.session: str | None = None
        self.errors = 0
        self.reason: str | None = None
        self.disabled_at: float | None = None
        self.seq = 0
        self.pushed: dict[str, None] = {}

    @property
    def key(self) -> RegKey:
        return (self.user, self.jid, self.node)

    def as_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        options = {k: ("***" if mask_secrets else v) for k, v in self.options.items()}
        return {
            "user": self.user, "jid": self.jid, "node": self.node, "state": self.state,
            "session": self.session, "errors": self.errors, "reason": self.reason,
            "disabled_at": self.disabled_at, "options": options,
        }


@dataclass(frozen=True, slots=True)
class Push:
    """A push decided for one registration. ``options`` (the secret) never leaves via repr/json."""

    user: str
    jid: str
    node: str
    rule: str
    stanzas: tuple[str | None, ...]
    important: bool
    sender: str | None = None
    body: str | None = None
    options: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The contract's output object."""
        return {
            "user": self.user, "jid": self.jid, "node": self.node, "rule": self.rule,
            "stanzas": list(self.stanzas), "important": self.important,
        }


def last_important(stanzas: tuple[Stanza, ...]) -> Stanza | None:
    for stanza in reversed(stanzas):
        if stanza.important:
            return stanza
    return None
