"""SIGKILL `pushrules serve` at random moments, restart it on the same SQLite store without
feeding its input again: every push it had decided (every dedup id committed) reaches the app
server, and the duplicates stay within the publishes in flight at each kill (one per
registration: a registration's pushes are sent one at a time), visible as ``attempts``."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from harness import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer, enable_events, offline_event

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]
USERS = tuple(f"crash{i}@localhost" for i in range(4))
MESSAGES = 250  # per user: 1,000 offline stanzas per run
RUNS = 6
SUMMARY = Path(os.environ.get("PUSHRULES_CRASH_SUMMARY", "/dev/null"))


class SqliteUnderTest:
    def __init__(self, where: Path) -> None:
        self.path = where / "state.db"
        self.url = f"sqlite:///{self.path}"

    def decided(self) -> set[str]:
        """Every stanza id a committed event decided to push (the dedup ids: the window is
        far larger than the trace)."""
        if not self.path.exists():
            return set()
        with sqlite3.connect(self.path) as db:
            return {ident for (ident,) in db.execute("SELECT id FROM pushed")}

    def outbox_size(self) -> int:
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


class RedisUnderTest:
    def __init__(self, server_url: str, prefix: str) -> None:
        import redis

        self.url = f"{server_url}?prefix={prefix}"
        self.prefix = prefix
        self.client = redis.Redis.from_url(server_url)

    def decided(self) -> set[str]:
        ids: set[str] = set()
        for key in self.client.scan_iter(match=f"{self.prefix}:*:pushed:*"):
            ids.update(x.decode() for x in self.client.lrange(key, 0, -1))
        return ids

    def outbox_size(self) -> int:
        return sum(int(self.client.hlen(key)) for key in
                   self.client.scan_iter(match=f"{self.prefix}:*:outbox"))


def config(tmp_path: Path, port: int, store: str, max_outbox: int) -> Path:
    path = tmp_path / "crash.toml"
    path.write_text("\n".join([
        "[component]", f'jid = "{PUSH_JID}"', 'host = "127.0.0.1"', f"port = {port}",
        "[rules]", "include_body = true",  # the body names the stanza: the app server reads it
        "[dispatch]", "iq_timeout = 5", "backoff_initial = 0.05", "backoff_max = 0.2",
        "shutdown_grace = 60", f"max_outbox = {max_outbox}",
        "[store]", f'url = "{store}"', "",
    ]))
    return path


def trace() -> bytes:
    events: list[dict] = []
    for user in USERS:
        events += enable_events(user, "node-crash", secret=f"s-{user}")
        events.append({"event": "session-destroyed", "session": f"{user}/phone"})
    for i in range(MESSAGES):
        for user in USERS:
            mid = f"{user.split('@')[0]}-{i}"
            events.append(offline_event(user, mid, body=mid))
    return "".join(json.dumps(e) + "\n" for e in events).encode()


STARTED: list[asyncio.subprocess.Process] = []


async def serve(path: Path, stdin: int | None) -> asyncio.subprocess.Process:
    env = {**os.environ, "PUSHRULES_COMPONENT_SECRET": PUSH_SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pushrules.cli", "serve", "--config", str(path),
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    STARTED.append(proc)
    return proc


async def kill_leftovers() -> None:
    """A failed assertion must not leave a serve running."""
    while STARTED:
        proc = STARTED.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        for start in range(0, len(data), 8192):
            proc.stdin.write(data[start:start + 8192])
            await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # killed while we were writing: the rest of the input is never read


async def kill_when(proc: asyncio.subprocess.Process, app: AppServer, publishes: int,
                    delay: float) -> None:
    while len(app.received) < publishes and proc.returncode is None:
        await asyncio.sleep(0.005)
    await asyncio.sleep(delay)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.communicate()


def bodies(app: AppServer) -> list[str]:
    return [r.publish.summary["last-message-body"] for r in app.received]


async def one_run(rnd: random.Random, tmp_path: Path, port: int, store) -> dict:
    app = await AppServer(APP, port).start()
    try:
        bound = rnd.choice([50, 200, 10_000])
        path = config(tmp_path, port, store.url, max_outbox=bound)
        first = await serve(path, asyncio.subprocess.PIPE)
        feeding = asyncio.ensure_future(feed(first, trace()))
        await kill_when(first, app, rnd.randrange(0, 400), rnd.uniform(0, 0.05))
        await feeding
        kills = 1
        at_kill = store.decided()
        # Backpressure: reading waited while more than `bound` were pending (one more event,
        # one push here, may be decided by the line that was waiting).
        outbox_at_kill = store.outbox_size() if at_kill else 0
        assert outbox_at_kill <= bound + 1, (outbox_at_kill, bound)
        received_at_kill = len(app.received)
        if rnd.random() < 0.5:  # killed again while resending
            second = await serve(path, asyncio.subprocess.DEVNULL)
            await kill_when(second, app, received_at_kill + rnd.randrange(0, 100),
                            rnd.uniform(0, 0.05))
            kills += 1
        last = await serve(path, asyncio.subprocess.DEVNULL)  # no input: the outbox only
        out, err = await asyncio.wait_for(last.communicate(), 120)
        assert last.returncode == 0, err.decode()[-3000:]
        assert "Traceback" not in err.decode()
        outcomes = [json.loads(line) for line in out.decode().splitlines()]
        return {"kills": kills, "bound": bound, "outbox_at_kill": outbox_at_kill,
                "decided": store.decided(), "decided_at_kill": at_kill,
                "received": bodies(app), "outcomes": outcomes, "outbox": store.outbox_size()}
    finally:
        await kill_leftovers()
        await app.stop()


@pytest.fixture(scope="module")
def redis_url():
    from harness import in_ci

    from pushrules.runtime.store.local_redis import LocalRedis, RedisServerMissing

    try:
        server = LocalRedis()
    except RedisServerMissing as exc:
        if in_ci():
            pytest.fail(f"{exc}: the Redis tests never skip in CI")
        pytest.skip(str(exc))
    server.start()
    yield server.url
    server.close()


@pytest.mark.parametrize(("kind", "runs"), [("sqlite", RUNS), ("redis", RUNS // 2)])
def test_sigkill_and_restart_lose_no_decided_push(prosody, tmp_path, request, kind, runs):
    rnd = random.Random(int(os.environ.get("PUSHRULES_CRASH_SEED", "20261201")))
    totals: Counter[str] = Counter()
    bounds: list[str] = []
    for run in range(runs):
        where = tmp_path / f"run{run}"
        where.mkdir()
        store = (SqliteUnderTest(where) if kind == "sqlite"
                 else RedisUnderTest(request.getfixturevalue("redis_url"), f"crash{run}"))
        result = asyncio.run(one_run(rnd, where, prosody.port, store))
        received = Counter(result["received"])
        decided_ids = result["decided"]
        # Nothing decided is lost: what was decided before the kill is among what arrived.
        assert result["decided_at_kill"] <= decided_ids
        missing = decided_ids - set(received)
        assert not missing, f"run {run}: {len(missing)} decided pushes never arrived"
        assert set(received) <= decided_ids  # nothing arrived that was not decided
        assert result["outbox"] == 0  # everything settled in the end
        duplicates = sum(n - 1 for n in received.values())
        # At most one publish in flight per registration at each kill.
        assert duplicates <= result["kills"] * len(USERS), f"run {run}: {duplicates}"
        # Every push sent again says so: its outcome counts the earlier run's attempt.
        repeated = {o["stanzas"][0]: o["attempts"] for o in result["outcomes"]}
        for ident, count in received.items():
            if count > 1 and ident in repeated:
                assert repeated[ident] >= count, (ident, count, repeated[ident])
        totals.update(runs=1, kills=result["kills"], decided=len(decided_ids),
                      delivered=len(received), duplicates=duplicates)
        bounds.append(f"{result['outbox_at_kill']}/{result['bound']}")
    assert totals["decided"] > runs * 100  # the kills did not all come before any decision
    line = (f"crash test ({kind}): {totals['runs']} runs, {totals['kills']} SIGKILLs, "
            f"{totals['decided']} pushes decided (all before the first kill of their run), "
            f"{totals['delivered']} delivered, {totals['duplicates']} duplicates; "
            f"outbox at the first kill / max_outbox: {', '.join(bounds)}")
    print(line)
    with SUMMARY.open("a") as summary:
        summary.write(line + "\n")
