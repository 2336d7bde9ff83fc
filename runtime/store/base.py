"""What a store keeps, per user, and the interface every store implements.

Every contract event concerns exactly one user, so one user's state is the unit a store loads,
updates atomically and saves: that user's sessions (with their CSI state), registrations (with
their dedup ids), the enable-order counter used by eviction, the user's facts
(``WorldBase.user_facts``: chat settings, calls; one JSON-able record, kept as it is) and the
audit trail. Rows are plain JSON-able dicts so that each store can keep them in its own way
(columns, JSON strings) and the engine can diff them.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from pushrules.model.errors import PushrulesError
from pushrules.model.records import DUE_FIELDS, Push, RegistrationRecord, SessionRecord
from pushrules.model.world import AuditEntry

RegId = tuple[str, str]
"""A registration within one user: (jid, node)."""
Row = dict[str, Any]


_token_run = secrets.token_hex(8)
_token_count = itertools.count(1)


def _new_run() -> None:  # a forked child is another writer: its tokens must not repeat ours
    global _token_run, _token_count
    _token_run, _token_count = secrets.token_hex(8), itertools.count(1)


os.register_at_fork(after_in_child=_new_run)


def new_token() -> str:
    """A commit token no other commit has: 64 random bits per process, then a counter. (A
    uuid4 per commit read the kernel's randomness each time: 2.4% of the sidecar's CPU.)"""
    return f"{_token_run}{next(_token_count):x}"


class StoreError(PushrulesError, RuntimeError):
    """A store could not do what was asked; the event was not applied."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (server down, file locked). The event was not applied, or,
    when the connection broke during the write, its outcome is unknown: handle the same event
    again on the same engine and it is settled exactly once."""


class StoreCorrupt(StoreError):
    """The store's data is not what this version of pushrules can read. Nothing was written."""


class StoreConflict(StoreError):
    """Other writers changed the same user every time this event was retried."""


@dataclass(slots=True)
class UserSnapshot:
    """One user's state as loaded, with the version a commit must still find."""

    user: str
    version: int = 0
    seq: int = 0
    sessions: dict[str, Row] = field(default_factory=dict)
    registrations: dict[RegId, Row] = field(default_factory=dict)
    expired: tuple[RegId, ...] = ()
    """Orphaned registrations whose orphan TTL fired (the store keeps the model's clock): the
    engine fires the model's ``expire`` on them before the event."""
    timers: tuple[RegId, ...] = ()
    """Orphaned registrations whose orphan TTL is still running."""
    vanished: tuple[RegId, ...] = ()
    """Registrations in the index whose row is gone (a key TTL of an older version): dropped."""
    token: str = ""
    """The token of the commit that made this version ("" before the first)."""
    pushed: dict[RegId, dict[str, None]] = field(default_factory=dict)
    """The engine's prebuilt dedup sets matching the rows' ``pushed`` lists (stores leave it
    empty): copying one is much cheaper than hashing thousands of ids again."""
    facts: Row = field(default_factory=dict)
    """The user's facts beyond sessions and registrations (``WorldBase.user_facts``: chat
    settings, calls), kept as this one JSON-able record; empty when the user has none."""

    @property
    def identity(self) -> tuple[int, str]:
        return (self.version, self.token)


@dataclass(slots=True)
class UserChanges:
    """What one event changed for one user, applied all-or-nothing if ``base_version`` is still
    current. ``token`` makes a repeated commit (after a lost reply) a no-op that reports success."""

    user: str
    base_version: int
    token: str
    seq: int
    sessions_put: dict[str, Row] = field(default_factory=dict)
    sessions_del: list[str] = field(default_factory=list)
    registrations_put: dict[RegId, Row] = field(default_factory=dict)
    registrations_del: list[RegId] = field(default_factory=list)
    pushed_ops: dict[RegId, tuple[int, list[str]]] = field(default_factory=dict)
    """For each put registration whose dedup ids changed: (drop, added), meaning the new list is
    the old one without its ``drop`` oldest ids, then ``added``. Stores that keep the ids
    apart (SQLite, Redis) apply this instead of rewriting thousands of ids per push."""
    previous_states: dict[RegId, str] = field(default_factory=dict)
    """State of each put registration before the event (absent when new): for orphan TTLs."""
    audit: list[AuditEntry] = field(default_factory=list)
    orphan_ttl: int = 0
    """The model's option: a registration orphaned by this commit starts a TTL that long."""
    live_timers: list[RegId] = field(default_factory=list)
    """Put registrations whose orphan TTL ran at the load: it must still run at the commit."""
    outbox_put: dict[str, Row] = field(default_factory=dict)
    """Pushes this event decided (key -> ``outbox_row``): durable in the same transaction as
    the dedup ids that decided them, until answered."""
    outbox_del: list[str] = field(default_factory=list)
    """Keys of the user's outbox entries this event settles (the push-result answering one)."""
    facts: Row | None = None
    """The user's facts record when the event changed it (replaces the stored one whole; an
    empty dict: the user has none now), None when unchanged (nothing written)."""
    due_set: bool = False
    due: float | None = None
    """With ``due_set``: when the user's next timer comes due after this commit (None: none
    runs); the store's due index (``due_users``) takes it in the same transaction."""
    after: str | None = None
    """In a batch (``run_batch``), the token of the same user's commit this one was computed
    on: refused unless that commit is the user's last (it may itself have been refused)."""
    known_registrations: list[RegId] = field(default_factory=list)
    known_timers: list[RegId] = field(default_factory=list)
    """Set when the event ran on a cached copy not checked first: a store whose rows or
    timers can go by themselves (Redis key TTLs) refuses the commit unless every one of these
    registrations still exists and these orphan TTLs still run (the copy is current)."""


@dataclass(frozen=True, slots=True)
class BatchCheck:
    """In a batch: is the user's state still the copy ``known`` (version, token) names? If it
    is, the outbox entries ``settle`` names are removed (an event that changed nothing else
    settles them so, without a commit: the version is not bumped, no cached copy goes stale)."""

    user: str
    known: tuple[int, str]
    settle: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredPush:
    """One pending outbox entry as a store returns it."""

    user: str
    key: str
    row: Row
    attempts: int


class Store(Protocol):
    """Where registrations and session state live between events and across restarts."""

    url: str
    """The store's address with any password masked: safe in messages."""

    def load(self, user: str, known: tuple[int, str] | None = None) -> UserSnapshot | None:
        """The user's state (empty at version 0 for a user never seen), or None when it is
        still the one ``known`` names (version, token): the caller's copy is current."""
        ...

    def commit(self, changes: UserChanges) -> bool:
        """Apply all changes atomically; False (nothing written) when the user's version moved
        on since the load. True also when this very token was committed before."""
        ...

    def audit_trail(self, user: str) -> list[AuditEntry]:
        """Every disable, eviction and expiry recorded for the user, oldest first."""
        ...

    def outbox_pending(self) -> list[StoredPush]:
        """Every pending outbox entry of every user (after a restart: what to send again).
        Per user in decided order (``key`` order); users in any order. A store several nodes
        share (Redis) returns, and leases to this node, only the entries no live node sends."""
        ...

    def outbox_attempt(self, user: str, key: str, attempts: int) -> None:
        """Record that the entry is being sent for the ``attempts``-th time (no-op if gone)."""
        ...

    def outbox_remove(self, user: str, keys: list[str]) -> None:
        """Forget entries that will not be sent again (gave up, dropped, answer unrecordable)."""
        ...

    def due_users(self, until: float, limit: int) -> list[tuple[float, str]]:
        """The due index (time-based rules): up to ``limit`` users whose next timer comes due
        at or before ``until``, as (when, user), earliest first."""
        ...

    def due_next(self) -> float | None:
        """When the earliest timer of any user comes due (None: none runs)."""
        ...

    def close(self) -> None: ...


# --- records <-> rows --------------------------------------------------------------------------

def pushed_delta(old: list[str], new: list[str]) -> tuple[int, list[str]]:
    """(drop, added) with ``new == old[drop:] + added``. The model only appends ids, forgets
    the oldest, or clears them all; ids are unique, so new[0] fixes where old's tail starts."""
    if not new:
        return len(old), []
    try:
        start = old.index(new[0])
    except ValueError:
        return len(old), list(new)
    kept = len(old) - start
    if new[:kept] != old[start:]:
        return len(old), list(new)  # not a shape the model makes; a full rewrite is still right
    return start, new[kept:]


def outbox_key(version: int, index: int) -> str:
    """The key of the ``index``-th push decided by the commit that made the user's ``version``:
    unique within the user, and sorting as strings in the order decided."""
    return f"{version:016d}.{index:05d}"


def outbox_row(push: Push) -> Row:
    """A push as stored (publish-options with the secret included: needed to send it again)."""
    return {"jid": push.jid, "node": push.node, "rule": push.rule, "stanzas": list(push.stanzas),
            "important": push.important, "sender": push.sender, "body": push.body,
            "options": dict(push.options), "urgent": push.urgent}


def push_from_row(user: str, row: Row) -> Push:
    return Push(user, row["jid"], row["node"], row["rule"], tuple(row["stanzas"]),
                bool(row["important"]), row["sender"], row["body"], dict(row["options"]),
                bool(row.get("urgent", False)))  # v2 (issue 13); older rows: not urgent


def session_row(rec: SessionRecord) -> Row:
    return {"state": rec.state, "binding": None if rec.binding is None else list(rec.binding[1:]),
            "csi": rec.csi}


def registration_row(rec: RegistrationRecord) -> Row:
    return {
        "state": rec.state, "options": dict(rec.options), "session": rec.session,
        "errors": rec.errors, "reason": rec.reason, "disabled_at": rec.disabled_at,
        "seq": rec.seq, "pushed": list(rec.pushed),
        **rec.time_row(),  # v2 time-based rules: only what is set (rows before are unchanged)
    }


def rows_due(rows: Any) -> float | None:
    """When the first timer of these registration rows comes due (None: none runs): what a
    store's due index holds for their user."""
    times = [t for row in rows for name in DUE_FIELDS.values()
             if (t := row.get(name)) is not None]
    return min(times) if times else None


def session_from_row(user: str, sid: str, row: Row) -> SessionRecord:
    rec = SessionRecord(sid, user, row["state"])
    binding = row["binding"]
    rec.binding = None if binding is None else (user, binding[0], binding[1])
    csi = row.get("csi")  # v2 (issue 13); rows stored before it: CSI-active (the default)
    if csi is not None:
        rec.csi = csi
    return rec


def registration_from_row(user: str, reg: RegId, row: Row,
                          pushed: dict[str, None] | None = None) -> RegistrationRecord:
    rec = RegistrationRecord(user, reg[0], reg[1], row["state"])
    rec.options = dict(row["options"])
    rec.session = row["session"]
    rec.errors = int(row["errors"])
    rec.reason = row["reason"]
    rec.disabled_at = row["disabled_at"]
    rec.seq = int(row["seq"])
    rec.pushed = dict.fromkeys(row["pushed"]) if pushed is None else pushed.copy()
    if has_time_facts(row):
        rec.restore_time_row(row)  # (without time facts: what a new record holds already)
    return rec


_UNTIMED_ROW = frozenset(registration_row(RegistrationRecord("", "", "")))
"""The keys of ``registration_row`` without time facts (a new record has none set; any other
key is one of them)."""


def has_time_facts(row: Row) -> bool:
    """Whether a registration row holds time facts (a timer may run: v2 time-based rules)."""
    return not _UNTIMED_ROW.issuperset(row)


def facts_from_json(where: str, user: str, text: str | bytes | None) -> Row:
    """A stored facts record (None or empty: the user has none); StoreCorrupt naming the
    store and the user when it is not the JSON object a store wrote."""
    if not text:
        return {}
    try:
        facts = json.loads(text)
    except ValueError as exc:
        raise StoreCorrupt(f"{where}: the facts record of user {user} is not readable "
                           f"(not JSON: {exc}); nothing was applied") from None
    if not isinstance(facts, dict):
        raise StoreCorrupt(f"{where}: the facts record of user {user} is not readable "
                           f"(a JSON {type(facts).__name__}, not an object); nothing was "
                           "applied")
    return facts


def facts_json(facts: Row) -> str:
    """A facts record as a store keeps it ("" for none: the store then keeps nothing)."""
    return json.dumps(facts, separators=(",", ":")) if facts else ""


def audit_dict(entry: AuditEntry) -> Row:
    return {"time": entry.time, "user": entry.user, "jid": entry.jid, "node": entry.node,
            "action": entry.action, "reason": entry.reason}


def audit_from_dict(row: Row) -> AuditEntry:
    return AuditEntry(float(row["time"]), row["user"], row["jid"], row["node"], row["action"],
                      row["reason"])
