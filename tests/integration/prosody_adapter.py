"""A real Prosody running mod_pushrules, `pushrules serve --prosody` as a process, real slixmpp
clients with XEP-0198 through a TCP relay that can freeze a link (bytes dropped, sockets open) or
cut it (closed), and the recording app server of harness.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness import APP_SECRET, AppServer, Prosody, free_port
from slixmpp import ClientXMPP, ComponentXMPP, Iq
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from pushrules.runtime.prosody import module_path

PUSH_NS = "urn:xmpp:push:0"
DATA_NS = "jabber:x:data"
PASSWORD = "pw"
APP = "app.localhost"
MAIN, RESTART, SHADOW, TINY, KILL, V2 = ("localhost", "restart.localhost", "shadow.localhost",
                                         "tiny.localhost", "kill.localhost", "v2.localhost")
FREEZE = "freeze.localhost"
SHORT_ACK_DELAY = "smacks_max_ack_delay = 10"
"""For a host whose scenarios freeze a link (S2 of prosody-observed.md, where the research used
3 s): long enough for a client on a loaded machine to answer an <r/> (one took 4 s), since an
ack delay before the freeze is a push the scenario does not expect. Other hosts wait 120 s."""
ADAPTER_MODULES = ("roster", "saslauth", "disco", "smacks", "mam", "offline", "carbons",
                   "csi_simple", "ping")


def _encode(part: str) -> str:
    """Prosody's datamanager file-name encoding (every non-alphanumeric byte as %xx)."""
    return "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in part)


class AdapterProsody(Prosody):
    """Prosody with c2s on a port the test picks, the adapter on every VirtualHost (each with
    its own pushrules_socket), mod_cloud_notify and shadow mode on ``shadow_hosts``, and the
    app server's component plus ``components`` (external components, APP_SECRET)."""

    def __init__(self, root: Path, sockets: dict[str, Path], shadow_hosts: Iterable[str] = (),
                 host_options: dict[str, list[str]] | None = None,
                 components: Iterable[str] = ()) -> None:
        super().__init__(root)
        self.components = (APP, *components)  # all with APP_SECRET
        self.c2s_port = free_port()
        self.sockets = sockets
        self.shadow_hosts = set(shadow_hosts)
        self.host_options = host_options or {}

    def config(self) -> str:
        modules = ", ".join(f'"{m}"' for m in (*ADAPTER_MODULES, "pushrules"))
        lines = [
            "daemonize = false", "run_as_root = true",
            f'pidfile = "{self.root}/prosody.pid"', f'data_path = "{self.root}/data"',
            f'certificates = "{self.root}/certs"',
            f'log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{self.log}" }} }}',
            f'plugin_paths = {{ "{Path(module_path()).parent}" }}',
            f"modules_enabled = {{ {modules} }}",
            'modules_disabled = { "posix", "tls" }',
            'authentication = "internal_plain"',
            "c2s_require_encryption = false", "allow_unencrypted_plain_auth = true",
            f"c2s_ports = {{ {self.c2s_port} }}", "s2s_ports = { }", "http_ports = { }",
            "https_ports = { }", "c2s_direct_tls_ports = { }", "s2s_direct_tls_ports = { }",
            'interfaces = { "127.0.0.1" }',
            f"component_ports = {{ {self.port} }}", 'component_interface = "127.0.0.1"',
            # The research's timers (prosody-observed.md), so scenarios stay short.
            "smacks_max_ack_delay = 120", "smacks_hibernation_time = 20",
            "push_max_hibernation_timeout = 20", "push_max_errors = 2",
            "default_archive_policy = true", 'archive_expires_after = "never"',
            "pushrules_reconnect_interval = 0.2", "pushrules_ack_timeout = 5",
            "pushrules_shadow_window = 4",
        ]
        for host, path in self.sockets.items():
            lines += [f'VirtualHost "{host}"', f'    pushrules_socket = "{path}"']
            if host in self.shadow_hosts:
                lines += ['    modules_enabled = { "cloud_notify" }', "    pushrules_shadow = true"]
            lines += [f"    {option}" for option in self.host_options.get(host, [])]
        for jid in self.components:
            lines += [f'Component "{jid}"', f'    component_secret = "{APP_SECRET}"']
        lines.append("")
        return "\n".join(lines)

    def add_account(self, user: str) -> None:
        node, _, host = user.partition("@")
        folder = self.root / "data" / _encode(host) / "accounts"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{_encode(node)}.dat").write_text(
            f'return {{\n\t["password"] = "{PASSWORD}";\n}};\n')


class ModuleRecorder:
    """Listens where one VirtualHost's mod_pushrules connects, in place of the sidecar: records
    the hello and every event, acknowledges them and applies every enable (the module under
    test is real; this is only its peer, for events the engine does not know yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hello: dict | None = None
        self.events: list[dict] = []
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> ModuleRecorder:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if message["kind"] == "hello":
                self.hello = message
            elif message["kind"] == "event":
                self.events.append(message["event"])
                writer.write(json.dumps({"kind": "ack", "upto": message["seq"]}).encode() + b"\n")
                if message.get("reply"):
                    writer.write(json.dumps({"kind": "applied", "seq": message["seq"],
                                             "ok": True}).encode() + b"\n")

    def named(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class RevokingAppServer(AppServer):
    """The recording app server, which can also take a node's publish affiliation away and
    say so to the user's bare JID (XEP-0357 section 8), as a push service does."""

    def revoke(self, user: str, node: str, whose: str | None = None, *, form: str = "xep-0357",
               mid: str = "revoke") -> None:
        """``form``: "xep-0357" (the XEP's example: ``<pubsub node=…><affiliation/>``) or
        "xep-0060" (section 8.9.4: ``<pubsub><affiliations node=…><affiliation/>``)."""
        item = f"<affiliation jid='{whose or user}' affiliation='none'/>"
        inner = (f"<pubsub xmlns='http://jabber.org/protocol/pubsub' node='{node}'>{item}"
                 "</pubsub>" if form == "xep-0357" else
                 "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                 f"<affiliations node='{node}'>{item}</affiliations></pubsub>")
        self.send_raw(f"<message xmlns='jabber:component:accept' id='{mid}' from='{self.boundjid}' "
                      f"to='{user}'>{inner}</message>")


class Room(ComponentXMPP):
    """A group-chat service as a component: sends type=groupchat messages from room@service/
    nick to a user, the way a MUC sends them to an occupant (the occupant's answers, errors
    for a bare JID nobody receives at, are ignored)."""

    def __init__(self, jid: str, port: int) -> None:
        super().__init__(jid, APP_SECRET, "127.0.0.1", port)  # type: ignore[no-untyped-call]
        self.online = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.online.set())

    async def start(self) -> Room:
        self.connect()
        await asyncio.wait_for(self.online.wait(), 15)
        return self

    def say(self, room: str, nick: str, to: str, mid: str, body: str = "hi all",
            inner: str = "") -> None:
        self.send_raw(f"<message xmlns='jabber:component:accept' id='{mid}' "
                      f"from='{room}@{self.boundjid.bare}/{nick}' to='{to}' type='groupchat'>"
                      f"<body>{body}</body>{inner}</message>")

    async def stop(self) -> None:
        if self.is_connected():
            await self.disconnect(wait=1.0)


# --- the relay ------------------------------------------------------------------------------------

class Relay:
    """TCP relay from a client to Prosody's c2s port. ``freeze()``: bytes in both directions are
    read and dropped, sockets stay open. ``cut()``: both sockets closed. New connections (a
    resumption) pass normally."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.frozen = False
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()

    def freeze(self) -> None:
        self.frozen = True

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self.frozen = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


# --- clients --------------------------------------------------------------------------------------

class Device(ClientXMPP):
    """A real client (XEP-0198 with resumption) connecting through its own relay."""

    def __init__(self, jid: str, c2s_port: int) -> None:
        super().__init__(jid, PASSWORD)
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0198")
        self.relay = Relay(c2s_port)
        self.messages: list[str] = []
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("message", lambda msg: self.messages.append(msg["id"]))
        self.witness: Device | None = None  # see all_acked
        self._marks = 0
        self.stanza_ids: list[str] = []  # of every message received, with a body or not
        self.register_handler(Callback("every message", MatchXPath("{jabber:client}message"),
                                       lambda msg: self.stanza_ids.append(msg["id"])))

    async def online(self) -> Device:
        await self.relay.start()
        self.connect("127.0.0.1", self.relay.port)
        await asyncio.wait_for(self.ready.wait(), 15)
        self.send_presence()
        await self.roundtrip()
        return self

    async def roundtrip(self) -> None:
        """An IQ answered by the server: everything sent before it was handled."""
        iq = self.Iq(stype="get", sto=self.boundjid.bare)
        ET.SubElement(iq.xml, "{http://jabber.org/protocol/disco#info}query")
        await iq.send(timeout=10)

    async def all_acked(self) -> None:
        """Everything the server sent so far handled and acked, so that a link frozen or cut
        next leaves an empty smacks queue: a round trip, then an unsolicited <a/>, then (with a
        ``witness``) a headline to it: once it arrives the server has read the <a/> before it
        (one stream is read in order), however loaded the machine; without one, a pause."""
        await self.roundtrip()
        self.plugin["xep_0198"].send_ack()
        if self.witness is None:
            await asyncio.sleep(0.4)
            return
        self._marks += 1
        mark, witness = f"acked-{self.boundjid}-{self._marks}", self.witness
        self.send_raw(f"<message xmlns='jabber:client' id='{mark}' to='{witness.boundjid}' "
                      "type='headline'/>")
        await until(lambda: mark in witness.stanza_ids, 30, f"{mark} at the witness")

    async def resume(self) -> None:
        self.resumed.clear()
        self.connect("127.0.0.1", self.relay.port)
        await asyncio.wait_for(self.resumed.wait(), 15)

    def push_iq(self, action: str, jid: str | None, node: str | None,
                secret: str | None = None) -> Iq:
        iq = self.Iq(stype="set")
        element = ET.SubElement(iq.xml, f"{{{PUSH_NS}}}{action}")
        if jid is not None:
            element.set("jid", jid)
        if node is not None:
            element.set("node", node)
        if secret is not None:
            form = ET.SubElement(element, f"{{{DATA_NS}}}x", {"type": "submit"})
            for var, value in (("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options"),
                               ("secret", secret)):
                fld = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": var})
                ET.SubElement(fld, f"{{{DATA_NS}}}value").text = value
        return iq

    async def enable(self, node: str, secret: str, jid: str = APP) -> None:
        await self.push_iq("enable", jid, node, secret).send(timeout=15)

    async def disable(self, node: str | None, jid: str = APP) -> None:
        await self.push_iq("disable", jid, node).send(timeout=15)

    async def push_error(self, action: str, jid: str | None, node: str | None) -> tuple[str, str]:
        """(type, condition) of the error the server answers, AssertionError on a result."""
        try:
            await self.push_iq(action, jid, node).send(timeout=15)
        except IqError as exc:
            return exc.iq["error"]["type"], exc.iq["error"]["condition"]
        raise AssertionError(f"<{action}/> with jid={jid!r} node={node!r} was accepted")

    async def disco_features(self) -> set[str]:
        iq = self.Iq(stype="get", sto=self.boundjid.bare)
        ET.SubElement(iq.xml, "{http://jabber.org/protocol/disco#info}query")
        answer = await iq.send(timeout=10)
        return {f.get("var") for f in answer.xml.iter(
            "{http://jabber.org/protocol/disco#info}feature")}

    def freeze(self) -> None:
        self.relay.freeze()

    def cut(self) -> None:
        self.relay.cut()

    async def close(self) -> None:
        """A clean close of the stream (the session ends, no hibernation)."""
        await self.disconnect(wait=2.0)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel_connection_attempt()
            self.abort()
        await self.relay.stop()


def stanza(kind: str, mid: str, to: str, body: str | None = "hi", inner: str = "") -> ET.Element:
    """A message element (jabber:client) to send raw."""
    xml = ET.fromstring(f"<message xmlns='jabber:client' id='{mid}' to='{to}' type='{kind}'>"
                        f"{'' if body is None else f'<body>{body}</body>'}{inner}</message>")
    return xml


class Sender(Device):
    """The second account: sends real messages."""

    def say(self, to: str, mid: str, body: str | None = "hi", kind: str = "chat",
            inner: str = "") -> None:
        self.send_raw(ET.tostring(stanza(kind, mid, to, body, inner), encoding="unicode"))

    def raw(self, xml: str) -> None:
        self.send_raw(xml)


# --- the sidecar process --------------------------------------------------------------------------

@dataclass
class Serve:
    """`pushrules serve --prosody PATH` in a subprocess; outcomes collected from stdout."""

    socket: Path
    store: str
    log: Path
    args: tuple[str, ...] = ()
    outcomes: list[dict] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _reader: threading.Thread | None = None

    async def start(self) -> Serve:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pushrules.cli", "serve", "--prosody", str(self.socket),
            "--store", self.store, "--log-level", "info", *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=self.log.open("ab"), env={**os.environ})
        asyncio.get_running_loop().create_task(self._collect())
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pushrules serve did not listen: {self.log.read_text()}")
            await asyncio.sleep(0.05)
        return self

    async def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.outcomes.append(json.loads(line))

    async def stop(self) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    async def kill(self) -> int:
        """SIGKILL: no grace, nothing flushed (what a crash or the OOM killer does)."""
        assert self.process is not None
        self.process.kill()
        return await self.process.wait()

    def for_user(self, user: str) -> list[dict]:
        return [o for o in self.outcomes if o["user"] == user]

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


async def until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


__all__ = ["APP", "FREEZE", "KILL", "SHORT_ACK_DELAY", "TINY", "V2", "AdapterProsody",
           "AppServer", "Device", "ModuleRecorder", "Relay", "RevokingAppServer", "Room",
           "Sender", "Serve", "until"]
