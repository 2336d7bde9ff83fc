"""The time-based rules over every store (memory, SQLite, real Redis, the real cluster): held
pushes, expiries and retries survive a restart, and come due across users without an event of
theirs (the due index)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import StoredEngine
from pushrules.runtime.trace import read_trace

EXAMPLES = Path(__file__).parents[2] / "examples" / "v2"
TIMED = ("burst-coalescing", "burst-recheck", "orphan-expiry", "retry-probe")
BOB, ANN = "bob@example.org", "ann@example.org"
PUSH = "push.example.net"


def example(name: str) -> tuple[Config, list[Any]]:
    path = EXAMPLES / f"{name}.jsonl"
    lines = path.read_text().splitlines()
    words = shlex.split(lines[0].removeprefix("# pushrules:"))
    settings = dict(w.split("=", 1) for w in words if w != "--set")
    return Config().with_settings(settings), [item.event for item in read_trace(lines)]


def step(engine: Engine, event: Any) -> list[Push]:
    """One event as replay runs it: what comes due first, then the event."""
    pushes = engine.run_due(event.at) if event.at is not None else []
    try:
        return pushes + engine.handle(event)
    except ValueError:  # an impossible event (skipped by replay): the same on both sides
        return pushes


def plain_run(config: Config, events: list[Any]) -> list[Push]:
    engine = Engine(config)
    pushes = [p for event in events for p in step(engine, event)]
    return pushes + engine.flush()


def restarted_run(opener: Any, config: Config, events: list[Any], split: int) -> list[Push]:
    """The events up to ``split`` in one process, the rest in a new one over the same store."""
    first = StoredEngine(opener(), config)
    pushes = [p for event in events[:split] for p in step(first, event)]
    first.store.close()
    second = StoredEngine(opener(), config)
    pushes += [p for event in events[split:] for p in step(second, event)]
    return pushes + second.flush_held()


def splits(opener: Any, events: list[Any]) -> range:
    return range(0, len(events) + 1)


@pytest.mark.parametrize("name", TIMED)
def test_a_restart_at_every_line_changes_no_push_of_a_timed_example(opener, name):
    config, events = example(name)
    expected = plain_run(config, events)
    assert expected and all(p.at is not None for p in expected)
    restarts = 0
    for split in splits(opener, events):
        fresh = opener.fresh()
        try:
            assert restarted_run(fresh, config, events, split) == expected, f"split {split}"
        finally:
            fresh.close()
        restarts += 1
    assert restarts == len(events) + 1


def held_burst(engine: StoredEngine, user: str, at: float) -> list[Push]:
    """A user's phone hibernates; two stanzas queued: one pushed, one held (burst_window)."""
    session = f"{user}/phone"
    out: list[Push] = []
    for event in (EV["session-bind"](session, at=at),
                  EV["push-enable"](session, PUSH, "n1", secret="s3cret"),
                  EV["smacks-hibernation-start"](session, ()),
                  EV["stanza-queued"](session, stanza(f"{user[:3]}1"), at=at + 1),
                  EV["stanza-queued"](session, stanza(f"{user[:3]}2"), at=at + 2)):
        out += step(engine, event)
    return out


def stanza(sid: str) -> Any:
    from pushrules.model.stanza import parse_stanza

    return parse_stanza(f"<message xmlns='jabber:client' id='{sid}' from='eve@example.org/x' "
                        f"to='{BOB}' type='chat'><body>hi</body></message>")


def test_held_pushes_of_users_come_due_in_time_order_without_an_event_of_theirs(opener):
    config = Config(burst_window=5)
    engine = StoredEngine(opener(), config)
    assert [p.stanzas for p in held_burst(engine, BOB, 0)] == [("bob1",)]  # bob2 held to 6
    assert [p.stanzas for p in held_burst(engine, ANN, 1)] == [("ann1",)]  # ann2 held to 7
    assert engine.next_due() == 6
    assert engine.run_due(5.5) == []
    engine.store.close()
    restarted = StoredEngine(opener(), config)  # a new process: nothing in memory
    assert restarted.next_due() == 6
    due = restarted.run_due(10)
    assert [(p.user, p.stanzas, p.at) for p in due] == [(BOB, ("bob2",), 6), (ANN, ("ann2",), 7)]
    # Each in the outbox, committed with the state that decided it.
    assert [e.push for e in restarted.last_entries] == due
    assert all(e.key is not None for e in restarted.last_entries)
    pending = {(e.push.user, e.push.stanzas) for e in restarted.outbox_pending()}
    assert {(BOB, ("bob2",)), (ANN, ("ann2",))} <= pending
    assert restarted.next_due() is None and restarted.run_due(20) == []
    assert restarted.flush_held() == []


def test_after_a_restart_pushes_still_carry_at_and_the_users_clock(opener):
    config = Config(burst_window=5)
    engine = StoredEngine(opener(), config)
    held_burst(engine, BOB, 100)
    engine.store.close()
    restarted = StoredEngine(opener(), config)
    # An event without `at`: at the user's last time (102), its push carries it.
    pushes = restarted.handle(EV["message/offline/handle"](BOB, stanza("late")))
    assert pushes == [] and restarted.time == 102  # held: the window since 101 runs to 106
    flushed = restarted.flush_held()
    assert [(p.stanzas, p.at) for p in flushed] == [(("bob2", "late"), 106)]


def test_registration_rows_keep_the_time_facts(opener):
    """Every store keeps the rows' time facts: held stanzas, last sent, hold-until (Redis and
    the cluster keep the row as JSON that carries them as extra keys)."""
    engine = StoredEngine(opener(), Config(burst_window=5, orphan_ttl=50))
    held_burst(engine, BOB, 0)
    engine.handle(EV["session-destroyed"](f"{BOB}/phone", at=3))
    row = opener().load(BOB).registrations[(PUSH, "n1")]
    assert (row["last_sent"], row["hold_until"], row["expire_at"]) == (1, 6, 53)
    assert [held[0][0] for held in row["held"]] == ["bob2"]  # the stanza's id field
    facts = opener().load(BOB).facts
    assert facts["clock"] == [3, True]
    json.dumps(row)  # JSON-able as stored


def test_orphan_ttl_runs_on_every_store_by_the_models_clock(opener):
    engine = StoredEngine(opener(), Config(orphan_ttl=10))
    session = f"{BOB}/phone"
    for event in (EV["session-bind"](session, at=0),
                  EV["push-enable"](session, PUSH, "n1", secret="s3cret"),
                  EV["session-destroyed"](session, at=5)):
        step(engine, event)
    assert engine.next_due() == 15
    assert engine.run_due(14) == []
    assert opener().load(BOB).registrations[(PUSH, "n1")]["state"] == "orphaned"
    engine.run_due(15)
    row = opener().load(BOB).registrations[(PUSH, "n1")]
    assert (row["state"], row["reason"]) == ("disabled", "expired: bound to no live session "
                                                         "for orphan_ttl=10 s")
    assert engine.next_due() is None


def test_a_tick_runs_the_due_work_of_every_user(opener):
    engine = StoredEngine(opener(), Config(burst_window=5))
    held_burst(engine, BOB, 0)
    held_burst(engine, ANN, 0)
    pushes = engine.handle(EV["tick"](at=6))
    assert sorted((p.user, p.stanzas) for p in pushes) == [(ANN, ("ann2",)), (BOB, ("bob2",))]
    assert len(engine.last_entries) == 2


@pytest.mark.parametrize("name", TIMED)
def test_replay_with_a_store_flushes_held_pushes_at_the_end_like_the_plain_replay(opener, name):
    """`pushrules replay --store URL` of a timed example prints its expected output (held
    pushes flushed at the end, every push with `at`), on every store."""
    import io

    from pushrules.runtime.replay import replay

    path = EXAMPLES / f"{name}.jsonl"
    config, _ = example(name)
    out, err = io.StringIO(), io.StringIO()
    status = replay(path.read_text().splitlines(), out, err, config=config,
                    engine=StoredEngine(opener(), config))
    assert (status, err.getvalue()) == (0, "")
    assert out.getvalue() == path.with_suffix(".expected").read_text()
