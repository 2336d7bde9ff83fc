"""The data the machines act on: session and registration records, and the push decided."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Final, NamedTuple

from .stanza import Stanza

RegKey = tuple[str, str, str]
"""A registration is identified by (user, jid, node)."""

CSI_ACTIVE = "active"


class ChatSetting(NamedTuple):
    """A user's XEP-0492 setting for one chat (v2 chat-settings): a fact of the user."""

    notify: str
    nick: str | None = None


class SessionRecord:
    """One XEP-0198 session. ``state`` is owned by the machine that drives it."""

    __slots__ = ("sid", "user", "state", "binding", "csi")

    def __init__(self, sid: str, user: str, state: str = "offline") -> None:
        self.sid = sid
        self.user = user
        self.state = state
        self.binding: RegKey | None = None
        self.csi = CSI_ACTIVE
        """XEP-0352 client state (v2): lasts through ack delay, hibernation and resumption;
        a new session (bind) starts CSI-active."""

    def as_dict(self) -> dict[str, Any]:
        return {"session": self.sid, "state": self.state, "binding": self.binding,
                "csi": self.csi}


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


_PUSH_FIELDS: Final = (
    "user", "jid", "node", "rule", "stanzas", "important", "sender", "body", "options",
    "urgent", "at")
_new_tuple = tuple.__new__


class Push(tuple[Any, ...]):
    """A push decided for one registration. ``options`` (the secret) never leaves via repr/json.

    Immutable. A tuple underneath, because a push is built for every decision and a tuple
    costs a quarter of a frozen dataclass (measured); compared, hashed and shown like one, on
    every field but ``options``."""

    __slots__ = ()
    __match_args__ = _PUSH_FIELDS

    user: str
    jid: str
    node: str
    rule: str
    stanzas: tuple[str | None, ...]
    important: bool
    sender: str | None
    body: str | None
    options: dict[str, str]
    urgent: bool
    """v2 rule e/call: a high-priority notification (the device must ring now)."""
    at: float | None
    """v2: the trace time the push was sent at, once any event carried ``at``."""

    def __new__(cls, user: str, jid: str, node: str, rule: str, stanzas: tuple[str | None, ...],
                important: bool, sender: str | None = None, body: str | None = None,
                options: dict[str, str] | None = None, urgent: bool = False,
                at: float | None = None) -> Push:
        return _new_tuple(cls, (user, jid, node, rule, stanzas, important, sender, body,
                                {} if options is None else options, urgent, at))

    def _compared(self) -> tuple[Any, ...]:
        return (*self[:8], *self[9:])  # every field but options

    # Not NotImplemented for other types: tuple's reflected comparison would then answer.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._compared() == other._compared()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self._compared())

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __repr__(self) -> str:
        pairs = [*zip(_PUSH_FIELDS[:8], self[:8], strict=True),
                 *zip(_PUSH_FIELDS[9:], self[9:], strict=True)]
        shown = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"Push({shown})"

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)

    def to_json(self) -> dict[str, Any]:
        """The contract's output object (``urgent`` only when true, ``at`` only when timed)."""
        out = {
            "user": self[0], "jid": self[1], "node": self[2], "rule": self[3],
            "stanzas": list(self[4]), "important": self[5],
        }
        if self[9]:
            out["urgent"] = True
        if self[10] is not None:
            out["at"] = self[10]
        return out


for _index, _name in enumerate(_PUSH_FIELDS):
    setattr(Push, _name, property(itemgetter(_index), doc=f"The push's {_name}."))
del _index, _name


def last_important(stanzas: Sequence[Stanza]) -> Stanza | None:
    for stanza in reversed(stanzas):
        if stanza.important:
            return stanza
    return None
