"""`pushrules serve` as a process: events on stdin or a Unix socket, pushes over a real Prosody,
bad lines rejected and named, SIGTERM finishing the pushes already decided."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from harness import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer, enable_events, offline_event

from pushrules.runtime.trace import MAX_LINE_BYTES

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]
SECRET = "sidecar-secret-77"


def write_config(tmp_path: Path, prosody, **extra: str) -> Path:
    lines = [
        "[component]", f'jid = "{PUSH_JID}"', 'host = "127.0.0.1"', f"port = {prosody.port}",
        "[rules]", "include_sender = true", "max_errors = 2",
        "[dispatch]", "iq_timeout = 5", "backoff_initial = 0.05", "backoff_max = 0.2",
        "shutdown_grace = 10",
    ]
    # [dispatch] comes last: a key given again replaces its default above.
    lines = [line for line in lines if line.split(" = ")[0] not in extra]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    path = tmp_path / "serve.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_serve(config: Path, *args: str, stdin=asyncio.subprocess.PIPE):
    env = {**os.environ, "PUSHRULES_COMPONENT_SECRET": PUSH_SECRET}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pushrules.cli", "serve", "--config", str(config),
        "--log-level", "debug", *args, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)


def lines(*events: dict | str) -> bytes:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events).encode()


def test_stdin_events_are_pushed_and_bad_lines_rejected(prosody, tmp_path):
    user, node = "ivy@localhost", "node-serve"

    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            proc = await start_serve(write_config(tmp_path, prosody))
            out, err = await asyncio.wait_for(proc.communicate(lines(
                *enable_events(user, node, secret=SECRET),           # lines 1-2
                {"event": "push-enable", "session": f"{user}/phone", "jid": APP},  # 3: no node
                "{not json",                                          # 4
                {"event": "smacks-hibernation-end", "session": f"{user}/phone"},  # 5: impossible
                offline_event(user, "p1", "first"),                   # 6
                offline_event(user, "p2", "second"),                  # 7
            )), 60)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    code, out, err, received = asyncio.run(main())
    assert code == 0, err
    assert "error: stdin line 3, field 'node': missing (required by push-enable) " \
           "(line rejected)" in err
    assert "error: stdin line 4: not valid JSON" in err
    assert "warning: stdin line 5: skipped impossible event" in err
    assert "4 events applied, 2 lines rejected" in err
    outcomes = [json.loads(line) for line in out.splitlines()]
    assert [(o["stanzas"], o["status"], o["rule"]) for o in outcomes] == [
        (["p1"], "delivered", "c/offline"), (["p2"], "delivered", "c/offline")]
    assert [r.publish.node for r in received] == [node, node]
    assert received[0].publish.options == {"secret": SECRET}
    assert received[0].publish.summary["last-message-sender"] == "alice@localhost/pc"
    assert "SEND:" in err  # debug logging of stanzas was on ...
    assert SECRET not in err and SECRET not in out  # ... and never showed the secret
    assert PUSH_SECRET not in err


def test_socket_input_and_sigterm_finish_decided_pushes(prosody, tmp_path):
    user, node = "jack@localhost", "node-slow"
    sock = tmp_path / "events.sock"

    async def main():
        app = await AppServer(APP, prosody.port).start()
        app.delay[node] = 1.0  # still unanswered when SIGTERM arrives
        try:
            proc = await start_serve(write_config(tmp_path, prosody), "--socket", str(sock),
                                     stdin=asyncio.subprocess.DEVNULL)
            for _ in range(200):
                if sock.exists():
                    break
                await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(lines(*enable_events(user, node, secret=SECRET),
                               {"event": "session-bind"},
                               offline_event(user, "q1"), offline_event(user, "q2")))
            await writer.drain()
            writer.close()
            await app.wait_for(1)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    code, out, err, received = asyncio.run(main())
    assert code == 0, err
    assert "error: connection 1 line 3, field 'session': missing" in err
    outcomes = [json.loads(line) for line in out.splitlines()]
    assert [(o["stanzas"], o["status"]) for o in outcomes] == [
        (["q1"], "delivered"), (["q2"], "delivered")]
    assert len(received) == 2
    assert not sock.exists()
    assert SECRET not in err


def test_bad_settings_are_named(tmp_path):
    import subprocess

    path = tmp_path / "bad.toml"
    path.write_text('[component]\njid = "x.localhost"\nsecert = "oops"\n')
    proc = subprocess.run([sys.executable, "-m", "pushrules.cli", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "[component] unknown key 'secert'" in proc.stderr
    assert "oops" not in proc.stderr


def test_state_in_a_sqlite_store_survives_a_restart(prosody, tmp_path):
    user, node = "kim@localhost", "node-stored"
    config = write_config(tmp_path, prosody)
    store = f"sqlite:///{tmp_path / 'state.db'}"

    async def serve(*events: dict) -> tuple[int, str, str]:
        proc = await start_serve(config, "--store", store)
        out, err = await asyncio.wait_for(proc.communicate(lines(*events)), 60)
        return proc.returncode, out.decode(), err.decode()

    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            first = await serve(*enable_events(user, node, secret=SECRET),
                                offline_event(user, "r1"))
            # a new process: the registration, its secret and the pushed ids come from the store
            second = await serve(offline_event(user, "r1"), offline_event(user, "r2"))
            return first, second, app.received
        finally:
            await app.stop()

    first, second, received = asyncio.run(main())
    assert first[0] == 0 and second[0] == 0, first[2] + second[2]
    assert [json.loads(x)["stanzas"] for x in first[1].splitlines()] == [["r1"]]
    assert [json.loads(x)["stanzas"] for x in second[1].splitlines()] == [["r2"]]  # r1: dedup
    assert [r.publish.options for r in received] == [{"secret": SECRET}] * 2


def test_unreachable_server_is_an_error_and_pushes_are_reported_undelivered(tmp_path):
    from harness import free_port

    path = tmp_path / "serve.toml"
    path.write_text(f'[component]\njid = "{PUSH_JID}"\nport = {free_port()}\n'
                    "[dispatch]\nconnect_timeout = 0.3\nshutdown_grace = 1.5\n")
    user, node = "liv@localhost", "node-nowhere"

    async def main():
        proc = await start_serve(path)
        out, err = await asyncio.wait_for(proc.communicate(lines(
            *enable_events(user, node, secret=SECRET), offline_event(user, "u1"))), 30)
        return proc.returncode, out.decode(), err.decode()

    code, out, err = asyncio.run(main())
    assert code == 1, err
    assert "error: not connected to 127.0.0.1" in err and "within connect_timeout (0.3s)" in err
    assert [(json.loads(x)["stanzas"], json.loads(x)["status"]) for x in out.splitlines()] == [
        (["u1"], "undelivered")]
    assert "1 undelivered" in err and "Task was destroyed" not in err
    assert SECRET not in err


POISON = [
    b"[" * 1000 + b"]" * 1000,                                        # deep nesting
    b'{"event": "session-bind", "session": ' + b"9" * 4301 + b"}",    # a huge integer
    b'{"event": "push-enable", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}',  # over the limit
    b'{"event": "session-bind", "session": "caf\xe9@localhost/x"}',   # not UTF-8
    b"\x00\x01\x02",
    b"[1, 2, 3]",
    b'{"event": "no-such-event"}',
    b'{"event": "session-bind", "session": {"nested": [' + b"{}," * 5000 + b"{}]}}",
]


def poisoned(user: str, node: str, mids: list[str]) -> tuple[bytes, int]:
    """Good lines (enable, then one offline message per id) with every poison line in between;
    and how many good lines there are."""
    good = [json.dumps(e).encode() for e in enable_events(user, node, secret=SECRET)]
    good += [json.dumps(offline_event(user, mid)).encode() for mid in mids]
    out: list[bytes] = []
    for i, line in enumerate(good):
        out += [line, POISON[i % len(POISON)]]
    out += POISON
    return b"\n".join(out) + b"\n", len(good)


def assert_poison_rejected(err: str, where: str, poison_lines: int) -> None:
    assert "Traceback" not in err and "RecursionError" not in err, err[-3000:]
    assert f"{poison_lines} lines rejected" in err
    deep = "not valid JSON: nested deeper than 32 levels (line rejected)"
    assert f"error: {where} line 2: {deep}" in err
    assert "longer than" in err
    assert "not valid UTF-8 at byte" in err


def test_poison_lines_on_stdin_leave_every_good_line_applied(prosody, tmp_path):
    user, node = "pia@localhost", "node-poison"
    mids = [f"g{i}" for i in range(8)]
    data, good = poisoned(user, node, mids)

    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            proc = await start_serve(write_config(tmp_path, prosody))
            out, err = await asyncio.wait_for(proc.communicate(data), 90)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    code, out, err, received = asyncio.run(main())
    assert code == 0, err[-3000:]
    assert_poison_rejected(err, "stdin", good + len(POISON))
    assert f"{good} events applied" in err
    assert [json.loads(x)["stanzas"] for x in out.splitlines()] == [[m] for m in mids]
    assert [r.publish.node for r in received] == [node] * len(mids)


def test_poison_lines_on_the_socket_leave_every_good_line_applied(prosody, tmp_path):
    user, node = "pol@localhost", "node-poison-sock"
    mids = [f"s{i}" for i in range(8)]
    data, good = poisoned(user, node, mids)
    sock = tmp_path / "events.sock"

    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            proc = await start_serve(write_config(tmp_path, prosody), "--socket", str(sock),
                                     stdin=asyncio.subprocess.DEVNULL)
            await wait_for_socket(sock)
            # Two connections: the second one goes on after the first one's poison.
            for part in (data, lines(offline_event(user, "after"))):
                _, writer = await asyncio.open_unix_connection(str(sock))
                writer.write(part)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            await app.wait_for(len(mids) + 1, 60)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    code, out, err, received = asyncio.run(main())
    assert code == 0, err[-3000:]
    assert_poison_rejected(err, "connection 1", good + len(POISON))
    assert [json.loads(x)["stanzas"] for x in out.splitlines()] == [[m] for m in mids] + [
        ["after"]]
    assert len(received) == len(mids) + 1


async def wait_for_socket(path: Path, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if path.exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")
