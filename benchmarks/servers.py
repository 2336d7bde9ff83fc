"""A real Prosody on 127.0.0.1 with its own config and data dir, and an app-server component
(slixmpp) that records every publish and answers result, wait, cancel or nothing.

Installed (pushrules.benchmarks.servers) because `pushrules bench --serve` starts them too; the
integration tests import them from here (tests/integration/harness.py)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from slixmpp import ComponentXMPP, Iq
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from pushrules.runtime.xmpp.publish import Published, parse_publish

DOMAIN = "localhost"
PUSH_JID = "pushrules.localhost"
PUSH_SECRET = "component-secret-pushrules"
APP_JIDS = ("app.localhost", "app2.localhost")
APP_SECRET = "component-secret-app"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CONDITIONS = {"wait": "resource-constraint", "cancel": "item-not-found",
              "auth": "not-authorized", "modify": "bad-request"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prosody:
    """``prosody -F --config`` in ``root``; listens only on the component port it is given."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "prosody.log"

    def config(self) -> str:
        components = [
            f'Component "{PUSH_JID}"\n    component_secret = "{PUSH_SECRET}"',
            *(f'Component "{jid}"\n    component_secret = "{APP_SECRET}"' for jid in APP_JIDS),
        ]
        return "\n".join([
            "daemonize = false",
            "run_as_root = true",  # CI runs as root; this Prosody is ours and short-lived
            f'pidfile = "{self.root}/prosody.pid"',
            f'data_path = "{self.root}/data"',
            f'certificates = "{self.root}/certs"',
            f'log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{self.log}" }} }}',
            'modules_enabled = { "disco" }',
            'modules_disabled = { "posix", "offline" }',
            "c2s_ports = { }", "s2s_ports = { }", "http_ports = { }", "https_ports = { }",
            "c2s_direct_tls_ports = { }", "s2s_direct_tls_ports = { }",
            'interfaces = { "127.0.0.1" }',
            f"component_ports = {{ {self.port} }}",
            'component_interface = "127.0.0.1"',
            f'VirtualHost "{DOMAIN}"',
            *components,
            "",
        ])

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("prosody")
        if binary is None:
            raise FileNotFoundError("prosody")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "certs").mkdir(exist_ok=True)
        cfg = self.root / "prosody.cfg.lua"
        cfg.write_text(self.config())
        self.process = subprocess.Popen(
            [binary, "-F", "--config", str(cfg)], cwd=self.root,
            stdout=subprocess.DEVNULL, stderr=(self.root / "stderr.log").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.process.returncode}: "
                                   f"{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prosody did not open port {self.port}: {self.tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self) -> str:
        text = ""
        for path in (self.root / "stderr.log", self.log):
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text


@dataclass
class Received:
    sender: str
    to: str
    publish: Published
    answer: str
    at: float = field(default_factory=time.monotonic)


class AppServer(ComponentXMPP):
    """Records every publish; answers per node from a script (then ``default``): "result",
    "wait", "cancel", "auth", "modify", "notype" (an <error/> without type), "client-ns-wait"
    (slixmpp's Error plugin: the error in jabber:client) or "none"."""

    def __init__(self, jid: str, port: int, default: str = "result") -> None:
        super().__init__(jid, APP_SECRET, "127.0.0.1", port)  # type: ignore[no-untyped-call]
        self.default = default
        self.script: dict[str, deque[str]] = defaultdict(deque)
        self.delay: dict[str, float] = {}
        self.received: list[Received] = []
        self.online = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.online.set())
        self.add_event_handler("disconnected", lambda _: self.online.clear())
        self.register_handler(Callback("publish", StanzaPath("iq@type=set/pubsub/publish"),
                                       self._on_publish))  # type: ignore[arg-type]

    async def start(self) -> AppServer:
        self.connect()
        await asyncio.wait_for(self.online.wait(), 10)
        return self

    async def stop(self) -> None:
        if self.is_connected():
            await self.disconnect(wait=1.0)

    def answer(self, node: str, *answers: str) -> None:
        self.script[node].extend(answers)

    def for_node(self, node: str) -> list[Received]:
        return [r for r in self.received if r.publish.node == node]

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} publishes arrived, not {count}")
            await asyncio.sleep(0.02)
        return self.received

    def _on_publish(self, iq: Iq) -> None:
        publish = parse_publish(iq)
        queue = self.script.get(publish.node)
        answer = queue.popleft() if queue else self.default
        self.received.append(Received(str(iq["from"]), str(iq["to"]), publish, answer))
        delay = self.delay.get(publish.node, 0.0)
        if delay:
            self.loop.call_later(delay, self._reply, iq, answer)
        else:
            self._reply(iq, answer)

    def _reply(self, iq: Iq, answer: str) -> None:
        if answer == "none" or not self.is_connected():
            return
        reply = iq.reply(clear=True)  # type: ignore[no-untyped-call]
        if answer == "client-ns-wait":
            # slixmpp's own Error plugin: <error xmlns='jabber:client' type='wait'>
            reply["type"] = "error"
            reply["error"]["type"] = "wait"
            reply["error"]["condition"] = "resource-constraint"
        elif answer != "result":
            reply["type"] = "error"
            # In the component namespace: slixmpp's Error plugin would write jabber:client,
            # which Prosody reads as an error without type (prosody-observed.md, note 8).
            error = ET.SubElement(reply.xml, f"{{{self.default_ns}}}error")
            if answer != "notype":
                error.set("type", answer)
            ET.SubElement(error, f"{{{STANZAS_NS}}}{CONDITIONS.get(answer, 'undefined-condition')}")
        reply.send()
