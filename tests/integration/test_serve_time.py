"""The time-based rules live: a real `pushrules serve` (stdin input, a real Prosody, a recording
app server) sends a held push when its burst window ends, with no further input line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from harness import APP_JIDS, AppServer, enable_events, message
from replaykit import local_redis
from test_serve import lines, start_serve, write_config

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]


@pytest.fixture(scope="module")
def redis_server():
    """A single real redis-server for this module (a database per test)."""
    with local_redis() as server:
        yield server


def store_url(kind: str, tmp_path: Path, request, name: str = "serve") -> str:
    if kind == "memory":
        return "memory:"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.db')}"
    server = request.getfixturevalue("redis_server")
    return f"redis://127.0.0.1:{server.port}/{next(_databases)}"


_databases = iter(range(1, 16))


def burst(user: str, node: str, *, with_at: float | None) -> list[dict]:
    """A hibernated session and three stanzas queued for it at once."""
    session = f"{user}/phone"
    events = [*enable_events(user, node),
              {"event": "smacks-hibernation-start", "session": session, "queue": []}]
    events += [{"event": "stanza-queued", "session": session, "stanza": message(m, user)}
               for m in ("t1", "t2", "t3")]
    if with_at is not None:
        for event in events:
            event["at"] = with_at
    return events


async def serve_burst(tmp_path: Path, prosody, user: str, node: str, store: str,
                      with_at: float | None) -> tuple[int, list[dict], str, list]:
    app = await AppServer(APP, prosody.port).start()
    try:
        proc = await start_serve(write_config(tmp_path, prosody), "--set", "burst_window=2",
                                 "--store", store)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(lines(*burst(user, node, with_at=with_at)))
        await proc.stdin.drain()
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        # No further input: the held stanzas go out when the window since the first ends.
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        received = list(app.received)
        proc.stdin.close()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        outcomes = [first, second, *(json.loads(x) for x in out.decode().splitlines())]
        return proc.returncode or 0, outcomes, err.decode(), received
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await app.stop()


@pytest.mark.parametrize("with_at", [None, 1000.0], ids=["untimed-input", "timed-input"])
@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_burst_gives_one_push_at_once_and_one_coalesced_when_the_window_ends(
        prosody, tmp_path, request, kind, with_at):
    user, node = f"tina-{kind}-{int(with_at or 0)}@localhost", "node-burst"
    store = store_url(kind, tmp_path, request)
    code, outcomes, err, received = asyncio.run(
        serve_burst(tmp_path, prosody, user, node, store, with_at))
    assert code == 0, err
    assert [(o["stanzas"], o["status"], o["rule"]) for o in outcomes] == [
        (["t1"], "delivered", "a/queued"), (["t2", "t3"], "delivered", "a/queued")]
    # Held until the window since the first push ends (the model's times, not a wall clock).
    assert outcomes[1]["at"] == outcomes[0]["at"] + 2
    if with_at is not None:  # the server's times are the clock: the first push at its `at`
        assert outcomes[0]["at"] == with_at
    assert [r.publish.node for r in received] == [node, node]
    assert "6 events applied, 0 lines rejected" in err


async def restarted(prosody, tmp_path: Path, store: str, first_input: bytes,
                    second_input: bytes = b"") -> tuple[list[dict], dict, str, list]:
    """Two serves one after the other over ``store`` (burst_window=2): the first reads
    ``first_input`` to its end; the second reads ``second_input`` and is awaited for its first
    outcome line. The first run's outcomes, the second's first, its stderr, the publishes."""
    started: list[asyncio.subprocess.Process] = []
    app = await AppServer(APP, prosody.port).start()
    try:
        config = write_config(tmp_path, prosody)
        first = await start_serve(config, "--set", "burst_window=2", "--store", store)
        started.append(first)
        try:
            out, err = await asyncio.wait_for(first.communicate(first_input), 60)
        except TimeoutError:  # (it hung once: the timer's lost cancellation, clock.py)
            raise AssertionError("serve did not exit at the end of its input") from None
        assert first.returncode == 0, err.decode()
        before = [json.loads(x) for x in out.decode().splitlines()]
        second = await start_serve(config, "--set", "burst_window=2", "--store", store)
        started.append(second)
        assert second.stdout is not None and second.stdin is not None
        second.stdin.write(second_input)
        await second.stdin.drain()
        try:
            held = json.loads(await asyncio.wait_for(second.stdout.readline(), 30))
        except TimeoutError:
            raise AssertionError("the second run sent nothing within 30 s") from None
        second.stdin.close()
        _, err2 = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err2.decode()
        return before, held, err2.decode(), list(app.received)
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await app.stop()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_held_push_goes_out_from_the_next_run_over_a_store(prosody, tmp_path, request, kind):
    """Input ends while a push is held: over a store it stays held (durable), and the next
    serve, given no input at all, sends it when its window ends."""
    user, node = f"tom-restart-{kind}@localhost", "node-held"
    store = store_url(kind, tmp_path, request, "held")
    before, held, err, _ = asyncio.run(restarted(
        prosody, tmp_path, store, lines(*burst(user, node, with_at=None))))
    assert [(o["stanzas"], o["status"]) for o in before] == [(["t1"], "delivered")]
    assert (held["stanzas"], held["status"], held["rule"]) == (["t2", "t3"], "delivered",
                                                               "a/queued")
    assert held["at"] == before[0]["at"] + 2
    assert "0 events applied" in err


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_after_a_restart_an_event_without_at_happens_at_its_users_clock(
        prosody, tmp_path, request, kind):
    """The first run's events carry `at` an hour ahead of this host's clock (the server's
    clock is ahead). The next serve, over the same store, reads an event without `at`: it
    happens at the user's clock, never before it, and the live clock follows, so the push it
    holds goes out when the window since the last push ends: about 2 s later, not in an hour."""
    user, node = f"tia-clock-{kind}@localhost", "node-clock"
    store = store_url(kind, tmp_path, request, "clock")
    ahead = float(int(time.time()) + 3600)
    session = f"{user}/phone"
    events = [*enable_events(user, node),
              {"event": "smacks-hibernation-start", "session": session, "queue": []},
              {"event": "stanza-queued", "session": session, "stanza": message("c1", user)}]
    untimed = {"event": "stanza-queued", "session": session, "stanza": message("c2", user)}
    before, held, err, received = asyncio.run(restarted(
        prosody, tmp_path, store, lines(*({**e, "at": ahead} for e in events)), lines(untimed)))
    assert [(o["stanzas"], o["status"], o["at"]) for o in before] == [
        (["c1"], "delivered", ahead)]
    # c2 happened at the user's clock (within the window of c1's push), so it was held until
    # the window's end; it never went back to this host's earlier clock.
    assert (held["stanzas"], held["status"], held["at"]) == (["c2"], "delivered", ahead + 2)
    assert [r.publish.node for r in received] == [node, node]
    assert "1 events applied" in err
