"""`memory:`: a store in this process only (lost on exit). Rows are kept as JSON text so that no
engine ever shares a mutable object with the store, exactly as with the real stores."""

from __future__ import annotations

import json
import threading
from collections import deque

from pushrules.model.world import AuditEntry

from .base import RegId, StoredPush, UserChanges, UserSnapshot, facts_from_json, facts_json

RECENT_TOKENS = 64


class _User:
    __slots__ = ("version", "seq", "sessions", "registrations", "facts", "audit", "tokens",
                 "outbox", "tries", "due")

    def __init__(self) -> None:
        self.version = 0
        self.seq = 0
        self.sessions: dict[str, str] = {}
        self.registrations: dict[RegId, str] = {}
        self.facts = ""
        self.audit: list[AuditEntry] = []
        self.tokens: deque[str] = deque(maxlen=RECENT_TOKENS)
        self.outbox: dict[str, str] = {}
        self.tries: dict[str, int] = {}
        self.due: float | None = None


class MemoryStore:
    def __init__(self) -> None:
        self.url = "memory:"
        self._users: dict[str, _User] = {}
        self._lock = threading.Lock()

    def load(self, user: str, known: tuple[int, str] | None = None) -> UserSnapshot | None:
        with self._lock:
            state = self._users.get(user)
            if state is None:
                return None if known == (0, "") else UserSnapshot(user)
            token = state.tokens[-1]
            if known == (state.version, token):
                return None
            return UserSnapshot(
                user, state.version, state.seq,
                {sid: json.loads(row) for sid, row in state.sessions.items()},
                {reg: json.loads(row) for reg, row in state.registrations.items()},
                token=token, facts=facts_from_json(self.url, user, state.facts),
            )

    def commit(self, changes: UserChanges) -> bool:
        with self._lock:
            state = self._users.get(changes.user) or _User()
            if changes.token in state.tokens:
                return True
            if state.version != changes.base_version:
                return False
            for sid, row in changes.sessions_put.items():
                state.sessions[sid] = json.dumps(row)
            for sid in changes.sessions_del:
                state.sessions.pop(sid, None)
            for reg, row in changes.registrations_put.items():
                state.registrations[reg] = json.dumps(row)
            for reg in changes.registrations_del:
                state.registrations.pop(reg, None)
            if changes.facts is not None:
                state.facts = facts_json(changes.facts)
            if changes.due_set:
                state.due = changes.due
            state.audit.extend(changes.audit)
            for key, row in changes.outbox_put.items():
                state.outbox[key] = json.dumps(row)
            for key in changes.outbox_del:
                state.outbox.pop(key, None)
                state.tries.pop(key, None)
            state.seq = changes.seq
            state.version += 1
            state.tokens.append(changes.token)
            self._users[changes.user] = state
            return True

    def audit_trail(self, user: str) -> list[AuditEntry]:
        with self._lock:
            state = self._users.get(user)
            return [] if state is None else list(state.audit)

    def outbox_pending(self) -> list[StoredPush]:
        with self._lock:
            return [StoredPush(user, key, json.loads(state.outbox[key]), state.tries.get(key, 0))
                    for user, state in self._users.items() for key in sorted(state.outbox)]

    def outbox_attempt(self, user: str, key: str, attempts: int) -> None:
        with self._lock:
            state = self._users.get(user)
            if state is not None and key in state.outbox:
                state.tries[key] = attempts

    def outbox_remove(self, user: str, keys: list[str]) -> None:
        with self._lock:
            state = self._users.get(user)
            if state is None:
                return
            for key in keys:
                state.outbox.pop(key, None)
                state.tries.pop(key, None)

    def due_users(self, until: float, limit: int) -> list[tuple[float, str]]:
        with self._lock:
            due = sorted((state.due, user) for user, state in self._users.items()
                         if state.due is not None and state.due <= until)
        return due[:limit]

    def due_next(self) -> float | None:
        with self._lock:
            times = [s.due for s in self._users.values() if s.due is not None]
        return min(times) if times else None

    def close(self) -> None:
        pass
