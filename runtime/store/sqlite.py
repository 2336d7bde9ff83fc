"""`sqlite:///path/to.db`: the embedded store (standard library sqlite3).

One transaction per event: a crash between two writes rolls back to the previous event's state.
With ``defer_commits(schedule)`` (the sidecar, on its event loop) the events of a few milliseconds
share one transaction instead, each in its own savepoint (a failed one is rolled back alone), and
``flush()`` commits it at the end of that window: a crash loses at most the window's events,
never half of one. Whoever sends what was decided calls ``flush()`` first (the dispatcher does).
The file is recognised by PRAGMA application_id and versioned by PRAGMA user_version; an
older schema is migrated (MIGRATIONS), and a file that is not ours, of a schema version with no
migration or newer, or damaged is refused with the file named and nothing written to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pushrules.model.world import AuditEntry

from .base import (
    StoreCorrupt,
    StoredPush,
    StoreError,
    StoreUnavailable,
    UserChanges,
    UserSnapshot,
    facts_from_json,
    facts_json,
)

log = logging.getLogger(__name__)

APPLICATION_ID = 0x70757368  # "push"
SCHEMA_VERSION = 4
"""4: sessions.csi, users.facts, users.due and registrations.timing (contract v2); 3: the
outbox; 2: dedup ids in their own table (1 rewrote them per push)."""
KNOWN_USERS = 1 << 16
"""Users whose version the store remembers while it holds the write lock (then it starts over)."""
TABLES = ("users", "sessions", "registrations", "pushed", "audit", "outbox")

OUTBOX_TABLE = """
CREATE TABLE outbox (              -- decided pushes not answered yet (sent again after a restart)
    user TEXT NOT NULL,
    key TEXT NOT NULL,             -- sorts in the order decided, within the user
    push TEXT NOT NULL,            -- JSON push, publish-options (secret) included
    attempts INTEGER NOT NULL DEFAULT 0,  -- sends started so far, over all runs
    PRIMARY KEY (user, key)
) WITHOUT ROWID
"""
SESSIONS_CSI = "csi TEXT NOT NULL DEFAULT 'active'"  # XEP-0352 state; sessions before v2: active
USERS_FACTS = "facts TEXT"  # JSON WorldBase.user_facts (chat settings, calls); NULL: none
# The time-based rules (v2): when the user's next timer comes due (NULL: none), the index the
# due work across users is found by; a registration's time facts (held pushes, last sent, due
# times, probe) as JSON RegistrationRecord.time_row (NULL: none set).
USERS_DUE = "due REAL"
USERS_DUE_INDEX = "CREATE INDEX users_by_due ON users (due) WHERE due IS NOT NULL"
REGISTRATIONS_TIMING = "timing TEXT"
MIGRATIONS = {
    2: (OUTBOX_TABLE,),
    3: (f"ALTER TABLE sessions ADD COLUMN {SESSIONS_CSI}",
        f"ALTER TABLE users ADD COLUMN {USERS_FACTS}",
        f"ALTER TABLE users ADD COLUMN {USERS_DUE}",
        f"ALTER TABLE registrations ADD COLUMN {REGISTRATIONS_TIMING}",
        USERS_DUE_INDEX),
}
"""Schema version -> the statements that bring it to the next version, in one transaction."""

SCHEMA = """
CREATE TABLE users (
    user TEXT PRIMARY KEY,
    version INTEGER NOT NULL,      -- bumped by every commit: the optimistic-concurrency check
    seq INTEGER NOT NULL,          -- enable-order counter (eviction picks the lowest seq)
    token TEXT NOT NULL,           -- last commit's token: a repeated commit is a no-op
    """ + USERS_FACTS + """,
    """ + USERS_DUE + """
);
""" + USERS_DUE_INDEX + """;
CREATE TABLE sessions (
    user TEXT NOT NULL,
    sid TEXT NOT NULL,
    state TEXT NOT NULL,
    binding_jid TEXT,
    binding_node TEXT,
    """ + SESSIONS_CSI + """,
    PRIMARY KEY (user, sid)
);
CREATE TABLE registrations (
    user TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL,         -- JSON publish-options, secret included (needed to push)
    session TEXT,
    errors INTEGER NOT NULL,
    reason TEXT,
    disabled_at REAL,
    seq INTEGER NOT NULL,
    """ + REGISTRATIONS_TIMING + """,
    PRIMARY KEY (user, jid, node)
);
CREATE TABLE pushed (              -- stanza ids pushed to a registration (dedup), by age
    user TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    pos INTEGER NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (user, jid, node, pos)
) WITHOUT ROWID;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    time REAL NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX audit_by_user ON audit (user, id);
""" + OUTBOX_TABLE


UPSERT_USER = ("INSERT INTO users (user, version, seq, token) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (user) DO UPDATE SET version = excluded.version, "
               "seq = excluded.seq, token = excluded.token")
UPSERT_USER_FACTS = ("INSERT INTO users (user, version, seq, token, facts) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user) DO UPDATE SET "
                     "version = excluded.version, seq = excluded.seq, token = excluded.token, "
                     "facts = excluded.facts")


class SqliteStore:
    def __init__(self, path: str | Path, *, timeout: float = 10.0, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"sqlite store {self.path}: no such file")
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        self.after_write: Callable[[int], None] | None = None
        """Called after each write statement of a commit with its number (crash tests)."""
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._current: dict[str, tuple[int, str]] = {}
        """Users' (version, token) as this connection last read or wrote them: trusted only
        while it holds the write lock (``_locked``) and no other connection committed since
        they were read (PRAGMA data_version, checked when the lock is taken). Spares the
        "is the copy current?" and the commit's version check a statement each."""
        self._data_version: int | None = None
        self._locked = False
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: cannot open ({exc})") from None
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # --- opening: recognise, check, or create --------------------------------------------------
    def _open(self) -> None:
        where = f"sqlite store {self.path}"
        try:
            app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = sorted(r[0] for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"))
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{where}: not a readable SQLite database ({exc}); "
                               "the file was left as it is") from None
        if app_id == 0 and version == 0 and not tables:
            self._create()
            return
        if app_id != APPLICATION_ID:
            raise StoreCorrupt(f"{where}: an SQLite database but not a pushrules store "
                               f"(application_id {app_id}, tables: {', '.join(tables) or 'none'}); "
                               "the file was left as it is")
        if version < SCHEMA_VERSION and version not in MIGRATIONS:
            raise StoreCorrupt(f"{where}: schema version {version} is older than this pushrules' "
                               f"{SCHEMA_VERSION} and no migration from it exists; "
                               "the file was left as it is")
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(f"{where}: schema version {version} is newer than this pushrules' "
                               f"{SCHEMA_VERSION}: upgrade pushrules; the file was left as it is")
        missing = self._missing(version, tables)
        if missing:
            raise StoreCorrupt(f"{where}: schema version {version} but "
                               f"{', '.join(missing)} missing; the file was left as it is")
        try:
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            raise StoreCorrupt(f"{where}: the database is damaged ({'; '.join(problems)}); "
                               "the file was left as it is")
        if version < SCHEMA_VERSION:
            self._migrate()
        self._tune()

    def _missing(self, version: int, tables: list[str]) -> list[str]:
        """The tables and columns a file of that schema version lacks ("table T", "column
        T.C")."""
        missing = [f"table {t}" for t in _tables_of(version) if t not in tables]
        for table, column in _columns_of(version):
            if table in tables and column not in {row[1] for row in self._db.execute(
                    f"PRAGMA table_info({table})")}:
                missing.append(f"column {table}.{column}")
        return missing

    def _migrate(self) -> None:
        """Bring an older schema up to date, each step in one transaction (another process
        may be migrating the same file: the version is read again under the write lock)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
                self._db.execute(f"PRAGMA user_version = {version}")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreUnavailable(f"sqlite store {self.path}: cannot migrate the schema to "
                                   f"version {SCHEMA_VERSION} ({exc}); nothing was changed") \
                from None

    def _create(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            # Another process may have created it between our check and the lock. (Not
            # executescript: it would commit our transaction half-way.)
            if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreUnavailable(f"sqlite store {self.path}: cannot create the schema "
                                   f"({exc})") from None
        self._tune()

    def _tune(self) -> None:
        # WAL: readers never block the writer; NORMAL sync is crash-safe in WAL mode (a process
        # crash loses nothing committed; a power cut may lose the last commits, never corrupt).
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")

    # --- the Store interface -------------------------------------------------------------------
    def load(self, user: str, known: tuple[int, str] | None = None) -> UserSnapshot | None:
        with self._lock, self._errors("load", user):
            db = self._db
            if self._schedule is not None:
                # Deferring: the read joins the transaction (the event's commit would open it
                # anyway), under whose write lock what it reads stays current until flush.
                self._begin_deferred()
            if known is not None:
                # The engine's cached copy is usually current: one statement (atomic on its
                # own) says so, without a transaction around it; none while we hold the write
                # lock and read or wrote that version since nobody else committed.
                if self._trusted() and self._current.get(user) == known:
                    return None
                head = db.execute("SELECT version, token FROM users WHERE user = ?",
                                  (user,)).fetchone()
                if (head or (0, "")) == known:
                    self._know(user, known)
                    return None
            own = not db.in_transaction  # (else: inside the deferred transaction)
            if own:
                db.execute("BEGIN")
            try:
                head = db.execute("SELECT version, seq, token, facts FROM users "
                                  "WHERE user = ?", (user,)).fetchone()
                version, seq, token, facts = head or (0, 0, "", None)
                self._know(user, (version, token))
                if known == (version, token):
                    return None
                snapshot = UserSnapshot(user, version, seq, token=token,
                                        facts=facts_from_json(f"sqlite store {self.path}", user,
                                                              facts))
                for sid, state, bjid, bnode, csi in db.execute(
                        "SELECT sid, state, binding_jid, binding_node, csi FROM sessions "
                        "WHERE user = ?", (user,)):
                    binding = None if bjid is None else [bjid, bnode]
                    snapshot.sessions[sid] = {"state": state, "binding": binding, "csi": csi}
                for row in db.execute(
                        "SELECT jid, node, state, options, session, errors, reason, disabled_at, "
                        "seq, timing FROM registrations WHERE user = ? ORDER BY rowid", (user,)):
                    try:
                        snapshot.registrations[(row[0], row[1])] = _registration(row)
                    except ValueError as exc:
                        raise StoreCorrupt(
                            f"sqlite store {self.path}: registration {row[0]} {row[1]} of user "
                            f"{user} is damaged (options or timing: {exc})") from None
                for (jid, node), row in snapshot.registrations.items():
                    row["pushed"] = [ident for (ident,) in db.execute(
                        "SELECT id FROM pushed WHERE user = ? AND jid = ? AND node = ? "
                        "ORDER BY pos", (user, jid, node))]
            finally:
                if own:
                    db.execute("COMMIT")
            return snapshot

    def commit(self, changes: UserChanges) -> bool:
        user = changes.user
        with self._lock, self._errors("commit", user):
            if self._schedule is not None:
                return self._commit_deferred(changes)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:  # (not deferring: nothing is remembered, the version check reads the row)
                done = self._write(changes)
                db.execute("ROLLBACK" if done is False else "COMMIT")
            except BaseException:
                self._rollback()
                raise
            return done is not False

    # --- one transaction per loop iteration --------------------------------------------------
    def defer_commits(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """From now on, commits (and outbox writes) join one transaction that ``flush()``
        commits; ``schedule(flush)`` is called when it opens (e.g. ``loop.call_soon``, or
        ``call_later`` for a window of a few milliseconds)."""
        self._schedule = schedule

    def flush(self) -> None:
        """Commit the open transaction, if any (StoreUnavailable naming the file if it fails:
        then everything since the last flush is rolled back)."""
        with self._lock, self._errors("commit the last events of", "any"):
            if self._db.in_transaction:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                self._locked = False

    def flush_waiting(self) -> bool:
        """Whether ``flush`` has anything to commit (a deferred transaction is open)."""
        return self._db.in_transaction

    def _begin_deferred(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._lock_taken()
            assert self._schedule is not None
            self._schedule(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        try:
            self.flush()
        except StoreError as exc:  # nobody to raise to: say what was lost
            log.error("%s", exc)

    def _commit_deferred(self, changes: UserChanges) -> bool:
        db = self._db
        self._begin_deferred()
        db.execute("SAVEPOINT event")
        try:
            done = self._write(changes)
        except BaseException:
            self._undo_savepoint()
            raise
        if done is False:
            self._undo_savepoint()
        else:
            db.execute("RELEASE event")
            self._written(changes, done)
        return done is not False

    def _lock_taken(self) -> None:
        """The write lock is ours: forget the versions we knew if another connection committed
        since we last looked (nobody can until we commit)."""
        seen = self._db.execute("PRAGMA data_version").fetchone()[0]
        # (Still locked: the last transaction ended without our COMMIT or ROLLBACK, i.e.
        # SQLite rolled it back after an error, and what it wrote is gone.)
        if seen != self._data_version or self._locked:
            self._current.clear()
            self._data_version = seen
        self._locked = True

    def _trusted(self) -> bool:
        """Whether ``_current`` holds: the write lock is ours (our transaction is still open)."""
        return self._locked and self._db.in_transaction

    def _know(self, user: str, identity: tuple[int, str]) -> None:
        if self._trusted():
            if len(self._current) >= KNOWN_USERS:
                self._current.clear()
            self._current[user] = identity

    def _written(self, changes: UserChanges, done: bool | None) -> None:
        if done:
            self._know(changes.user, (changes.base_version + 1, changes.token))

    def _undo_savepoint(self) -> None:
        try:
            self._db.execute("ROLLBACK TO event")
            self._db.execute("RELEASE event")
        except sqlite3.Error:
            self._rollback()

    def _write(self, changes: UserChanges) -> bool | None:
        """False: conflict; None: this token was committed already; True: written."""
        db, user = self._db, changes.user
        head = self._current.get(user) if self._trusted() else None
        if head is None:
            head = db.execute("SELECT version, token FROM users WHERE user = ?",
                              (user,)).fetchone() or (0, "")
        if head[1] and head[1] == changes.token:
            return None
        if head[0] != changes.base_version:
            return False
        step = 0

        def write(sql: str, args: Any, many: bool = False) -> None:
            nonlocal step
            if many:
                db.executemany(sql, args)
            else:
                db.execute(sql, args)
            step += 1
            if self.after_write is not None:
                self.after_write(step)

        head_row = (user, changes.base_version + 1, changes.seq, changes.token)
        if changes.facts is None:  # unchanged: the row's facts stay as they are
            write(UPSERT_USER, head_row)
        else:
            write(UPSERT_USER_FACTS, (*head_row, facts_json(changes.facts) or None))
        if changes.due_set:  # the due index, in the same transaction as the rows it indexes
            write("UPDATE users SET due = ? WHERE user = ?", (changes.due, user))
        for sid, row in changes.sessions_put.items():
            binding = row["binding"] or (None, None)
            write("INSERT OR REPLACE INTO sessions (user, sid, state, binding_jid, binding_node, "
                  "csi) VALUES (?, ?, ?, ?, ?, ?)",
                  (user, sid, row["state"], binding[0], binding[1], row["csi"]))
        for sid in changes.sessions_del:
            write("DELETE FROM sessions WHERE user = ? AND sid = ?", (user, sid))
        for (jid, node), row in changes.registrations_put.items():
            # An upsert keeps the rowid: registrations load in the order they were first
            # enabled, which is the order rules (b) and (c) fan out in.
            write("INSERT INTO registrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (user, jid, node) DO UPDATE SET state = excluded.state, "
                  "options = excluded.options, session = excluded.session, "
                  "errors = excluded.errors, reason = excluded.reason, "
                  "disabled_at = excluded.disabled_at, seq = excluded.seq, "
                  "timing = excluded.timing",
                  (user, jid, node, row["state"], json.dumps(row["options"]), row["session"],
                   row["errors"], row["reason"], row["disabled_at"], row["seq"],
                   _timing_json(row)))
        self._write_pushed(changes, write)
        for jid, node in changes.registrations_del:
            write("DELETE FROM registrations WHERE user = ? AND jid = ? AND node = ?",
                  (user, jid, node))
            write("DELETE FROM pushed WHERE user = ? AND jid = ? AND node = ?",
                  (user, jid, node))
        if changes.outbox_put:
            write("INSERT OR REPLACE INTO outbox (user, key, push) VALUES (?, ?, ?)",
                  [(user, key, json.dumps(row)) for key, row in changes.outbox_put.items()],
                  many=True)
        if changes.outbox_del:
            write("DELETE FROM outbox WHERE user = ? AND key = ?",
                  [(user, key) for key in changes.outbox_del], many=True)
        for entry in changes.audit:
            write("INSERT INTO audit (user, time, jid, node, action, reason) "
                  "VALUES (?, ?, ?, ?, ?, ?)",
                  (user, entry.time, entry.jid, entry.node, entry.action, entry.reason))
        return True

    def _write_pushed(self, changes: UserChanges, write: Callable[..., None]) -> None:
        """Apply the dedup ids' deltas: the oldest dropped, the new appended."""
        db, user = self._db, changes.user
        for (jid, node), (drop, added) in changes.pushed_ops.items():
            # MIN and MAX in separate queries: together they would scan the whole window.
            where = "FROM pushed WHERE user = ? AND jid = ? AND node = ?"
            first = db.execute(f"SELECT MIN(pos) {where}", (user, jid, node)).fetchone()[0]
            if drop and first is not None:
                write(f"DELETE {where} AND pos < ?", (user, jid, node, first + drop))
            if added:
                last = db.execute(f"SELECT MAX(pos) {where}", (user, jid, node)).fetchone()[0]
                base = 0 if last is None else last + 1
                write("INSERT INTO pushed VALUES (?, ?, ?, ?, ?)",
                      [(user, jid, node, base + i, ident) for i, ident in enumerate(added)],
                      many=True)

    def audit_trail(self, user: str) -> list[AuditEntry]:
        with self._lock, self._errors("read the audit trail of", user):
            rows = self._db.execute("SELECT time, user, jid, node, action, reason FROM audit "
                                    "WHERE user = ? ORDER BY id", (user,)).fetchall()
        return [AuditEntry(*row) for row in rows]

    def outbox_pending(self) -> list[StoredPush]:
        with self._lock, self._errors("read the outbox of", "any"):
            rows = self._db.execute("SELECT user, key, push, attempts FROM outbox "
                                    "ORDER BY user, key").fetchall()
        out = []
        for user, key, push, attempts in rows:
            try:
                out.append(StoredPush(user, key, json.loads(push), int(attempts)))
            except ValueError as exc:
                raise StoreCorrupt(f"sqlite store {self.path}: outbox entry {key} of user "
                                   f"{user} is damaged ({exc})") from None
        return out

    def outbox_attempt(self, user: str, key: str, attempts: int) -> None:
        with self._lock, self._errors("record a send in the outbox of", user):
            if self._schedule is not None:
                self._begin_deferred()
            self._db.execute("UPDATE outbox SET attempts = ? WHERE user = ? AND key = ?",
                             (attempts, user, key))

    def outbox_remove(self, user: str, keys: list[str]) -> None:
        with self._lock, self._errors("remove outbox entries of", user):
            if self._schedule is not None:
                self._begin_deferred()
            self._db.executemany("DELETE FROM outbox WHERE user = ? AND key = ?",
                                 [(user, key) for key in keys])

    # --- the due index (time-based rules) ------------------------------------------------------
    def due_users(self, until: float, limit: int) -> list[tuple[float, str]]:
        """Up to ``limit`` users whose next timer comes due at or before ``until``, earliest
        first, each with that time."""
        with self._lock, self._errors("read the due index of", "any"):
            return [(float(due), str(user)) for due, user in self._db.execute(
                "SELECT due, user FROM users WHERE due IS NOT NULL AND due <= ? "
                "ORDER BY due, user LIMIT ?", (until, limit))]

    def due_next(self) -> float | None:
        """When the earliest timer of any user comes due (None: none runs)."""
        with self._lock, self._errors("read the due index of", "any"):
            due = self._db.execute("SELECT MIN(due) FROM users").fetchone()[0]
        return None if due is None else float(due)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # (ProgrammingError: closed already)
                if self._db.in_transaction:
                    self._db.execute("COMMIT")
            self._db.close()

    # --- helpers -------------------------------------------------------------------------------
    def _rollback(self) -> None:
        self._locked = False
        self._current.clear()  # what the transaction wrote is gone
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is gone: SQLite rolls back on its own

    @contextmanager
    def _errors(self, what: str, user: str) -> Iterator[None]:
        """Turn sqlite3 errors into store errors that name the file (and never a secret)."""
        try:
            yield
        except sqlite3.Error as exc:
            where = f"sqlite store {self.path}: cannot {what} user {user}"
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(f"{where} ({exc}); nothing was applied") from None
            raise StoreCorrupt(f"{where} ({type(exc).__name__}: {exc}); nothing was applied") \
                from None


def _tables_of(version: int) -> tuple[str, ...]:
    """The tables a file of that schema version must hold."""
    return TABLES if version >= 3 else TABLES[:-1]


def _columns_of(version: int) -> tuple[tuple[str, str], ...]:
    """The columns added after a table was created that a file of that version must hold."""
    return (("sessions", "csi"), ("users", "facts"), ("users", "due"),
            ("registrations", "timing")) if version >= 4 else ()


REGISTRATION_COLUMNS = frozenset(("state", "options", "session", "errors", "reason",
                                  "disabled_at", "seq", "pushed"))
"""A registration row's keys kept in their own columns; the rest are its time facts."""


def _timing_json(row: dict[str, Any]) -> str | None:
    """The row's time facts (``RegistrationRecord.time_row``) as JSON; None when none is set."""
    timing = {k: v for k, v in row.items() if k not in REGISTRATION_COLUMNS}
    return json.dumps(timing, separators=(",", ":")) if timing else None


def _registration(row: tuple[Any, ...]) -> dict[str, Any]:
    timing = json.loads(row[9]) if row[9] else {}
    if not isinstance(timing, dict):
        raise ValueError(f"timing is a JSON {type(timing).__name__}, not an object")
    return {
        "state": row[2], "options": json.loads(row[3]), "session": row[4], "errors": row[5],
        "reason": row[6], "disabled_at": row[7], "seq": row[8], **timing,
    }

