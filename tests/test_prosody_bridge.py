"""The sidecar's side of mod_pushrules, driven over a real Unix socket by a peer that speaks the
module's wire (the real module runs in tests/integration/test_prosody_adapter.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from slixmpp import Iq
from slixmpp.xmlstream import ET

from pushrules.cli import main
from pushrules.model.records import Push
from pushrules.runtime.prosody.bridge import open_listener, read_answer
from pushrules.runtime.prosody.shadow import ShadowLog
from pushrules.runtime.xmpp.publish import parse_publish
from pushrules.runtime.xmpp.sidecar import Sidecar, SidecarSettings
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

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()


def sidecar(path: Path) -> tuple[Sidecar, io.StringIO, io.StringIO]:
    settings = SidecarSettings(component_jid="", component_secret="-", prosody=str(path),
                               connect_timeout=5, shutdown_grace=2, iq_timeout=2)
    out, err = io.StringIO(), io.StringIO()
    return Sidecar(settings, out, err), out, err


def outcomes(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def registered(module: FakeModule) -> None:
    module.event(event="session-bind", session=PHONE)
    module.event(reply=True, event="push-enable", session=PHONE, jid=APP, node="n1",
                 secret="s3cret")


async def run(body, path: Path) -> tuple[Sidecar, io.StringIO, io.StringIO]:
    car, out, err = sidecar(path)
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


def test_bad_lines_are_reported_and_the_connection_goes_on(tmp_path, caplog):
    path = tmp_path / "p.sock"

    async def body(car: Sidecar) -> None:
        module = await FakeModule(path).connect()
        module.send("{not json")
        module.send({"kind": "mystery"})
        # A malformed event (session not a full JID): rejected by the sidecar's parser.
        module.event(reply=True, event="push-enable", session=BOB, jid=APP, node="n1")
        applied = await module.expect("applied")
        assert applied["ok"] is False and "rejected" in applied["error"]
        registered(module)
        assert (await module.expect("applied"))["ok"] is True
        await module.close()

    _, _, err = asyncio.run(run(body, path))
    assert "prosody example.org (connection 1) line 1" in err.getvalue()
    assert "not a mod_pushrules line" in caplog.text
    assert "unknown line kind 'mystery'" in caplog.text


def test_shadow_mode_sends_nothing_and_logs_differences(tmp_path):
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
            module.send({"kind": "observed", "user": BOB, "jid": APP, "node": "n1",
                         "stanza": mid, "important": True})
        while len(reports) < 2:
            await asyncio.sleep(0.1)
        await module.close()

    _, out, _ = asyncio.run(run(body, path))
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


def test_listener_is_private_replaces_a_stale_socket_and_refuses_other_files(tmp_path):
    path = tmp_path / "p.sock"
    first = open_listener(str(path))
    first.close()  # a stale socket left behind
    second = open_listener(str(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        second.close()
    plain = tmp_path / "file"
    plain.write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a socket"):
        open_listener(str(plain))
    assert plain.read_text() == "keep me"


def test_serve_prosody_needs_no_component_and_names_bad_options(tmp_path):
    runner = CliRunner()
    both = runner.invoke(main, ["serve", "--prosody", str(tmp_path / "a.sock"), "--socket",
                                str(tmp_path / "b.sock")])
    assert both.exit_code == 2 and "--prosody and --socket" in both.output
    nowhere = runner.invoke(main, ["serve", "--prosody", str(tmp_path / "no" / "a.sock")])
    assert nowhere.exit_code == 1
    assert "cannot listen" in nowhere.output and "Traceback" not in nowhere.output


def test_prosody_socket_from_the_config_file(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('[prosody]\nsocket = "/run/p.sock"\n[rules]\nmax_errors = 3\n')
    values, rules = read_toml(config)
    settings = build_settings({}, values, rules)
    assert settings.prosody == "/run/p.sock" and settings.rules.max_errors == 3
