"""SQLite: refusing files it cannot trust (nothing overwritten), and crashes mid-commit."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from traces import (
    CONFIG,
    USERS,
    Clock,
    engine_state,
    outcome,
    random_events,
    stanza,
    store_state,
)

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import (
    StoreCorrupt,
    StoredEngine,
    StoreUnavailable,
    event_user,
    open_store,
)
from pushrules.runtime.store.base import UserChanges, new_token
from pushrules.runtime.store.sqlite import APPLICATION_ID, SqliteStore

HERE = Path(__file__).parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled_store(path: Path) -> None:
    store = SqliteStore(path)
    engine = StoredEngine(store, CONFIG)
    for event in random_events(3, 1500, tuple(f"u{i}@example.org" for i in range(20))):
        outcome(engine, event)
    store.close()


def refused(path: Path, match: str) -> StoreCorrupt:
    before = digest(path)
    with pytest.raises(StoreCorrupt, match=match) as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value)
    assert "left as it is" in str(info.value)
    assert digest(path) == before, "a refused file was written to"
    return info.value


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "registrations.db"
    path.write_text("bob's shopping list\n" * 200)
    refused(path, "not a readable SQLite database")


@pytest.mark.parametrize("page", [2, 5, 9])
def test_a_damaged_database_is_refused(tmp_path, page):
    path = tmp_path / "registrations.db"
    filled_store(path)
    data = bytearray(path.read_bytes())
    assert len(data) > (page + 1) * 4096
    data[page * 4096:(page + 1) * 4096] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))
    refused(path, "damaged")


def test_a_damaged_record_is_reported_not_loaded(tmp_path):
    path = tmp_path / "registrations.db"
    store = SqliteStore(path)
    engine = StoredEngine(store, CONFIG)
    engine.handle(EV["session-bind"]("bob@example.org/a"))
    engine.handle(EV["push-enable"]("bob@example.org/a", "push.example.net", "n1",
                                    secret="hunter2"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE registrations SET options = '{\"secret\": \"hunt'")
    engine = StoredEngine(store, CONFIG)  # a new process (a running one caches what it wrote)
    with pytest.raises(StoreCorrupt, match="registration push.example.net n1 of user "
                                           "bob@example.org is damaged") as info:
        engine.handle(EV["smacks-ack-received"]("bob@example.org/a"))
    assert "hunt" not in str(info.value)


def test_another_applications_database_is_refused(tmp_path):
    path = tmp_path / "contacts.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
    refused(path, r"not a pushrules store \(application_id 0, tables: contacts\)")


@pytest.mark.parametrize(("version", "match"), [
    (1, "schema version 1 is older than this pushrules' 4 and no migration"),
    (5, "schema version 5 is newer than this pushrules' 4: upgrade pushrules"),
])
def test_another_schema_version_is_refused(tmp_path, version, match):
    path = tmp_path / "registrations.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE registrations (user TEXT, jid TEXT, node TEXT, secret TEXT)")
        db.execute("INSERT INTO registrations VALUES ('bob@example.org', 'p', 'n', 'hunter2')")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {version}")
    refused(path, match)


def test_a_newer_schema_written_by_a_later_pushrules_is_refused(tmp_path):
    """A file a later version migrated (schema 5, a table this one does not know) is refused
    whole, not read with what this version understands."""
    path = tmp_path / "registrations.db"
    filled_store(path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE held (user TEXT, key TEXT, push TEXT)")
        db.execute("PRAGMA user_version = 5")
    error = refused(path, "schema version 5 is newer than this pushrules' 4: upgrade pushrules")
    assert "registrations.db" in str(error)


def test_a_schema_4_file_without_the_v2_columns_is_refused(tmp_path):
    path = tmp_path / "registrations.db"
    old_schema_file(path, 3)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 4")  # says 4, has schema 3's tables
    refused(path, "schema version 4 but column sessions.csi, column users.facts, column "
                  "users.due, column registrations.timing missing")


# Schema 3 exactly as pushrules wrote it before contract v2 (the outbox; no sessions.csi, no
# users.facts); schema 2 is the same without the outbox table.
SCHEMA_3 = """
CREATE TABLE users (
    user TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    token TEXT NOT NULL
);
CREATE TABLE sessions (
    user TEXT NOT NULL,
    sid TEXT NOT NULL,
    state TEXT NOT NULL,
    binding_jid TEXT,
    binding_node TEXT,
    PRIMARY KEY (user, sid)
);
CREATE TABLE registrations (
    user TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL,
    session TEXT,
    errors INTEGER NOT NULL,
    reason TEXT,
    disabled_at REAL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user, jid, node)
);
CREATE TABLE pushed (
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
CREATE TABLE outbox (
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    push TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, key)
) WITHOUT ROWID
"""
OLD_COLUMNS = {
    "users": "user, version, seq, token",
    "sessions": "user, sid, state, binding_jid, binding_node",
    "registrations": "user, jid, node, state, options, session, errors, reason, disabled_at, seq",
    "pushed": "user, jid, node, pos, id",
    "audit": "id, user, time, jid, node, action, reason",
    "outbox": "user, key, push, attempts",
}


def old_schema_file(path: Path, version: int) -> Path:
    """A file of schema ``version`` (2 or 3) made with that schema's DDL, holding the rows a
    store filled by 1,500 random events holds (same rowid order); returns that store's file."""
    filled = path.with_name("filled.db")
    filled_store(filled)
    tables = [t for t in OLD_COLUMNS if version >= 3 or t != "outbox"]
    with sqlite3.connect(path) as db:
        for statement in SCHEMA_3.split(";"):
            if statement.strip() and (version >= 3 or "TABLE outbox" not in statement):
                db.execute(statement)
        db.execute("ATTACH DATABASE ? AS filled", (str(filled),))
        for table in tables:
            order = "" if table in ("pushed", "outbox") else " ORDER BY rowid"
            db.execute(f"INSERT INTO {table} ({OLD_COLUMNS[table]}) SELECT {OLD_COLUMNS[table]} "
                       f"FROM filled.{table}{order}")
        db.commit()
        db.execute("DETACH DATABASE filled")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {version}")
    return filled


def old_rows(path: Path, tables: list[str]) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT {OLD_COLUMNS[t]} FROM {t}")) for t in tables}


@pytest.mark.parametrize("version", [2, 3])
def test_an_older_schema_file_is_migrated_and_keeps_its_state(tmp_path, version):
    """A store of an earlier version opens, is brought to schema 4 in one transaction, and
    holds exactly what it held: every old row as it was, sessions CSI-active, no user facts;
    each user loads as the same store filled by this version loads."""
    path = tmp_path / "registrations.db"
    filled = old_schema_file(path, version)
    tables = [t for t in OLD_COLUMNS if version >= 3 or t != "outbox"]
    before = old_rows(path, tables)
    assert sum(map(len, before.values())) > 100
    store = SqliteStore(path)
    assert old_rows(path, tables) == before
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert {csi for (csi,) in db.execute("SELECT csi FROM sessions")} == {"active"}
        assert {facts for (facts,) in db.execute("SELECT facts FROM users")} == {None}
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] > 0
    reference = SqliteStore(filled)
    users = [f"u{i}@example.org" for i in range(20)]
    for user in users:
        assert store_state(store, user) == store_state(reference, user), user
    if version >= 3:
        assert store.outbox_pending() == reference.outbox_pending()
    else:
        assert store.outbox_pending() == []
    # The migrated file keeps what contract v2 adds, across a reopen.
    engine = StoredEngine(store, CONFIG)
    session = "new@example.org/a"
    engine.handle(EV["session-bind"](session))
    engine.handle(EV["push-enable"](session, "push.example.net", "n1", secret="s"))
    engine.handle(EV["csi-state"](session, "inactive"))
    engine.handle(EV["chat-settings"]("new@example.org", "room@muc.example.org", "never"))
    store.close()
    again = SqliteStore(path)
    snapshot = again.load("new@example.org")
    assert snapshot.sessions[session]["csi"] == "inactive"
    assert snapshot.facts == {"chats": {"room@muc.example.org": ["never", None]}}
    assert again.load(users[0]).version == reference.load(users[0]).version


def stanza_for(user: str):
    return stanza("x1", user)


def test_a_store_reopens_after_close(tmp_path):
    path = tmp_path / "registrations.db"
    filled_store(path)
    store = SqliteStore(path)
    assert store.load("u1@example.org").version > 0
    store.close()


def test_a_failure_between_two_writes_leaves_the_previous_state(tmp_path):
    path = tmp_path / "registrations.db"
    clock = Clock()
    store = SqliteStore(path)
    engine = StoredEngine(store, CONFIG, clock=clock)
    ref = Engine(CONFIG, clock=clock)
    failures = 0
    for i, event in enumerate(random_events(11, 400, USERS)):
        clock.now = 1e9 + i
        if i % 7 == 3:  # this event's commit fails after its second write
            def fail(step: int) -> None:
                if step == 2:
                    raise OSError("disk pulled out")
            store.after_write = fail
            before = SqliteStore(path)
            states = [store_state(before, u) for u in USERS]
            try:
                engine.handle(event)
            except OSError:
                failures += 1
                reopened = SqliteStore(path)
                assert [store_state(reopened, u) for u in USERS] == states
                reopened.close()
            except ImpossibleEvent:
                pass
            else:  # nothing to commit: handled again below with the same outcome
                assert before.load(event_user(event)) == store.load(event_user(event))
            before.close()
            store.after_write = None
            engine = StoredEngine(store, CONFIG, clock=clock)  # forget the pending commit
        assert outcome(engine, event) == outcome(ref, event), f"event {i}"
    assert failures > 10
    for user in USERS:
        assert store_state(store, user) == engine_state(ref, user)


def test_killed_mid_commit_the_file_holds_every_event_before(tmp_path):
    """SIGKILL in the middle of a commit (after its third write): the reopened file holds the
    state after exactly the events before it, and a restarted engine goes on from there."""
    path = tmp_path / "registrations.db"
    seed, start = 5, 150
    child = subprocess.run(
        [sys.executable, str(HERE / "sqlite_crash_child.py"), str(path), str(seed), str(start)],
        capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    killed_at = int(child.stdout.split()[0])
    assert killed_at >= start

    events = random_events(seed, 2000, USERS)
    clock = Clock()
    ref = Engine(CONFIG, clock=clock)
    for i, event in enumerate(events[:killed_at]):
        clock.now = 1e9 + i
        outcome(ref, event)
    store = SqliteStore(path)
    for user in USERS:
        assert store_state(store, user) == engine_state(ref, user)
    engine = StoredEngine(store, CONFIG, clock=clock)
    for i, event in enumerate(events[killed_at:killed_at + 200], start=killed_at):
        clock.now = 1e9 + i
        assert outcome(engine, event) == outcome(ref, event), f"event {i}"


def test_a_locked_file_fails_clearly_and_the_event_lands_once_when_released(tmp_path):
    path = tmp_path / "registrations.db"
    store = SqliteStore(path, timeout=0.2)
    engine = StoredEngine(store, CONFIG)
    session = "bob@example.org/a"
    engine.handle(EV["session-bind"](session))
    engine.handle(EV["push-enable"](session, "push.example.net", "n1", secret="hunter2"))
    engine.handle(EV["session-destroyed"](session))
    error = EV["push-result"]("bob@example.org", "push.example.net", "n1", False, "cancel")
    before = store.load("bob@example.org")

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(StoreUnavailable, match=f"sqlite store {path}: cannot commit user "
                                               "bob@example.org \\(database is locked\\)"):
        engine.handle(error)
    assert store.load("bob@example.org") == before
    other.execute("ROLLBACK")
    other.close()

    assert engine.handle(error) == []
    after = store.load("bob@example.org")
    assert after.registrations[("push.example.net", "n1")]["errors"] == 1
    assert after.version == before.version + 1


def test_deferred_commits_share_a_transaction_and_a_failed_event_is_rolled_back_alone(tmp_path):
    """defer_commits: events join one transaction (another connection sees none of them until
    flush()), the engine reads its own writes meanwhile, and an event whose write fails is
    undone alone (its savepoint), the others of the batch kept."""
    path = tmp_path / "registrations.db"
    clock = Clock()
    store = SqliteStore(path)
    scheduled: list = []
    store.defer_commits(scheduled.append)
    engine = StoredEngine(store, CONFIG, clock=clock)
    ref = Engine(CONFIG, clock=clock)
    other = SqliteStore(path)
    failures = flushes = 0
    flushed = [store_state(other, u) for u in USERS]
    for i, event in enumerate(random_events(11, 400, USERS)):
        clock.now = 1e9 + i
        if i % 7 == 3:
            def fail(step: int) -> None:
                if step == 2:
                    raise OSError("disk pulled out")
            store.after_write = fail
            try:
                engine.handle(event)
            except OSError:
                failures += 1
            except ImpossibleEvent:
                pass
            store.after_write = None
            engine = StoredEngine(store, CONFIG, clock=clock)  # forget the pending commit
        assert outcome(engine, event) == outcome(ref, event), f"event {i}"
        if i % 50 == 49:
            assert scheduled, "an open transaction schedules its flush"
            assert [store_state(other, u) for u in USERS] == flushed  # nothing yet
            scheduled.pop()()  # the loop runs the scheduled flush
            scheduled.clear()
            flushes += 1
            flushed = [store_state(other, u) for u in USERS]
            assert flushed == [engine_state(ref, u) for u in USERS]
    store.flush()
    assert failures > 10 and flushes == 8
    for user in USERS:
        assert store_state(other, user) == engine_state(ref, user)
    other.close()
    store.close()


def test_deferred_writers_taking_turns_see_each_others_commits(tmp_path):
    """Two sidecars on one file, each deferring its commits, take turns: each must see what
    the other committed meanwhile (the versions a store remembers under its write lock are
    dropped once another connection committed), so the two together decide what one engine
    fed the whole trace decides."""
    path = tmp_path / "registrations.db"
    clock = Clock()
    stores = [SqliteStore(path), SqliteStore(path)]
    for store in stores:
        store.defer_commits(lambda flush: None)  # flushed by hand, each turn
    engines = [StoredEngine(store, CONFIG, clock=clock) for store in stores]
    ref = Engine(CONFIG, clock=clock)
    turns = 0
    for i, event in enumerate(random_events(12, 600, USERS)):
        clock.now = 1e9 + i
        side = (i // 3) % 2  # three events on one side, then three on the other
        assert outcome(engines[side], event) == outcome(ref, event), f"event {i}"
        if i % 3 == 2:
            stores[side].flush()  # the other may take the write lock now
            turns += 1
    conflicts = sum(engine.conflicts for engine in engines)
    assert turns == 200 and conflicts > 20, conflicts  # stale copies were refused, not trusted
    for user in USERS:
        assert store_state(stores[0], user) == engine_state(ref, user)
    for store in stores:
        store.close()


def test_a_transaction_sqlite_rolled_back_leaves_no_remembered_version(tmp_path):
    """SQLite rolls a transaction back on its own after some errors (a full disk, an I/O
    error): the versions its commits made, which the store remembered, must be forgotten
    with it, or the engine, whose copies are of those lost commits, would be told they are
    current and build on state that was never written."""
    path = tmp_path / "registrations.db"
    clock = Clock()
    store = SqliteStore(path)
    store.defer_commits(lambda flush: None)
    engine = StoredEngine(store, CONFIG, clock=clock)
    ref = Engine(CONFIG, clock=clock)
    events = random_events(13, 300, USERS)
    for i, event in enumerate(events[:100]):
        clock.now = 1e9 + i
        assert outcome(engine, event) == outcome(ref, event)
    store.flush()
    before = {user: store_state(store, user) for user in USERS}
    for i, event in enumerate(events[100:140], 100):  # decided, then lost with the transaction
        clock.now = 1e9 + i
        outcome(engine, event)
    assert {user: store_state(store, user) for user in USERS} != before
    lost = {user: engine._cache[user].identity for user in USERS}
    store._db.execute("ROLLBACK")  # what SQLite does after SQLITE_FULL
    for user in USERS:  # a copy of a lost commit is not current, nor built on
        fresh = store.load(user, lost[user])
        assert fresh is not None and fresh.identity != lost[user]
        assert not store.commit(UserChanges(user, lost[user][0], new_token(), 0))
    assert {user: store_state(store, user) for user in USERS} == before
    for i, event in enumerate(events[140:], 140):  # the reference never saw the lost ones
        clock.now = 1e9 + i
        assert outcome(engine, event) == outcome(ref, event), f"event {i}"
    store.flush()
    for user in USERS:
        assert store_state(store, user) == engine_state(ref, user)
    store.close()
