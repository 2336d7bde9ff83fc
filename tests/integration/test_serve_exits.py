"""`pushrules serve` exits: SIGTERM whatever stdin is, failures that stop it with a named cause
and a non-zero status, and a socket that cannot be stolen or reached by others."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from harness import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer, enable_events, offline_event
from test_serve import SECRET, lines, start_serve, wait_for_socket, write_config

from pushrules.runtime.xmpp.unixsocket import SocketPathError, open_listener

pytestmark = pytest.mark.integration

APP = APP_JIDS[0]


def serve_process(config: Path, *args: str, secret: str = PUSH_SECRET,
                  stdin: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    env = {**os.environ, "PUSHRULES_COMPONENT_SECRET": secret}
    return subprocess.Popen(
        [sys.executable, "-m", "pushrules.cli", "serve", "--config", str(config), *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_until_catching(pid: int, signum: int, timeout: float = 30.0) -> None:
    """Until the process catches the signal (its handler is installed: /proc's SigCgt)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1],
                     16)
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never caught signal {signum}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_exits_0_while_stdin_is_an_open_idle_pipe(prosody, tmp_path, signum):
    proc = serve_process(write_config(tmp_path, prosody))
    try:
        assert proc.stdin is not None
        proc.stdin.write(lines(*enable_events("sig@localhost", "node-sig")).decode())
        proc.stdin.flush()  # ...and the pipe stays open, the reader waiting on it
        wait_until_catching(proc.pid, signal.SIGTERM)
        time.sleep(2.0)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)  # shutdown_grace is 10 in the config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "2 events applied" in err
    assert "Traceback" not in err and "Fatal Python error" not in err


def test_a_wrong_component_secret_is_an_error_naming_the_cause(prosody, tmp_path):
    proc = serve_process(write_config(tmp_path, prosody), secret="not-the-secret")
    out, err = proc.communicate(lines(*enable_events("sec@localhost", "node-sec"),
                                      offline_event("sec@localhost", "x1")).decode(),
                                timeout=60)
    assert proc.returncode == 1, err
    assert f"refused component {PUSH_JID}: not-authorized" in err
    assert "wrong component secret?" in err
    assert "not-the-secret" not in err
    assert [json.loads(x)["status"] for x in out.splitlines()] == ["undelivered"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_text("not a database\n" * 100), "not a readable SQLite database"),
    (lambda p: p.mkdir(), "cannot open"),
])
def test_a_store_that_cannot_be_opened_is_an_error(prosody, tmp_path, make, message):
    path = tmp_path / "state.db"
    make(path)
    proc = serve_process(write_config(tmp_path, prosody), "--store", f"sqlite:///{path}",
                         stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert str(path) in err and message in err
    assert "Traceback" not in err


def test_an_unreachable_redis_store_is_an_error(prosody, tmp_path):
    from harness import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = serve_process(write_config(tmp_path, prosody), "--store", url,
                         stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"store {url}: cannot be used" in err and "unavailable" in err
    assert "Traceback" not in err


# --- the socket -----------------------------------------------------------------------------

def send_and_wait(prosody, sock: Path, user: str, node: str, mid: str) -> list:
    """Send enable + an offline message on the socket; wait until its push arrived (proof that
    the lines were read and applied)."""
    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            _, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(lines(*enable_events(user, node), offline_event(user, mid)))
            await writer.drain()
            received = await app.wait_for(1, 30)
            writer.close()
            return [r.publish.node for r in received]
        finally:
            await app.stop()

    return asyncio.run(main())


def test_the_socket_is_0600_and_refused_when_taken_or_not_a_socket(prosody, tmp_path):
    sock = tmp_path / "events.sock"
    config = write_config(tmp_path, prosody)
    old_umask = os.umask(0)  # the socket's mode must not depend on the umask
    try:
        first = serve_process(config, "--socket", str(sock), stdin=subprocess.DEVNULL)
    finally:
        os.umask(old_umask)
    try:
        asyncio.run(wait_for_socket(sock))
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        inode = os.lstat(sock).st_ino
        second = serve_process(config, "--socket", str(sock), stdin=subprocess.DEVNULL)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert f"socket {sock}: another process is listening on it" in err
        assert os.lstat(sock).st_ino == inode  # not stolen: the first one still owns it
        assert send_and_wait(prosody, sock, "own@localhost", "node-own", "o1") == ["node-own"]
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert "3 events applied" in err
    assert not sock.exists()

    plain = tmp_path / "a-file"
    plain.write_text("keep me\n")
    proc = serve_process(config, "--socket", str(plain), stdin=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "exists and is not a socket" in err
    assert plain.read_text() == "keep me\n"


NOBODY = 65534


def connect_as(uid: int, sock: Path, data: bytes) -> subprocess.CompletedProcess[str]:
    """Another local user's process connecting to the socket (needs root to switch uid)."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n"
            "    print(type(e).__name__); sys.exit(3)\n"
            "try:\n    s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR); s.recv(1)\n"
            "except OSError as e:\n    print(type(e).__name__); sys.exit(4)\n")
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # not under /root
    return subprocess.run([python, "-c", code, str(sock)], input=data.decode(),
                          capture_output=True, text=True, timeout=30,
                          preexec_fn=lambda: os.setuid(uid))  # noqa: PLW1509


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_another_user_cannot_reach_the_socket_nor_pass_allowed_uids(prosody, tmp_path):
    # A directory everyone may enter (pytest's tmp dirs are 0700): only the socket's own mode
    # and the uid check stand between another user and the sidecar.
    shared = Path(tempfile.mkdtemp(prefix="pushrules-sock-"))
    os.chmod(shared, 0o755)
    sock = shared / "events.sock"
    proc = serve_process(write_config(tmp_path, prosody), "--socket", str(sock),
                         "--allowed-uid", "4242", stdin=subprocess.DEVNULL)
    try:
        asyncio.run(wait_for_socket(sock))
        denied = connect_as(NOBODY, sock, lines(*enable_events("evil@localhost", "n-evil")))
        assert denied.returncode == 3 and "PermissionError" in denied.stdout  # 0600
        os.chmod(sock, 0o666)  # as if the mode were lax: SO_PEERCRED still turns it away
        turned = connect_as(NOBODY, sock, lines(*enable_events("evil@localhost", "n-evil")))
        assert turned.returncode in (0, 4), turned.stderr  # 4: closed on it while sending
        # our own uid is always allowed
        assert send_and_wait(prosody, sock, "uid@localhost", "node-uid", "u1") == ["node-uid"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    shutil.rmtree(shared, ignore_errors=True)
    assert proc.returncode == 0, err
    assert f"uid {NOBODY} is not allowed to send events" in err
    assert "3 events applied" in err  # none of the other user's


def test_a_stale_socket_is_replaced_and_another_socket_is_never_removed(tmp_path):
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # nobody answers on it any more
    listener = open_listener(path)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    with pytest.raises(SocketPathError, match="another process is listening"):
        open_listener(path)
    # Someone replaced the path while we ran: closing must not remove theirs.
    os.unlink(path)
    theirs = socket.socket(socket.AF_UNIX)
    theirs.bind(str(path))
    listener.close()
    assert path.exists()
    theirs.close()


def test_a_group_makes_it_0660_and_an_unknown_group_is_named(tmp_path):
    import grp

    gid = os.getgid()
    listener = open_listener(tmp_path / "g.sock", group=grp.getgrgid(gid).gr_name)
    st = os.lstat(tmp_path / "g.sock")
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
    listener.close()
    assert not (tmp_path / "g.sock").exists()
    with pytest.raises(SocketPathError, match="no such group 'no-such-group-xyz'"):
        open_listener(tmp_path / "h.sock", group="no-such-group-xyz")


def test_a_push_answered_during_shutdown_is_never_undelivered(prosody, tmp_path):
    """Answers that arrive while SIGTERM's grace runs are finished as answered; what has no
    answer when the grace ends is undelivered with its real attempt count."""
    user = "end@localhost"
    nodes = [f"node-end{i}" for i in range(5)]  # max_devices

    async def main():
        app = await AppServer(APP, prosody.port).start()
        for i, node in enumerate(nodes):
            app.delay[node] = 0.6 * i  # the last ones after the 2 s grace
        try:
            config = write_config(tmp_path, prosody, shutdown_grace="2")
            proc = await start_serve(config)
            assert proc.stdin is not None
            events = []
            for node in nodes:
                events += enable_events(user, node, resource=node, secret=SECRET)
            events += [{"event": "session-destroyed", "session": f"{user}/{n}"} for n in nodes]
            events.append(offline_event(user, "z1"))
            proc.stdin.write(lines(*events))
            await proc.stdin.drain()
            await app.wait_for(len(nodes))
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode, out.decode(), err.decode(), app
        finally:
            await app.stop()

    code, out, err, app = asyncio.run(main())
    assert code == 0, err
    outcomes = {json.loads(x)["node"]: json.loads(x) for x in out.splitlines()}
    assert set(outcomes) == set(nodes)
    for outcome in outcomes.values():
        assert outcome["attempts"] == 1, outcome
        if outcome["status"] == "undelivered":
            assert "not answered before shutdown" in outcome["answer"]
    delivered = {n for n, o in outcomes.items() if o["status"] == "delivered"}
    assert {"node-end0", "node-end1"} <= delivered and "node-end4" not in delivered


def test_a_second_signal_ends_the_grace(prosody, tmp_path):
    async def main():
        app = await AppServer(APP, prosody.port).start()
        app.delay["node-hurry"] = 30  # never answered within the test
        try:
            proc = await start_serve(write_config(tmp_path, prosody, shutdown_grace="60"))
            assert proc.stdin is not None
            proc.stdin.write(lines(*enable_events("hur@localhost", "node-hurry"),
                                   {"event": "session-destroyed", "session": "hur@localhost/phone"},
                                   offline_event("hur@localhost", "h1")))
            await proc.stdin.drain()
            await app.wait_for(1)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.returncode is None  # the first one waits for the answer
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 20)  # well before 60 s
            return proc.returncode, out.decode(), err.decode()
        finally:
            await app.stop()

    code, out, err = asyncio.run(main())
    assert code == 0, err
    assert [(json.loads(x)["status"], json.loads(x)["attempts"]) for x in out.splitlines()] == [
        ("undelivered", 1)]


def test_a_redis_outage_mid_run_rejects_lines_by_name_and_loses_nothing_decided(prosody,
                                                                                tmp_path):
    """Redis stops while serve runs: lines are rejected naming the store (never a traceback),
    the pushes decided before still go out; Redis back: later lines are applied again."""
    from harness import in_ci

    from pushrules.runtime.store.local_redis import LocalRedis, RedisServerMissing

    try:
        server = LocalRedis(persistent=True)
    except RedisServerMissing as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    server.start()
    user, node = "out@localhost", "node-outage"

    async def main():
        app = await AppServer(APP, prosody.port).start()
        try:
            proc = await start_serve(write_config(tmp_path, prosody), "--store",
                                     f"{server.url}?prefix=outage",
                                     "--store-retry-seconds", "1.5")
            assert proc.stdin is not None
            proc.stdin.write(lines(*enable_events(user, node, secret=SECRET),
                                   offline_event(user, "before")))
            await proc.stdin.drain()
            await app.wait_for(1, 30)
            server.stop()
            proc.stdin.write(lines(offline_event(user, "during")))
            await proc.stdin.drain()
            await asyncio.sleep(5)  # the line's store retries (1.5 s) run out
            server.start()
            proc.stdin.write(lines(offline_event(user, "after")))
            await proc.stdin.drain()
            await app.wait_for(2, 30)
            proc.stdin.close()
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    try:
        code, out, err, received = asyncio.run(main())
    finally:
        server.close()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "error: stdin line 4: message/offline/handle not applied: redis store" in err
    assert [json.loads(x)["stanzas"] for x in out.splitlines()] == [["before"], ["after"]]
    assert [r.publish.summary.get("message-count") for r in received] == ["1", "1"]
