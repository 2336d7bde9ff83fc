"""Contract v2's state in every store (memory, SQLite, real Redis, real Redis Cluster): a
session's CSI state, the user's chat settings and calls (the facts record) survive a restart,
so a trace split anywhere by a restart pushes exactly what one uninterrupted run pushes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from traces import BOB, PUSH, Clock, engine_state, outcome, stanza, store_state

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.stanza import parse_stanza
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoreCorrupt, StoredEngine
from pushrules.runtime.trace import read_trace

ROOT = Path(__file__).resolve().parents[2]
V2_EXAMPLES = ("groupchat-settings", "call-propose-retract", "call-echo-and-queue",
               "remote-disable")
"""The untimed v2 examples (the timed ones are issue 14's: held pushes are not stored yet)."""
ROOM = "room@muc.example.org"
JMI = "urn:xmpp:jingle-message:0"
GENERATED_TRACES = {"memory": 60, "sqlite": 40, "redis": 30, "cluster": 10}
"""Hypothesis examples per store (the cluster's commits each wait for a replica)."""


def example_events(name: str) -> list[Any]:
    text = (ROOT / "examples" / "v2" / f"{name}.jsonl").read_text(encoding="utf-8")
    return [item.event for item in read_trace(text.splitlines(keepends=True))]


def plain_run(events: list[Any], config: Config) -> list[Any]:
    engine = Engine(config, clock=Clock())
    return [outcome(engine, event) for event in events]


def run_restarted(opener: Any, events: list[Any], config: Config,
                  restarts: set[int] | None = None) -> tuple[list[Any], StoredEngine]:
    """Outcomes with a new StoredEngine on the same store before each event whose index is in
    ``restarts`` (None: before every event)."""
    engine = None
    results = []
    for i, event in enumerate(events):
        if engine is None or restarts is None or i in restarts:
            engine = StoredEngine(opener(), config, clock=Clock())  # a new process
        results.append(outcome(engine, event))
    assert engine is not None
    return results, engine


def call(kind: str, call_id: str, ident: str) -> Any:
    return parse_stanza(f"<message xmlns='jabber:client' id='{ident}' from='alice@example.org/pc' "
                        f"to='{BOB}' type='chat'><{kind} xmlns='{JMI}' id='{call_id}'/></message>")


def groupchat(ident: str, body: str = "hello", extra: str = "") -> Any:
    return parse_stanza(f"<message xmlns='jabber:client' id='{ident}' from='{ROOM}/alice' "
                        f"to='{BOB}' type='groupchat'><body>{body}</body>{extra}</message>")


def devices(engine: StoredEngine, names: tuple[str, ...]) -> None:
    """bob binds a session per name and enables push on it (node = the name)."""
    for name in names:
        session = f"{BOB}/{name}"
        engine.handle(EV["session-bind"](session))
        engine.handle(EV["push-enable"](session, PUSH, name, secret="s3cret"))


def pushed(pushes: list[Any]) -> list[tuple[str, str, tuple[str | None, ...], bool]]:
    return [(p.node, p.rule, p.stanzas, p.urgent) for p in pushes]


# --- the examples and generated traces: restarts change nothing -----------------------------

@pytest.mark.parametrize("name", V2_EXAMPLES)
def test_a_v2_example_split_at_every_line_by_a_restart_pushes_as_one_run(opener: Any,
                                                                         name: str) -> None:
    events = example_events(name)
    expected = plain_run(events, Config())
    assert sum(len(o) for o in expected if isinstance(o, list)) >= 2  # the example pushes
    for split in range(1, len(events)):
        got, _ = run_restarted(opener.fresh(), events, Config(), {split})
        assert got == expected, f"{name}: restarted before event {split}"
    everywhere, _ = run_restarted(opener.fresh(), events, Config())
    assert everywhere == expected, f"{name}: restarted before every event"


def test_generated_v2_traces_with_restarts_push_as_one_run(opener: Any) -> None:
    """Hypothesis v2 traces (tests/oracle/strategies.py, untimed, with options): a new engine
    before every event, and one engine throughout (its cached copies), each on a fresh store,
    decide as one plain engine and leave the same state, facts included."""
    from oracle.strategies import traces, v2_options  # type: ignore[import-not-found]

    @settings(max_examples=GENERATED_TRACES[opener.kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(traces(v2=True), v2_options(timed=False))
    def check(text: str, options: dict[str, str]) -> None:
        config = Config().with_settings(options)
        events = [item.event for item in read_trace(text.splitlines(keepends=True))]
        ref = Engine(config, clock=Clock())
        expected = [outcome(ref, event) for event in events]
        restart_sets: tuple[set[int] | None, ...] = (None, set())
        for restarts in restart_sets:
            store = opener.fresh()
            got, _ = run_restarted(store, events, config, restarts)
            assert got == expected, text
            for user in ("bob@example.org", "carol@example.org"):
                assert store_state(store(), user) == engine_state(ref, user), text

    check()


# --- each kind of v2 state, across a restart --------------------------------------------------

def test_a_csi_inactive_device_still_rings_after_a_restart(opener: Any) -> None:
    engine = StoredEngine(opener(), Config())
    devices(engine, ("phone", "desktop"))
    engine.handle(EV["csi-state"](f"{BOB}/phone", "inactive"))
    restarted = StoredEngine(opener(), Config())
    rung = restarted.handle(EV["message/offline/handle"](BOB, call("propose", "c1", "p1")))
    # The desktop is active and CSI-active: no ring there; the inactive phone rings.
    assert pushed(rung) == [("phone", "e/call", ("p1",), True)]
    assert opener().load(BOB).sessions[f"{BOB}/phone"]["csi"] == "inactive"
    # Active again after another restart: neither rings.
    StoredEngine(opener(), Config()).handle(EV["csi-state"](f"{BOB}/phone", "active"))
    again = StoredEngine(opener(), Config())
    assert again.handle(EV["message/offline/handle"](BOB, call("propose", "c2", "p2"))) == []


def test_a_call_retracted_after_a_restart_ends_exactly_where_it_rang(opener: Any) -> None:
    engine = StoredEngine(opener(), Config())
    devices(engine, ("phone", "tablet", "desktop"))
    engine.handle(EV["csi-state"](f"{BOB}/phone", "inactive"))
    engine.handle(EV["smacks-hibernation-start"](f"{BOB}/tablet", ()))
    rung = engine.handle(EV["message/offline/handle"](BOB, call("propose", "c1", "p1")))
    assert sorted(p.node for p in rung) == ["phone", "tablet"]
    assert opener().load(BOB).facts["calls"] == {"c1": [[PUSH, "phone"], [PUSH, "tablet"]]}
    # The desktop's session goes inactive after the ring: the end of the call still goes only
    # where the propose went.
    engine.handle(EV["csi-state"](f"{BOB}/desktop", "inactive"))
    restarted = StoredEngine(opener(), Config())
    ended = restarted.handle(EV["message/offline/handle"](BOB, call("retract", "c1", "r1")))
    assert sorted(pushed(ended)) == [("phone", "e/call-end", ("r1",), False),
                                     ("tablet", "e/call-end", ("r1",), False)]
    unknown = StoredEngine(opener(), Config()).handle(
        EV["message/offline/handle"](BOB, call("retract", "c9", "r9")))
    assert unknown == []


def test_chat_settings_survive_a_restart(opener: Any) -> None:
    engine = StoredEngine(opener(), Config())
    devices(engine, ("phone",))
    engine.handle(EV["smacks-hibernation-start"](f"{BOB}/phone", ()))
    engine.handle(EV["chat-settings"](BOB, ROOM, "never"))
    muted = StoredEngine(opener(), Config()).handle(EV["message/bare/groupchat"](BOB,
                                                                                 groupchat("g1")))
    assert muted == []
    StoredEngine(opener(), Config()).handle(EV["chat-settings"](BOB, ROOM, "on-mention",
                                                                nick="bobby"))
    restarted = StoredEngine(opener(), Config())
    assert restarted.handle(EV["message/bare/groupchat"](BOB, groupchat("g2"))) == []
    mention = (f"<reference xmlns='urn:xmpp:reference:0' type='mention' "
               f"uri='xmpp:{ROOM}/bobby' begin='0' end='5'/>")
    hit = StoredEngine(opener(), Config()).handle(
        EV["message/bare/groupchat"](BOB, groupchat("g3", "bobby", mention)))
    assert [(p.node, p.stanzas) for p in hit] == [("phone", ("g3",))]
    assert opener().load(BOB).facts["chats"] == {ROOM: ["on-mention", "bobby"]}


def test_a_cached_copy_sees_a_chat_setting_another_node_committed(opener: Any) -> None:
    node_a, node_b = StoredEngine(opener(), Config()), StoredEngine(opener(), Config())
    devices(node_a, ("phone",))
    node_a.handle(EV["smacks-hibernation-start"](f"{BOB}/phone", ()))
    node_b.handle(EV["chat-settings"](BOB, ROOM, "never"))
    # A's cached copy has no setting (default: always): its push is refused, the rerun on the
    # fresh state pushes nothing.
    assert node_a.handle(EV["message/bare/groupchat"](BOB, groupchat("g1"))) == []
    assert node_a.conflicts == 1


# --- the facts record: written only when it changes, read back or refused --------------------

def test_the_facts_record_is_written_only_when_it_changes(opener: Any) -> None:
    engine = StoredEngine(opener(), Config())
    written: list[Any] = []
    engine.before_commit = lambda changes: written.append(changes.facts)
    devices(engine, ("phone",))
    engine.handle(EV["smacks-hibernation-start"](f"{BOB}/phone", ()))
    engine.handle(EV["message/offline/handle"](BOB, stanza("m1", BOB)))
    assert written and all(facts is None for facts in written)  # v1 events: no facts write
    assert raw_facts(opener, BOB) in (None, "")  # a user with no facts has no record
    written.clear()
    engine.handle(EV["chat-settings"](BOB, ROOM, "never"))
    assert written == [{"chats": {ROOM: ["never", None]}}]
    written.clear()
    engine.handle(EV["chat-settings"](BOB, ROOM, "never"))  # the same setting again
    engine.handle(EV["message/bare/groupchat"](BOB, groupchat("g1")))
    assert written == []  # nothing changed: no commit at all
    engine.handle(EV["session-destroyed"](f"{BOB}/phone"))
    assert written == [None]
    assert json.loads(raw_facts(opener, BOB) or "") == {"chats": {ROOM: ["never", None]}}


@pytest.mark.parametrize(("text", "what"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"chats": {"room@muc.example.org": ["never"]}}', "ValueError"),
    ('{"calls": {"c1": 7}}', "TypeError"),
    ('{"chats": ["room@muc.example.org"]}', "AttributeError"),
])
def test_a_corrupt_facts_record_is_refused_naming_the_user_and_nothing_applied(
        opener: Any, text: str, what: str) -> None:
    engine = StoredEngine(opener(), Config())
    devices(engine, ("phone",))
    engine.handle(EV["chat-settings"](BOB, ROOM, "never"))
    corrupt_facts(opener, BOB, text)
    before = raw_version(opener, BOB)
    restarted = StoredEngine(opener(), Config())
    with pytest.raises(StoreCorrupt, match="the facts record of user bob@example.org is not "
                                           "readable") as info:
        restarted.handle(EV["session-destroyed"](f"{BOB}/phone"))
    store_name = opener.url.partition("?")[0].removeprefix("sqlite:///")  # the file, the server
    assert what in str(info.value) and store_name in str(info.value)
    assert (raw_version(opener, BOB), raw_facts(opener, BOB)) == (before, text)
    assert restarted.commits == 0 and restarted.chats == {}


def raw_facts(opener: Any, user: str) -> str | None:
    """The user's facts record as the store holds it, read around the store's load."""
    store = opener()
    if opener.kind == "memory":
        state = store._users.get(user)
        return None if state is None else state.facts
    if opener.kind == "sqlite":
        with sqlite3.connect(store.path) as db:
            row = db.execute("SELECT facts FROM users WHERE user = ?", (user,)).fetchone()
        return None if row is None else row[0]
    value = store._redis.get(f"{store.prefix}:{{{user}}}:facts")
    return None if value is None else value.decode()


def raw_version(opener: Any, user: str) -> int:
    store = opener()
    if opener.kind == "memory":
        return int(store._users[user].version)
    if opener.kind == "sqlite":
        with sqlite3.connect(store.path) as db:
            return int(db.execute("SELECT version FROM users WHERE user = ?",
                                  (user,)).fetchone()[0])
    return int(store._redis.hget(f"{store.prefix}:{{{user}}}:meta", "version"))


def corrupt_facts(opener: Any, user: str, text: str) -> None:
    store = opener()
    if opener.kind == "memory":
        store._users[user].facts = text
    elif opener.kind == "sqlite":
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE users SET facts = ? WHERE user = ?", (text, user))
    else:
        store._redis.set(f"{store.prefix}:{{{user}}}:facts", text)


def test_a_session_row_stored_without_csi_loads_as_active(opener: Any) -> None:
    """Rows written before contract v2 have no csi: CSI-active (the desktop is not rung)."""
    if opener.kind == "sqlite":
        pytest.skip("SQLite rows always have csi: the migration from schema 3 sets 'active' "
                    "(test_sqlite.py: test_an_older_schema_file_is_migrated_and_keeps_its_state)")
    engine = StoredEngine(opener(), Config())
    devices(engine, ("phone", "desktop"))
    engine.handle(EV["csi-state"](f"{BOB}/desktop", "inactive"))
    drop_csi(opener, BOB, f"{BOB}/desktop")
    assert "csi" not in opener().load(BOB).sessions[f"{BOB}/desktop"]
    rung = StoredEngine(opener(), Config()).handle(
        EV["message/offline/handle"](BOB, call("propose", "c1", "p1")))
    assert rung == []


def drop_csi(opener: Any, user: str, sid: str) -> None:
    store = opener()
    if opener.kind == "memory":
        rows = store._users[user].sessions
        rows[sid] = json.dumps({k: v for k, v in json.loads(rows[sid]).items() if k != "csi"})
    else:
        key = f"{store.prefix}:{{{user}}}:sessions"
        row = json.loads(store._redis.hget(key, sid))
        del row["csi"]
        store._redis.hset(key, sid, json.dumps(row))


def test_a_commit_with_facts_fails_between_writes_and_leaves_nothing(tmp_path: Path) -> None:
    """SQLite: a failure after the facts were written rolls the whole event back."""
    from pushrules.runtime.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "v2.db")
    engine = StoredEngine(store, Config())
    devices(engine, ("phone",))
    engine.handle(EV["smacks-hibernation-start"](f"{BOB}/phone", ()))
    before = store.load(BOB)

    def fail(step: int) -> None:
        if step == 1:  # the user row with the facts written, the registration's ids not yet
            raise OSError("disk full")

    store.after_write = fail
    with pytest.raises(OSError):
        engine.handle(EV["message/offline/handle"](BOB, call("propose", "c1", "p1")))
    store.after_write = None
    assert before is not None and store.load(BOB) == before and before.facts == {}
    rung = StoredEngine(SqliteStore(tmp_path / "v2.db"), Config()).handle(
        EV["message/offline/handle"](BOB, call("propose", "c1", "p1")))
    assert pushed(rung) == [("phone", "e/call", ("p1",), True)]
    after = store.load(BOB)
    assert after is not None and after.facts == {"calls": {"c1": [[PUSH, "phone"]]}}

