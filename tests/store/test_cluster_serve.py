"""Two real `pushrules serve` processes (two XMPP server nodes, each its own component of a real
Prosody) on one six-node Redis Cluster, fed their lines on stdin at the same time, racing on the
same users (users on every master): each node binds its own sessions and enables its own
registration for every user, then both read the same offline and archived messages (as two nodes
of a farm both handling a user's traffic). A recording app server answers every publish.

No lost update: every user's final sessions and registrations are those of a sequential run of
the same lines (which is order-independent here: checked). No duplicate push: every stanza
reached each registration at most once. No decided push lost: every push the sequential run
decides reached the app server, and every outbox entry was settled."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import meta_key

from pushrules.benchmarks.servers import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer, Prosody
from pushrules.model.config import Config
from pushrules.runtime.engine import Engine
from pushrules.runtime.store import open_store
from pushrules.runtime.trace import parse_event

APP = APP_JIDS[0]
NODE_JIDS = (PUSH_JID, "pushrules2.localhost")
PREFIX = "sv"
MESSAGES = 40  # per user: offline and archived, the same ids on both nodes
SESSIONS = 6  # per user and node: bound, the even ones destroyed again


class TwoComponentProsody(Prosody):
    """The test Prosody with a second pushrules component: one per serve node."""

    def config(self) -> str:
        return (super().config() + f'Component "{NODE_JIDS[1]}"\n'
                f'    component_secret = "{PUSH_SECRET}"\n')


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("prosody") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("prosody is not installed (CI must install it)")
        pytest.skip("prosody is not installed")
    server = TwoComponentProsody(tmp_path_factory.mktemp("prosody"))
    server.start()
    yield server
    server.stop()


def users_on_every_master(cluster: Any, per_master: int) -> list[str]:
    by_port: dict[int, list[str]] = {port: [] for port in cluster.masters()}
    for i in range(1000):
        user = f"race{i}@localhost"
        port = cluster.master_of(meta_key(PREFIX, user)).port
        if len(by_port[port]) < per_master:
            by_port[port].append(user)
        if all(len(users) == per_master for users in by_port.values()):
            return [user for users in by_port.values() for user in users]
    raise AssertionError("no users found on every master")


def stanza(mid: str, user: str) -> str:
    return (f"<message xmlns='jabber:client' id='{mid}' from='eve@localhost/x' to='{user}' "
            f"type='chat'><body>{mid}</body></message>")


def setup_lines(node: int, users: list[str]) -> list[dict[str, Any]]:
    """Each user: this node's registration, enabled from its session, which then ends
    (orphaned: every message is pushed to it); this node's other sessions come and go."""
    lines: list[dict[str, Any]] = []
    for user in users:
        session = f"{user}/enable{node}"
        lines += [{"event": "session-bind", "session": session},
                  {"event": "push-enable", "session": session, "jid": APP,
                   "node": f"{user.split('@')[0]}-n{node}", "secret": f"s{node}"},
                  {"event": "session-destroyed", "session": session}]
    return lines


def race_lines(node: int, users: list[str]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for i in range(MESSAGES):
        for user in users:
            if i < SESSIONS:
                lines.append({"event": "session-bind", "session": f"{user}/n{node}-{i}"})
            kind = "message/offline/handle" if i % 3 else "archive-message-added"
            field = "user" if i % 3 else "for_user"
            lines.append({"event": kind, field: user, "stanza": stanza(f"m{i}", user)})
            if i < SESSIONS and i % 2 == 0:
                lines.append({"event": "session-destroyed", "session": f"{user}/n{node}-{i}"})
    return lines


def config_file(where: Path, node: int, port: int, url: str) -> Path:
    path = where / f"serve{node}.toml"
    path.write_text("\n".join([
        "[component]", f'jid = "{NODE_JIDS[node]}"', 'host = "127.0.0.1"', f"port = {port}",
        "[rules]", "include_body = true",  # the body names the stanza: the app server reads it
        "[dispatch]", "iq_timeout = 10", "backoff_initial = 0.05", "backoff_max = 0.2",
        "shutdown_grace = 60",
        "[store]", f'url = "{url}&node=node{node}"', "",
    ]))
    return path


def sequential(order: tuple[int, ...], users: list[str]) -> tuple[Engine, Counter[Any]]:
    """The plain engine over the nodes' lines one node after the other; every push answered
    with a result at once, as the app server does."""
    engine = Engine(Config())
    pushes: Counter[Any] = Counter()
    batches = [setup_lines(n, users) for n in order] + [race_lines(n, users) for n in order]
    for batch in batches:
        for line in batch:
            for push in engine.handle(parse_event(json.dumps(line))):
                pushes[(push.node, *push.stanzas)] += 1
                engine.handle(parse_event(json.dumps(
                    {"event": "push-result", "user": push.user, "jid": push.jid,
                     "node": push.node, "ok": True})))
    return engine, pushes


def final_state(rows: dict[Any, Any], sessions: dict[str, Any]) -> dict[str, Any]:
    return {"registrations": {reg: (row["state"], row["session"], row["errors"],
                                    sorted(row["pushed"])) for reg, row in rows.items()},
            "sessions": {sid: row["state"] for sid, row in sessions.items()}}


def engine_final(engine: Engine, user: str) -> dict[str, Any]:
    from pushrules.runtime.store.base import registration_row, session_row

    rows = {key: registration_row(rec) for key, rec in engine.users.get(user, {}).items()}
    sessions = {sid: session_row(rec) for sid, rec in engine.sessions.items()
                if rec.user == user}
    return final_state(rows, sessions)


async def serve(config: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PUSHRULES_COMPONENT_SECRET": PUSH_SECRET}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pushrules.cli", "serve", "--config", str(config),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)


async def feed(proc: asyncio.subprocess.Process, lines: list[dict[str, Any]]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(json.dumps(line) + "\n" for line in lines).encode())
    await proc.stdin.drain()


async def wait_registered(url: str, users: list[str]) -> None:
    """Until every user has both nodes' registrations, orphaned (the setup lines applied)."""
    store = open_store(url)
    try:
        for _ in range(600):
            snaps = [store.load(user) for user in users]
            if all(len(s.registrations) == 2 and all(r["state"] == "orphaned"
                                                     for r in s.registrations.values())
                   for s in snaps if s is not None) and None not in snaps:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the setup lines were not applied within 30 s")
    finally:
        store.close()


async def race(prosody: Prosody, tmp_path: Path, url: str, users: list[str]) -> dict[str, Any]:
    app = await AppServer(APP, prosody.port).start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs = [await serve(config_file(tmp_path, n, prosody.port, url)) for n in (0, 1)]
        await asyncio.gather(*(feed(p, setup_lines(n, users)) for n, p in enumerate(procs)))
        await wait_registered(url, users)
        # Both nodes' race lines at once: the same users, the same messages.
        await asyncio.gather(*(feed(p, race_lines(n, users)) for n, p in enumerate(procs)))
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), 300)
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()[-3000:]
            assert "Traceback" not in err.decode()
        outcomes = [json.loads(line) for out, _ in results for line in out.decode().splitlines()]
        return {"received": [(r.publish.node, r.publish.summary["last-message-body"], r.sender)
                             for r in app.received], "outcomes": outcomes}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await app.stop()


def test_two_serve_processes_racing_on_users_of_every_master(redis_cluster, prosody, tmp_path):
    url = f"{redis_cluster.url}?prefix={PREFIX}"
    users = users_on_every_master(redis_cluster, 2)
    reference, expected = sequential((0, 1), users)
    other_order, other_pushes = sequential((1, 0), users)
    assert other_pushes == expected  # the outcome does not depend on the nodes' order
    for user in users:
        assert engine_final(other_order, user) == engine_final(reference, user)

    result = asyncio.run(race(prosody, tmp_path, url, users))

    received = Counter((node, body) for node, body, _ in result["received"])
    senders = Counter(sender.split("/")[0] for *_, sender in result["received"])
    print(f"two serve nodes: {len(result['received'])} publishes received "
          f"({dict(senders)}), {len(expected)} expected")
    assert max(received.values()) == 1, "a stanza reached a registration twice"
    assert received == expected, (received - expected, expected - received)
    # Both nodes did push (each a share of the decisions), to the same registrations: they
    # raced on the same users. Every push decided was answered.
    assert set(senders) == set(NODE_JIDS)
    by_registration: dict[str, set[str]] = {}
    for node, _, sender in result["received"]:
        by_registration.setdefault(node, set()).add(sender.split("/")[0])
    assert any(len(nodes) == 2 for nodes in by_registration.values()), by_registration
    assert len(result["outcomes"]) == len(result["received"])
    store = open_store(url)
    for user in users:
        snap = store.load(user)
        assert snap is not None
        assert final_state(snap.registrations, snap.sessions) == engine_final(reference, user)
    assert [p for p in store.outbox_pending() if p.user in users] == []
    store.close()
