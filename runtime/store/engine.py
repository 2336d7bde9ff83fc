"""The engine over a store: each event loads its user's state, runs, and commits what changed.

Pushes are returned only after the commit succeeded. When another writer (a second node) changed
the same user in between, the commit is refused and the event is run again on the fresh state;
the pushes of the refused attempt are dropped, so no stanza is pushed twice and no update is lost.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pushrules.model.config import Config
from pushrules.model.events import EVENTS_BY_NAME, SESSION
from pushrules.model.records import Push
from pushrules.model.world import AuditEntry
from pushrules.runtime.engine import Engine

from .base import (
    Store,
    StoreConflict,
    StoreCorrupt,
    UserChanges,
    UserSnapshot,
    registration_from_row,
    registration_row,
    session_from_row,
    session_row,
)

EXPIRED_REASON = "orphaned for longer than the store's orphan_ttl: forgotten"


def event_user(event: Any) -> str:
    """The bare JID of the one user an event concerns."""
    spec = EVENTS_BY_NAME[event.EVENT]
    value: str = getattr(event, spec.user_field)
    return value.split("/", 1)[0] if spec.target == SESSION else value


@dataclass(slots=True)
class _Pending:
    event: Any
    changes: UserChanges
    pushes: list[Push]


class StoredEngine(Engine):
    """``Engine`` whose state lives in a store (see ``open_store``). ``handle`` may raise
    ``StoreUnavailable`` (nothing applied; handle the same event again to retry) besides
    ``ImpossibleEvent``. ``audit_log`` holds the entries of the last event only: the store
    keeps the history. One instance is not thread-safe; use one engine per thread or node."""

    def __init__(self, store: Store, config: Config | None = None, *, explain: bool = False,
                 clock: Any = time.time, max_attempts: int = 100) -> None:
        super().__init__(config, explain=explain, clock=clock)
        self.store = store
        self.max_attempts = max_attempts
        self.commits = 0
        self.conflicts = 0
        self.before_commit: Callable[[UserChanges], None] | None = None
        """Called with the changes right before each commit (tests use it to interleave)."""
        self.last_version = 0
        """The user's version the last event's outcome belongs to: the one its commit made, or
        (when it changed nothing) the one it read. Orders events across nodes."""
        self._user_seq = 0
        self._pending: _Pending | None = None

    def next_seq(self) -> int:
        # Enable order is compared within one user only, so the counter is the user's, stored.
        self._user_seq += 1
        return self._user_seq

    def handle(self, event: Any) -> list[Push]:
        user = event_user(event)
        pending, self._pending = self._pending, None
        # The same event again after StoreUnavailable: resend the same commit. It lands once
        # (the token makes a repeat a no-op) or, if the user moved on meanwhile, we run again.
        if (pending is not None and pending.event == event and pending.changes.user == user
                and self._commit(pending.changes, event, pending.pushes)):
            return pending.pushes
        for attempt in range(self.max_attempts):
            snapshot = self.store.load(user)
            self._install(snapshot)
            pushes = super().handle(event)
            changes = self._changes(snapshot)
            if changes is None:
                self.last_version = snapshot.version
                return pushes
            if self._commit(changes, event, pushes):
                return pushes
            self.conflicts += 1
            # Randomised backoff: nodes that keep colliding on one user spread out.
            time.sleep(random.random() * min(0.05, 0.0005 * 2 ** attempt))
        raise StoreConflict(f"{self.store.url}: user {user} changed under every one of "
                            f"{self.max_attempts} attempts of {event.EVENT}; not applied")

    def _commit(self, changes: UserChanges, event: Any, pushes: list[Push]) -> bool:
        if self.before_commit is not None:
            self.before_commit(changes)
        try:
            done = self.store.commit(changes)
        except Exception:
            self._pending = _Pending(event, changes, pushes)
            raise
        if done:
            self.commits += 1
            self.last_version = changes.base_version + 1
        return done

    def _install(self, snapshot: UserSnapshot) -> None:
        user = snapshot.user
        try:
            self.sessions = {sid: session_from_row(user, sid, row)
                             for sid, row in snapshot.sessions.items()}
            regs = {reg: registration_from_row(user, reg, row)
                    for reg, row in snapshot.registrations.items()}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StoreCorrupt(f"{self.store.url}: a stored record of user {user} is not "
                               f"readable ({type(exc).__name__}: {exc})") from None
        self.users = {user: regs} if regs else {}
        self._user_seq = snapshot.seq
        self.audit_log = []

    def _changes(self, snapshot: UserSnapshot) -> UserChanges | None:
        user = snapshot.user
        changes = UserChanges(user, snapshot.version, "", self._user_seq)
        for sid, rec in self.sessions.items():
            row = session_row(rec)
            if snapshot.sessions.get(sid) != row:
                changes.sessions_put[sid] = row
        changes.sessions_del = [sid for sid in snapshot.sessions if sid not in self.sessions]
        for reg, rec in self.users.get(user, {}).items():
            row = registration_row(rec)
            old = snapshot.registrations.get(reg)
            if old != row:
                changes.registrations_put[reg] = row
                if old is not None:
                    changes.previous_states[reg] = old["state"]
        changes.audit = list(self.audit_log)
        for reg in snapshot.expired:
            changes.audit.append(AuditEntry(self.now(), user, reg[0], reg[1], "expire",
                                            EXPIRED_REASON))
            if reg not in changes.registrations_put:
                changes.registrations_del.append(reg)
        if (not changes.sessions_put and not changes.sessions_del and not changes.audit
                and not changes.registrations_put and changes.seq == snapshot.seq):
            return None
        changes.token = uuid.uuid4().hex
        return changes
