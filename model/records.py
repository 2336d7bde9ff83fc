"""The data the machines act on: session and registration records, and the push decided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, fields
from operator import itemgetter
from typing import Any, Final, Generic, NamedTuple, TypeVar, overload

from .stanza import Stanza

RegKey = tuple[str, str, str]
"""A registration is identified by (user, jid, node)."""

CSI_ACTIVE = "active"

PROBE_WAITING = "waiting"
"""retry_after: disabled for counted errors, waiting for retry_after seconds to pass."""
PROBE_READY = "ready"
"""retry_after: the next stanza the rules would push to it is pushed once, as a probe."""
PROBE_SENT = "sent"
"""retry_after: a probe was sent; nothing more until its push-result."""


DUE_FIELDS: dict[str, str] = {"flush": "hold_until", "expire": "expire_at", "retry": "retry_at"}
"""The registration's timer events (model/registration.py TIMER_EVENTS) -> the record field
holding when it comes due (None: not running), in the order they go when due at the same
time (a held push before an expiry); a world's due queue is rebuilt from these fields."""


TIMER_NAMES: dict[str, str] = {"flush": "held-push-due", "expire": "expire", "retry": "retry-due"}
"""The timer events' names, as the diagrams and --explain show them (registration.py checks
them against the machine)."""


class Held(NamedTuple):
    """A stanza held for a registration by burst_window, and the rule that pushed it."""

    stanza: Stanza
    rule: str


class ChatSetting(NamedTuple):
    """A user's XEP-0492 setting for one chat (v2 chat-settings): a fact of the user."""

    notify: str
    nick: str | None = None


T = TypeVar("T")


class _Slot(Generic[T]):
    """A record field kept in the slot ``_name``, read as ``default`` while not set."""

    def __init__(self, default: T) -> None:
        self.default = default
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    @overload
    def __get__(self, obj: None, cls: type) -> _Slot[T]: ...
    @overload
    def __get__(self, obj: object, cls: type) -> T: ...

    def __get__(self, obj: object | None, cls: type) -> T | _Slot[T]:
        if obj is None:
            return self
        value: T = getattr(obj, self.slot, self.default)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(obj, self.slot, value)


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
        "_last_sent", "_held", "_hold_until", "_expire_at", "_retry_at", "_probe",
        "_probe_session",
    )

    # --- the time-based rules (contract v2); the due times are what a world's due queue is
    # rebuilt from (WorldBase.rebuild_due), so a store that keeps them keeps the timers.
    # Defaulted slots: a record built without __init__ (the checker's lazy records) reads them
    # as not set.
    last_sent: _Slot[float | None] = _Slot(None)
    """burst_window: when the last push to it was sent (None: none since enabled)."""
    held: _Slot[tuple[Held, ...]] = _Slot(())
    """burst_window: the stanzas held for it, in order, each with the rule that pushed it."""
    hold_until: _Slot[float | None] = _Slot(None)
    """burst_window: when the held stanzas come due (the window's end)."""
    expire_at: _Slot[float | None] = _Slot(None)
    """orphan_ttl: when it expires, while bound to no live session."""
    retry_at: _Slot[float | None] = _Slot(None)
    """retry_after: when the wait after a disable for counted errors ends."""
    probe: _Slot[str | None] = _Slot(None)
    """retry_after, while disabled for counted errors: PROBE_WAITING, PROBE_READY or
    PROBE_SENT (None: not retried)."""
    probe_session: _Slot[str | None] = _Slot(None)
    """retry_after: the session it was bound to when disabled, while that one is live: the
    session whose stanzas can probe it (rule a)."""

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
            **self.timers(),
        }

    def time_row(self) -> dict[str, Any]:
        """The time-based rules' facts that are set, as JSON-able data a store keeps with the
        record (empty in an untimed world, so rows written before are unchanged)."""
        row: dict[str, Any] = {name: getattr(self, name) for name in _TIME_FIELDS
                               if getattr(self, name) is not None}
        if self.held:
            row["held"] = [[_stanza_row(h.stanza), h.rule] for h in self.held]
        return row

    def restore_time_row(self, row: dict[str, Any]) -> None:
        """The facts ``time_row`` gave (absent keys: not set). Raises KeyError, TypeError or
        ValueError on data it did not write."""
        for name in _TIME_FIELDS:
            setattr(self, name, row.get(name))
        self.held = tuple(Held(_stanza_from_row(stanza), str(rule))
                          for stanza, rule in row.get("held") or ())

    def timers(self) -> dict[str, Any]:
        """The time-based rules' facts that are set (none in an untimed world)."""
        facts = {"last_sent": self.last_sent, "hold_until": self.hold_until,
                 "held": [h.stanza.id for h in self.held] or None,
                 "expire_at": self.expire_at, "retry_at": self.retry_at, "probe": self.probe,
                 "probe_session": self.probe_session}
        return {k: v for k, v in facts.items() if v is not None}


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
        return isinstance(other, Push) and type(other) is type(self) \
            and self._compared() == other._compared()

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


_TIME_FIELDS = ("last_sent", "hold_until", "expire_at", "retry_at", "probe", "probe_session")
"""The time-based rules' scalar facts of a registration (``held`` is kept apart)."""
_STANZA_FIELDS = tuple(f.name for f in fields(Stanza))


def _stanza_row(stanza: Stanza) -> list[Any]:
    return [list(v) if isinstance(v, tuple) else v for v in astuple(stanza)]


def _stanza_from_row(row: list[Any]) -> Stanza:
    values = dict(zip(_STANZA_FIELDS, row, strict=True))
    values["mentions"] = tuple(values["mentions"])
    values["replies"] = tuple(values["replies"])
    return Stanza(**values)


for _index, _name in enumerate(_PUSH_FIELDS):
    setattr(Push, _name, property(itemgetter(_index), doc=f"The push's {_name}."))
del _index, _name


def last_important(stanzas: Sequence[Stanza]) -> Stanza | None:
    for stanza in reversed(stanzas):
        if stanza.important:
            return stanza
    return None
