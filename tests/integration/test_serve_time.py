"""The time-based rules live: a real `pushrules serve` (stdin input, a real Prosody, a recording
app server) sends a held push when its burst window ends, with no further input line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from harness import APP_JIDS, AppServer, enable_events, message
from test_serve import lines, start_serve, write_config

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]


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
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_burst_gives_one_push_at_once_and_one_coalesced_when_the_window_ends(
        prosody, tmp_path, kind, with_at):
    user, node = f"tina-{kind}-{int(with_at or 0)}@localhost", "node-burst"
    store = "memory:" if kind == "memory" else f"sqlite:///{tmp_path / 'serve.db'}"
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


def test_a_held_push_goes_out_from_the_next_run_over_a_store(prosody, tmp_path):
    """Input ends while a push is held: over a store it stays held (durable), and the next
    serve, given no input at all, sends it when its window ends."""
    user, node = "tom-restart@localhost", "node-held"
    store = f"sqlite:///{tmp_path / 'held.db'}"

    started: list[asyncio.subprocess.Process] = []

    async def main() -> tuple[list[dict], list[dict], str]:
        app = await AppServer(APP, prosody.port).start()
        try:
            config = write_config(tmp_path, prosody)
            first = await start_serve(config, "--set", "burst_window=2", "--store", store)
            started.append(first)
            try:
                out, err = await asyncio.wait_for(first.communicate(
                    lines(*burst(user, node, with_at=None))), 60)
            except TimeoutError:  # (it hung once: the timer's lost cancellation, clock.py)
                raise AssertionError("serve did not exit at the end of its input") from None
            assert first.returncode == 0, err.decode()
            before = [json.loads(x) for x in out.decode().splitlines()]
            second = await start_serve(config, "--set", "burst_window=2", "--store", store)
            started.append(second)
            assert second.stdout is not None and second.stdin is not None
            held = json.loads(await asyncio.wait_for(second.stdout.readline(), 60))
            second.stdin.close()
            _, err2 = await asyncio.wait_for(second.communicate(), 60)
            return before, [held], err2.decode()
        finally:
            for proc in started:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await app.stop()

    before, after, err = asyncio.run(main())
    assert [(o["stanzas"], o["status"]) for o in before] == [(["t1"], "delivered")]
    assert [(o["stanzas"], o["status"], o["rule"]) for o in after] == [
        (["t2", "t3"], "delivered", "a/queued")]
    assert after[0]["at"] == before[0]["at"] + 2
    assert "0 events applied" in err
