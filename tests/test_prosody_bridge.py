"""The sidecar's side of mod_pushrules, driven over a real Unix socket by a peer that speaks the
module's wire (the real module runs in tests/integration/test_prosody_adapter.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from replaykit import local_redis
from slixmpp import Iq
from slixmpp.xmlstream import ET

from pushrules.cli import main
from pushrules.model.records import Push
from pushrules.runtime.prosody.bridge import read_answer
from pushrules.runtime.prosody.shadow import ShadowLog
from pushrules.runtime.xmpp.dispatcher import REPORT_LANE
from pushrules.runtime.xmpp.publish import parse_publish
from pushrules.runtime.xmpp.sidecar import MAX_LINE_BYTES, Sidecar, SidecarSettings
from pushrules.serve_cmd import build_settings, read_toml

HOST = "example.org"
BOB = f"bob@{HOST}"
PHONE = f"{BOB}/phone"
APP = "push.example.net"


def msg(mid: str) -> str:
    return (f"<message xmlns='jabber:client' id='{mid}' from='alice@{HOST}/pc' to='{BOB}' "
            "type='chat'><body>hi</body></message>")


class FakeModule:
    """Speaks mod_pushrules' wire: hello, numbered events, answers to publishes."""

    def __init__(self, path: Path, boot: str = "boot-1", shadow: bool = False) -> None:
        self.path, self.boot, self.shadow = path, boot, shadow
        self.seq = 0
        self.lines: asyncio.Queue[dict] = asyncio.Queue()

    async def connect(self) -> FakeModule:
        self.reader, self.writer = await asyncio.open_unix_connection(str(self.path))
        self.send({"kind": "hello", "host": HOST, "boot": self.boot, "shadow": self.shadow,
                   "shadow_window": 0.2, "version": 1})
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        while line := await self.reader.readline():
            await self.lines.put(json.loads(line))

    def send(self, obj: dict | str) -> None:
        self.writer.write(((obj if isinstance(obj, str) else json.dumps(obj)) + "\n").encode())

    def event(self, reply: bool = False, seq: int | None = None, **data: object) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.send({"kind": "event", "seq": seq, "reply": reply, "event": data})
        return seq

    async def expect(self, kind: str, timeout: float = 5.0) -> dict:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line["kind"] == kind:
                return line

    async def expect_any(self, kinds: set[str], timeout: float = 5.0) -> dict:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line["kind"] in kinds:
                return line

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()


def sidecar(path: Path, **options: object) -> tuple[Sidecar, io.StringIO, io.StringIO]:
    settings = SidecarSettings(component_jid="", component_secret="-", prosody=str(path),
                               connect_timeout=5, shutdown_grace=2, iq_timeout=2,
                               **options)  # type: ignore[arg-type]
    out, err = io.StringIO(), io.StringIO()
    return Sidecar(settings, out, err), out, err


def outcomes(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def registered(module: FakeModule) -> None:
    module.event(event="session-bind", session=PHONE)
    module.event(reply=True, event="push-enable", session=PHONE, jid=APP, node="n1",
                 secret="s3cret")


async def run(body, path: Path, **options: object) -> tuple[Sidecar, io.StringIO, io.StringIO]:
    car, out, err = sidecar(path, **options)
    task = asyncio.get_running_loop().create_task(car.run())
    try:
        await asyncio.wait_for(body(car), 20)
    finally:
        car.stop()
        await asyncio.wait_for(task, 10)
    return car, out, err


def test_events_acked_enable_applied_publish_from_the_host_and_answer(tmp_path):
    path = tmp_path / "p.sock"

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        registered(module)
        applied = await module.expect("applied")
        assert applied == {"kind": "applied", "seq": 2, "ok": True}
        module.event(event="smacks-hibernation-start", session=PHONE, queue=[])
        module.event(event="stanza-queued", session=PHONE, stanza=msg("m1"))
        publish = await module.expect("publish")
        iq = Iq(xml=ET.fromstring(publish["iq"]))
        assert iq["from"] == HOST and iq["to"] == APP  # the module sends it from the host
        got = parse_publish(iq)
        assert (got.node, got.options) == ("n1", {"secret": "s3cret"})
        assert (await module.expect("ack"))["upto"] == 4
        module.send({"kind": "answer", "id": publish["id"], "ok": False, "error_type": "cancel",
                     "condition": "item-not-found", "timeout": False})
        while not car.dispatcher.counts["error"]:
            await asyncio.sleep(0.02)
        await module.close()

    car, out, _ = asyncio.run(run(body, path))
    [outcome] = outcomes(out)
    assert (outcome["stanzas"], outcome["status"]) == (["m1"], "error")
    assert outcome["answer"] == "error type=cancel condition=item-not-found"
    assert car.accepted == 4
    assert not path.exists()  # removed on exit


def test_events_sent_again_after_a_reconnection_are_applied_once(tmp_path):
    path = tmp_path / "p.sock"

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        registered(module)
        await module.expect("applied")
        await module.close()
        again = await FakeModule(path).connect()  # same run of the module: same boot
        registered(again)  # seq 1 and 2 again: already applied
        again.event(event="smacks-hibernation-start", session=PHONE, queue=[msg("m1")])
        publish = await again.expect("publish")
        again.send({"kind": "answer", "id": publish["id"], "ok": True})
        while not car.dispatcher.counts["delivered"]:
            await asyncio.sleep(0.02)
        assert car.accepted == 3
        await again.close()

    asyncio.run(run(body, path))


def test_bad_lines_are_rejected_one_by_one_and_the_connection_goes_on(tmp_path):
    path = tmp_path / "p.sock"

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        module.send("{not json")
        module.send({"kind": "mystery"})
        module.writer.write(b'{"kind": "event", "seq": 1, "event": "\xff"}\n')
        module.send("[" * 200_000)
        module.send({"kind": "event", "seq": "one", "event": {}})
        module.writer.write(b'{"kind": "event", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}\n')
        # A malformed event (session not a full JID): rejected by the sidecar's parser.
        module.event(reply=True, event="push-enable", session=BOB, jid=APP, node="n1")
        applied = await module.expect("applied")
        assert applied["ok"] is False and "rejected" in applied["error"]
        registered(module)
        assert (await module.expect("applied"))["ok"] is True
        await module.close()

    car, _, err = asyncio.run(run(body, path))
    where = "error: prosody example.org (connection 1) line"
    for problem in ("2: not a mod_pushrules line: not valid JSON",
                    "3: unknown line kind 'mystery'",
                    "4: not a mod_pushrules line: not valid UTF-8 at byte",
                    "5: not a mod_pushrules line: not accepted JSON: nested too deeply",
                    "6: event line without an integer seq and an event object",
                    f"7: longer than {MAX_LINE_BYTES} bytes (skipped to its end)"):
        assert f"{where} {problem}" in err.getvalue()
    # The malformed push-enable: the sidecar's own message, naming the module's seq too.
    assert "error: prosody example.org (connection 1, event 1) line 8, field 'session'" \
        in err.getvalue()
    assert car.rejected == 7 and car.accepted == 2
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_shadow_mode_sends_nothing_and_logs_differences(tmp_path, store):
    """(On Redis the events are applied in batches, and the observed lines between them in
    order: the same reports.)"""
    path = tmp_path / "p.sock"
    reports: list[str] = []

    async def body(car: Sidecar) -> None:
        car.transport.shadow.report = reports.append
        module = await FakeModule(path, shadow=True).connect()
        module.event(event="session-bind", session=PHONE)
        module.event(event="push-enable", session=PHONE, jid=APP, node="n1")
        module.event(event="smacks-hibernation-start", session=PHONE, queue=[])
        module.event(event="stanza-queued", session=PHONE, stanza=msg("m1"))
        module.event(event="stanza-queued", session=PHONE, stanza=msg("m2"))
        for mid in ("m1", "m3"):
            module.seq += 1  # numbered like events: kept by the module until acked
            module.send({"kind": "observed", "seq": module.seq, "user": BOB, "jid": APP,
                         "node": "n1", "stanza": mid, "important": True})
        while len(reports) < 2:
            await asyncio.sleep(0.1)
        await module.close()

    with contextlib.ExitStack() as servers:
        url = ("memory:" if store == "memory"
               else f"{servers.enter_context(local_redis()).url}?prefix=shadow")
        car, out, _ = asyncio.run(run(body, path, store=url))
    assert car.batching is (store == "redis")
    assert [o["answer"] for o in outcomes(out)] == ["shadow: not sent"] * 2
    assert sorted(reports) == [
        "shadow: differs: stanza m2 for bob@example.org to push.example.net node n1: "
        "pushrules pushes it (a/queued, important); mod_cloud_notify did not",
        "shadow: differs: stanza m3 for bob@example.org to push.example.net node n1: "
        "mod_cloud_notify pushed it once (important); pushrules does not",
    ]


def test_shadow_log_judges_each_stanza_once_its_window_is_over():
    now = [0.0]
    reports: list[str] = []
    shadow = ShadowLog(window=5, clock=lambda: now[0], report=reports.append)
    push = Push(BOB, APP, "n1", "a/ack-delayed", ("m1", "m2"), True)
    shadow.decided(push)
    for _ in range(2):
        shadow.observed({"user": BOB, "jid": APP, "node": "n1", "stanza": "m1",
                         "important": True})
    shadow.observed({"user": BOB, "jid": APP, "node": "n1", "stanza": "m2", "important": False})
    shadow.observed({"user": BOB, "jid": APP, "node": "n1", "stanza": None})
    shadow.sweep()
    assert reports == []  # the window is not over
    now[0] = 5
    shadow.sweep()
    assert [r.split(": ", 3)[3] for r in reports] == [
        "mod_cloud_notify pushed it 2 times; pushrules once (a/ack-delayed)",
        "pushrules pushes it important (a/ack-delayed); mod_cloud_notify unimportant",
    ]
    assert (shadow.same, shadow.differs, shadow.without_id) == (0, 2, 1)


@pytest.mark.parametrize("line,describe", [
    ({"ok": True}, "result"),
    ({"ok": False, "timeout": True}, "timeout"),
    ({"ok": False, "error_type": "wait", "condition": "resource-constraint"},
     "error type=wait condition=resource-constraint"),
    ({"ok": False, "error_type": None, "condition": "undefined-condition"},
     "error type=none condition=undefined-condition"),
    ({"ok": False, "error_type": "bogus", "condition": 7}, "error type=none condition=none"),
])
def test_module_answers_become_transport_answers(line, describe):
    assert read_answer(line).describe() == describe


def test_socket_is_private_and_a_plain_file_there_is_a_clear_fatal_error(tmp_path):
    path = tmp_path / "p.sock"

    async def body(car: Sidecar) -> None:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        await (await FakeModule(path).connect()).close()

    asyncio.run(run(body, path))
    assert not path.exists()
    plain = tmp_path / "file"
    plain.write_text("keep me")
    car, _, err = sidecar(plain)
    assert asyncio.run(car.run()) == 1
    assert f"error: socket {plain}: the path exists and is not a socket" in err.getvalue()
    assert plain.read_text() == "keep me"


NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # not the venv's: another user may not reach it
PEER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"kind": "hello", "host": "example.org", "boot": "b"}\\n')
    said = s.recv(100)
except OSError:
    said = b""
print("closed" if said == b"" else "open")
"""


@pytest.mark.skipif(os.getuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
                    reason="needs root (and a system python) to connect as another user")
def test_socket_group_and_allowed_uids_hold_for_prosody(tmp_path_factory):
    """--socket-group and --allowed-uid apply to --prosody: the socket is 0660 in that group,
    and a process of that group whose uid is not allowed is closed without a word."""
    folder = Path(tempfile.mkdtemp(prefix="pushrules-uid-"))
    try:
        folder.chmod(0o755)
        path = folder / "p.sock"

        async def body(car: Sidecar) -> None:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
            assert os.stat(path).st_gid == NOBODY
            for uid, want in ((NOBODY, "closed"), (0, "open")):
                peer = await asyncio.create_subprocess_exec(
                    SYSTEM_PYTHON, "-c", PEER, str(path), stdout=asyncio.subprocess.PIPE,
                    user=uid, group=NOBODY if uid else 0)
                with contextlib.suppress(TimeoutError):
                    said, _ = await asyncio.wait_for(peer.communicate(), 2)
                    assert said.decode().strip() == want
                if peer.returncode is None:  # still open: the allowed peer
                    assert want == "open"
                    peer.kill()
                    await peer.wait()

        asyncio.run(run(body, path, socket_group=str(NOBODY), allowed_uids=(4242,)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_serve_prosody_needs_no_component_and_names_bad_options(tmp_path):
    runner = CliRunner()
    both = runner.invoke(main, ["serve", "--prosody", str(tmp_path / "a.sock"), "--socket",
                                str(tmp_path / "b.sock")])
    assert both.exit_code == 2 and "--prosody and --socket" in both.output
    nowhere = subprocess.run([sys.executable, "-m", "pushrules.cli", "serve", "--prosody",
                              str(tmp_path / "no" / "a.sock")], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    assert nowhere.returncode == 1
    said = nowhere.stderr
    assert f"error: socket {tmp_path / 'no' / 'a.sock'}: directory " in said
    assert "does not exist" in said and "Traceback" not in said


def test_prosody_socket_from_the_config_file(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('[prosody]\nsocket = "/run/p.sock"\nsocket_group = "prosody"\n'
                      'allowed_uids = [108]\n[rules]\nmax_errors = 3\n')
    values, rules = read_toml(config)
    settings = build_settings({}, values, rules)
    assert settings.prosody == "/run/p.sock" and settings.rules.max_errors == 3
    assert (settings.socket_group, settings.allowed_uids) == ("prosody", (108,))


def test_pushes_resumed_from_the_outbox_wait_for_the_module(tmp_path):
    """A push decided and sent, never answered (the sidecar stopped): the next run over the
    same store sends it again once the module connects, and it is delivered, not failed."""
    path = tmp_path / "p.sock"
    store = f"sqlite:///{tmp_path / 'state.db'}"

    async def first(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        registered(module)
        await module.expect("applied")
        module.event(event="smacks-hibernation-start", session=PHONE, queue=[msg("m1")])
        await module.expect("publish")  # never answered
        await module.close()

    _, out1, _ = asyncio.run(run(first, path, store=store))
    assert [o["status"] for o in outcomes(out1)] == ["undelivered"]

    async def second(car: Sidecar) -> None:
        await asyncio.sleep(1.0)  # no module yet: the resumed push waits, it does not fail
        assert car.dispatcher.pending == 1 and sum(car.dispatcher.counts.values()) == 0
        assert not car.transport.online.is_set()
        module = await FakeModule(path, boot="boot-2").connect()
        publish = await module.expect("publish")
        assert parse_publish(Iq(xml=ET.fromstring(publish["iq"]))).node == "n1"
        module.send({"kind": "answer", "id": publish["id"], "ok": True})
        while not car.dispatcher.counts["delivered"]:
            await asyncio.sleep(0.02)
        await module.close()

    car, out2, err2 = asyncio.run(run(second, path, store=store))
    assert [(o["stanzas"], o["status"]) for o in outcomes(out2)] == [(["m1"], "delivered")]
    assert "sending again 1 decided push(es)" in err2.getvalue()
    assert car.resent == 1


def test_answers_are_read_while_events_wait_for_room_and_the_module_is_paused(tmp_path,
                                                                           monkeypatch):
    """Backpressure (--max-outbox) holds events back, never the answers that make room: the
    module is told to pause, then to resume, and every event is applied in order."""
    from pushrules.runtime.prosody import bridge

    monkeypatch.setattr(bridge, "PAUSE_AT", 3)  # m3 waits for room; m4, m5 behind it
    monkeypatch.setattr(bridge, "RESUME_AT", 0)
    path = tmp_path / "p.sock"
    seen: list[str] = []

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        registered(module)
        await module.expect("applied")
        module.event(event="smacks-hibernation-start", session=PHONE, queue=[])
        for i in range(1, 6):
            module.event(event="stanza-queued", session=PHONE, stanza=msg(f"m{i}"))
        while seen.count("publish") < 5 or "resume" not in seen:
            line = await module.expect_any({"publish", "pause", "resume"})
            if line["kind"] == "publish":
                module.send({"kind": "answer", "id": line["id"], "ok": True})
                seen.append("publish")
            else:
                seen.append(line["kind"])
        while car.dispatcher.counts["delivered"] < 5:
            await asyncio.sleep(0.02)
        await module.close()

    car, out, _ = asyncio.run(run(body, path, max_outbox=1))
    assert [o["stanzas"] for o in outcomes(out)] == [[f"m{i}"] for i in range(1, 6)]
    assert "pause" in seen and "resume" in seen
    assert seen.index("pause") < seen.index("resume")
    assert car.accepted == 8


def test_v2_events_through_the_bridge_urgent_publish_and_times_per_connection(tmp_path):
    """A version-2 module: a call is published urgent (the high-priority element in the IQ the
    module sends), a remote disable stops that registration, and an `at` going back within
    one connection is a rejected line while a new connection keeps its own clock."""
    path = tmp_path / "p.sock"
    call = (f"<message xmlns='jabber:client' id='p1' from='alice@{HOST}/pc' to='{BOB}' "
            "type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'/></message>")

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        module.event(event="session-bind", session=PHONE, at=1)
        module.event(reply=True, event="push-enable", session=PHONE, jid=APP, node="n1", at=2)
        await module.expect("applied")
        module.event(event="session-destroyed", session=PHONE, at=3)
        module.event(event="message/offline/handle", user=BOB, stanza=call, at=4)
        publish = await module.expect("publish")
        module.send({"kind": "answer", "id": publish["id"], "ok": True})
        published = parse_publish(Iq(xml=ET.fromstring(publish["iq"])))
        assert published.urgent and "tigase:push:priority:0" in publish["iq"]
        module.event(event="tick", at=2)  # earlier than 4 on this connection: rejected
        module.event(event="push-remote-disable", user=BOB, jid=APP, node="n1", at=5)
        module.event(event="message/offline/handle", user=BOB, stanza=msg("m1"), at=6)
        while car.accepted < 6:
            await asyncio.sleep(0.02)
        await module.close()
        again = await FakeModule(path, boot="boot-2").connect()  # a restarted Prosody
        again.event(event="tick", at=1)  # its own clock: accepted
        while car.accepted < 7:
            await asyncio.sleep(0.02)
        await again.close()

    car, out, err = asyncio.run(run(body, path))
    assert [(o["rule"], o["stanzas"], o.get("urgent", False), o["at"]) for o in outcomes(out)] \
        == [("e/call", ["p1"], True, 4)]  # m1 came after the remote disable: not pushed
    assert "error: prosody example.org (connection 1, event 5) line 7, field 'at': 2 is " \
        "earlier than the previous event's 4 (times never decrease)" in err.getvalue()
    assert car.rejected == 1 and car.accepted == 7


# --- a burst over a store that batches (a single Redis) ----------------------------------------

USERS = [f"u{i}@{HOST}" for i in range(4)]


def user_msg(user: str, mid: str) -> str:
    return (f"<message xmlns='jabber:client' id='{mid}' from='alice@{HOST}/pc' to='{user}' "
            "type='chat'><body>hi</body></message>")


def burst_lines() -> tuple[list[dict], list[dict | str]]:
    """The lines of a first connection (every user bound and enabled, replies asked), and of a
    second one of the same module run, written at once: lines of the first sent again (at its
    start, as the module does, and one in the middle), a malformed event, an impossible one, a
    line sent twice in a row and a line that is not JSON among the users' queued stanzas."""
    first: list[dict] = []
    for user in USERS:
        first.append({"kind": "event", "seq": len(first) + 1, "reply": False,
                      "event": {"event": "session-bind", "session": f"{user}/phone"}})
        first.append({"kind": "event", "seq": len(first) + 1, "reply": True,
                      "event": {"event": "push-enable", "session": f"{user}/phone",
                                "jid": APP, "node": f"n-{user[:2]}"}})
    second: list[dict | str] = [first[-2], first[-1]]  # not acked before the reconnection
    seq = len(first)

    def add(reply: bool = False, **event: object) -> dict:
        nonlocal seq
        seq += 1
        line = {"kind": "event", "seq": seq, "reply": reply, "event": event}
        second.append(line)
        return line

    for user in USERS:
        add(event="smacks-hibernation-start", session=f"{user}/phone", queue=[])
    for round_ in range(3):
        for user in USERS:
            add(reply=user == USERS[1], event="stanza-queued", session=f"{user}/phone",
                stanza=user_msg(user, f"{user[:2]}-m{round_}"))
        if round_ == 0:
            second.append(first[3])  # u1's enable, sent again: applied already, no reply
            add(reply=True, event="push-enable", session=USERS[0], jid=APP, node="bad")
            second.append("{not json")
        if round_ == 1:
            add(reply=True, event="smacks-hibernation-end", session=f"u9@{HOST}/phone")
            second.append(second[-1])  # the same line twice in a row
    return first, second


async def answered_module(module: FakeModule, seen: dict[str, list], last: int,
                          pushes: int) -> None:
    """Answer every publish (a result) and record the replies and acks until ``pushes`` are
    answered and every line up to ``last`` is acked."""
    while len(seen["publish"]) < pushes or not seen["ack"] or seen["ack"][-1] < last:
        line = await module.expect_any({"publish", "applied", "ack"})
        if line["kind"] == "publish":
            module.send({"kind": "answer", "id": line["id"], "ok": True})
            seen["publish"].append(parse_publish(Iq(xml=ET.fromstring(line["iq"]))).node)
        elif line["kind"] == "applied":
            seen["applied"].append(line)
        else:
            seen["ack"].append(line["upto"])


def spy_handle_many(engine: object, calls: list[tuple[int, object]]) -> None:
    """Record the size and lane of every ``handle_many`` (the real one runs)."""
    real = engine.handle_many  # type: ignore[attr-defined]

    def spy(events, **kwargs):
        calls.append((len(events), kwargs.get("lane")))
        return real(events, **kwargs)

    engine.handle_many = spy  # type: ignore[attr-defined]


def run_burst(path: Path, store: str = "memory:") -> dict:
    """The burst through the bridge: what the module saw, the outcomes, errors and counts."""
    first, second = burst_lines()
    seen: dict[str, list] = {"publish": [], "applied": [], "ack": []}
    calls: list[tuple[int, object]] = []
    last = max(line["seq"] for line in second if isinstance(line, dict))
    pushes = 3 * len(USERS)

    async def body(car: Sidecar) -> None:
        if hasattr(car.engine, "handle_many"):
            spy_handle_many(car.engine, calls)
        module = await FakeModule(path).connect()
        for line in first:
            module.send(line)
        await answered_module(module, seen, len(first), 0)
        await module.close()
        again = await FakeModule(path).connect()  # same module run (boot): a reconnection
        again.writer.write(b"".join(
            ((line if isinstance(line, str) else json.dumps(line)) + "\n").encode()
            for line in second))
        await answered_module(again, seen, last, pushes)
        while car.dispatcher.counts["delivered"] < pushes:
            await asyncio.sleep(0.02)
        await again.close()

    car, out, err = asyncio.run(run(body, path, store=store))
    said = [line for line in err.getvalue().splitlines() if not line.startswith("pushrules")]
    return {"outcomes": sorted((o["user"], o["node"], o["rule"], tuple(o["stanzas"]),
                                o["status"]) for o in outcomes(out)),
            "published": sorted(seen["publish"]), "applied": seen["applied"],
            "acks": seen["ack"], "said": said, "counts": (car.accepted, car.rejected),
            "calls": calls}


def test_over_redis_a_burst_is_applied_in_batches_with_the_outcomes_of_one_by_one(tmp_path):
    """A single Redis: the events a second connection writes at once are applied in batches
    (``handle_many`` of several, in the connection's own lane), with exactly what the one-by-one
    path (the memory store) gives: pushes and outcomes, an ``applied`` reply per reply line with
    its own ok (the malformed and the impossible event refused), lines sent again applied once
    and not answered again, acks up to the last line, every bad line named."""
    one_by_one = run_burst(tmp_path / "m.sock")
    with local_redis() as server:
        batched = run_burst(tmp_path / "r.sock", f"{server.url}?prefix=bridge")
    sizes = [size for size, lane in batched["calls"] if lane != REPORT_LANE]
    assert sizes and max(sizes) > 1, f"no batch of several events: {batched['calls']}"
    assert {lane for _, lane in batched["calls"] if lane != REPORT_LANE} <= {
        f"prosody {HOST} (connection 1)", f"prosody {HOST} (connection 2)"}
    assert not one_by_one["calls"]
    for key in ("outcomes", "published", "said", "counts"):
        assert batched[key] == one_by_one[key], key
    # One reply per reply line, each with its own ok; a line refused before the batch ran is
    # answered at once (the module matches replies by seq), so compared in seq order.
    by_seq = sorted(batched["applied"], key=lambda reply: reply["seq"])
    assert by_seq == one_by_one["applied"]
    assert batched["acks"][-1] == one_by_one["acks"][-1] == 26
    assert batched["acks"] == sorted(batched["acks"])
    # What both give, spelled out.
    assert [(a["seq"], a["ok"]) for a in by_seq] == [
        (2, True), (4, True), (6, True), (8, True), (14, True), (17, False), (19, True),
        (22, False), (24, True)]
    assert batched["published"] == sorted(f"n-{u[:2]}" for u in USERS for _ in range(3))
    assert all(o[-1] == "delivered" for o in batched["outcomes"])
    assert "error: prosody example.org (connection 2, event 17) line 13, field 'session'" \
        in "\n".join(batched["said"])
    assert any("warning: prosody example.org (connection 2, event 22) line 19: skipped "
               "impossible event" in line for line in batched["said"])
    assert "error: prosody example.org (connection 2) line 14: not a mod_pushrules line: " \
        "not valid JSON" in "\n".join(batched["said"])
    assert batched["counts"] == (len(USERS) * 2 + len(USERS) * 4, 2)


def test_over_redis_an_event_retried_in_a_batch_holds_back_acks_only_and_is_applied_once(
        tmp_path):
    """A batch where one user's events get StoreUnavailable (its copy was stale, and its
    commit then fails): the other user's events are applied and answered meanwhile, no ack
    covers the retried ones, and when the connection drops during the retry the module's
    resent lines apply the retried events once and skip (without a second reply) the ones
    applied already."""
    from pushrules.generated.events import SessionBind, SessionDestroyed
    from pushrules.runtime.store import StoreUnavailable, open_store
    from pushrules.runtime.store.engine import StoredEngine

    path = tmp_path / "p.sock"
    a, b = USERS[0], USERS[1]
    seen: dict[str, list] = {"publish": [], "applied": [], "ack": []}
    failing = {a}  # whose commits the store refuses as unavailable (the others go through)
    calls: list[tuple[int, object]] = []

    def line(seq: int, reply: bool = False, **event: object) -> dict:
        return {"kind": "event", "seq": seq, "reply": reply, "event": event}

    first = [line(1, event="session-bind", session=f"{a}/phone"),
             line(2, True, event="push-enable", session=f"{a}/phone", jid=APP, node="na"),
             line(3, event="session-bind", session=f"{b}/phone"),
             line(4, True, event="push-enable", session=f"{b}/phone", jid=APP, node="nb"),
             line(5, event="smacks-hibernation-start", session=f"{a}/phone", queue=[]),
             line(6, event="smacks-hibernation-start", session=f"{b}/phone", queue=[])]
    burst = [line(7, True, event="stanza-queued", session=f"{a}/phone", stanza=user_msg(a, "a1")),
             line(8, True, event="stanza-queued", session=f"{b}/phone", stanza=user_msg(b, "b1")),
             line(9, True, event="push-enable", session=b, jid=APP, node="bad"),
             line(10, event="stanza-queued", session=f"{a}/phone", stanza=user_msg(a, "a2")),
             line(11, True, event="stanza-queued", session=f"{b}/phone",
                  stanza=user_msg(b, "b2"))]

    def write(module: FakeModule, lines: list[dict]) -> None:
        module.writer.write(b"".join((json.dumps(x) + "\n").encode() for x in lines))

    async def body(car: Sidecar) -> None:
        spy_handle_many(car.engine, calls)
        commit = car.engine.store.commit

        def unavailable_for_some(changes):
            if changes.user in failing:
                raise StoreUnavailable("redis store: the connection broke (test)")
            return commit(changes)

        car.engine.store.commit = unavailable_for_some
        module = await FakeModule(path).connect()
        write(module, first)
        failing.clear()
        await answered_module(module, seen, 6, 0)
        await module.close()
        other = StoredEngine(open_store(car.settings.store))  # another node changes a
        other.handle(SessionBind(f"{a}/laptop"))
        other.handle(SessionDestroyed(f"{a}/laptop"))
        other.store.close()
        failing.add(a)
        again = await FakeModule(path).connect()
        seen["ack"].clear()
        write(again, burst)
        while len(seen["publish"]) < 2 or len(seen["applied"]) < 5:
            got = await again.expect_any({"publish", "applied", "ack"})
            if got["kind"] == "publish":
                again.send({"kind": "answer", "id": got["id"], "ok": True})
                seen["publish"].append(parse_publish(Iq(xml=ET.fromstring(got["iq"]))).node)
            else:
                seen[got["kind"]].append(got if got["kind"] == "applied" else got["upto"])
        await asyncio.sleep(0.35)  # a few ack rounds while a's events are retried
        while not again.lines.empty():
            got = again.lines.get_nowait()
            seen[got["kind"]].append(got.get("upto", got))
        assert seen["publish"] == ["nb", "nb"]  # b's pushes are out; a's wait
        assert sorted((x["seq"], x["ok"]) for x in seen["applied"][2:]) == [
            (8, True), (9, False), (11, True)]  # (9, refused as read, may come first)
        assert all(upto < 7 for upto in seen["ack"]), seen["ack"]  # 7 is not applied yet
        await again.close()  # the connection drops during the retry
        failing.clear()
        third = await FakeModule(path).connect()
        write(third, burst)  # the module sends again every line not acked
        seen["ack"].clear()
        await answered_module(third, seen, 11, 4)
        while car.dispatcher.counts["delivered"] < 4:
            await asyncio.sleep(0.02)
        await third.close()

    with local_redis() as server:
        car, out, err = asyncio.run(run(body, path, store=f"{server.url}?prefix=retried"))
    assert sorted(o["stanzas"][0] for o in outcomes(out)) == ["a1", "a2", "b1", "b2"]
    assert all(o["status"] == "delivered" for o in outcomes(out))
    assert sorted(seen["publish"]) == ["na", "na", "nb", "nb"]
    # Replies: the first connection's two, then 8, 9 and 11 at once, 7 only once applied.
    replies = [(x["seq"], x["ok"]) for x in seen["applied"]]
    assert replies[:2] + sorted(replies[2:5]) + replies[5:] == [
        (2, True), (4, True), (8, True), (9, False), (11, True), (7, True)]
    assert seen["ack"][-1] == 11
    assert (car.accepted, car.rejected) == (10, 1)
    assert err.getvalue().count("(connection 2, event 9) line 4, field 'session'") == 1
    lane = f"prosody {HOST} (connection 2)"
    # The burst's four events in one batch, then a's two retried in the same lane; the module
    # sent them again on the third connection: a's two applied there, b's skipped.
    assert calls[calls.index((4, lane)) + 1:].count((2, lane)) >= 1
    assert [c for c in calls if c[1] == f"prosody {HOST} (connection 3)"] == [
        (2, f"prosody {HOST} (connection 3)")]
