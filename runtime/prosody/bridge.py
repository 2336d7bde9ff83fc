"""The sidecar's side of mod_pushrules: a Unix socket the module connects to (one connection per
Prosody VirtualHost), contract events in, publishes out.

It plays both parts the component transport and ``--socket`` play for ``pushrules serve``: every
event line goes to ``Sidecar.feed`` (same parsing, engine, stores and outcomes), and ``publish``
is the dispatcher's ``send``: the publish IQ is built by :mod:`pushrules.runtime.xmpp.publish`
(the XEP-0357 form lives there only) and the module sends it from the user's host and returns
the app server's answer. The wire is described at the top of ``mod_pushrules.lua``.

Delivery of events: the module keeps every event until acknowledged (``ack``), and sends the
unacknowledged ones again after a reconnection; this side skips the ones it already applied
(same module run, same sequence number), so a sidecar that stays up applies each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import Any, Protocol

from slixmpp import JID
from slixmpp.jid import InvalidJID

from pushrules.model.config import Config
from pushrules.model.events import ERROR_TYPES
from pushrules.model.records import Push
from pushrules.runtime.xmpp.publish import build_publish
from pushrules.runtime.xmpp.transport import RESULT, TIMEOUT, Answer

from .shadow import ShadowLog

log = logging.getLogger(__name__)

LINE_LIMIT = 16 * 1024 * 1024
ACK_INTERVAL = 0.1
ANSWER_MARGIN = 5.0  # beyond the module's own IQ timeout: its answer (or its timeout) comes first


class Feeder(Protocol):
    """What the bridge needs of the sidecar: ``feed`` one line and the count of applied ones."""

    accepted: int

    async def feed(self, raw: bytes | str, number: int, where: str = ...) -> None: ...


class ShadowAnswer(Answer):
    """Shadow mode: nothing was sent (mod_cloud_notify sends); the decision is only compared."""

    __slots__ = ()

    def describe(self) -> str:
        return "shadow: not sent"


SHADOW = ShadowAnswer(ok=True)


def open_listener(path: str, mode: int = 0o600, group: int | None = None) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale socket there is replaced; any other file is
    an error), readable by its owner only unless ``mode``/``group`` say otherwise."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ValueError(f"--prosody {path}: exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # never world-connectable, not even for an instant
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ValueError(f"--prosody {path}: cannot listen: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, -1, group)
    sock.listen(16)
    sock.setblocking(False)
    return sock


@dataclass
class _Link:
    """One module connection (one VirtualHost)."""

    host: str
    boot: str
    shadow: bool
    writer: asyncio.StreamWriter
    waiting: dict[str, asyncio.Future[Answer]] = field(default_factory=dict)
    applied: int = 0
    acked: int = 0

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write((json.dumps(message, separators=(",", ":")) + "\n").encode())


class ProsodyBridge:
    """``await bridge.serve_events(sidecar)`` listens at ``path`` until cancelled;
    ``await bridge.publish(push)`` sends through the module of the push's host."""

    def __init__(self, path: str, rules: Config, *, iq_timeout: float = 10.0,
                 shadow_window: float = 10.0, mode: int = 0o600,
                 group: int | None = None) -> None:
        self.path = path
        self.rules = rules
        self.iq_timeout = iq_timeout
        self.shadow = ShadowLog(window=shadow_window)
        self._links: dict[str, _Link] = {}
        self._online: dict[str, asyncio.Event] = {}
        self._applied: dict[str, tuple[str, int]] = {}  # host -> (module boot, last seq applied)
        self._ids = itertools.count(1)
        self._connections = 0
        self._sidecar: Feeder | None = None
        self._first = asyncio.Event()
        # Bound now, so that a bad path fails the start with its reason, before anything runs.
        self._sock = open_listener(path, mode, group)

    # --- the sidecar's transport interface ----------------------------------------------------
    async def start(self, timeout: float | None = 10.0) -> None:
        """Wait for a first module to connect; only warn when none does (it may come later)."""
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except TimeoutError:
            log.warning("no Prosody (mod_pushrules) connected to %s after %ss; pushes wait for "
                        "it (is pushrules_socket = %r in Prosody's config?)", self.path,
                        timeout, self.path)

    async def close(self) -> None:
        for link in list(self._links.values()):
            link.writer.close()
        self.shadow.flush()

    async def serve_events(self, sidecar: Feeder) -> None:
        """Accept module connections and feed their events to ``sidecar`` until cancelled."""
        self._sidecar = sidecar
        server = await asyncio.start_unix_server(self._on_connection, sock=self._sock,
                                                 limit=LINE_LIMIT)
        sweeper = asyncio.get_running_loop().create_task(self._sweep_shadow())
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            sweeper.cancel()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def publish(self, push: Push) -> Answer:
        """Send one publish from the user's host through its module; the answer (never raises)."""
        host = _host_of(push.user)
        link = await self._link(host)
        if link.shadow:
            self.shadow.decided(push)
            return SHADOW
        pid = f"p{next(self._ids)}"
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        link.waiting[pid] = answer
        iq = build_publish(push, self.rules, sender=host)
        link.send({"kind": "publish", "id": pid, "iq": str(iq), "timeout": self.iq_timeout})
        try:
            return await asyncio.wait_for(answer, self.iq_timeout + ANSWER_MARGIN)
        except TimeoutError:
            return TIMEOUT
        finally:
            link.waiting.pop(pid, None)

    async def _link(self, host: str) -> _Link:
        while (link := self._links.get(host)) is None or link.writer.is_closing():
            await self._online.setdefault(host, asyncio.Event()).wait()
        return link

    # --- one module connection ----------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        where = f"prosody connection {self._connections}"
        link: _Link | None = None
        acker: asyncio.Task[None] | None = None
        try:
            link = await self._hello(reader, writer, where)
            if link is None:
                return
            where = f"prosody {link.host} (connection {self._connections})"
            acker = asyncio.get_running_loop().create_task(self._ack_loop(link))
            await self._read_lines(reader, link, where)
        except (ValueError, asyncio.LimitOverrunError):
            log.error("%s: a line longer than %d bytes; connection closed", where, LINE_LIMIT)
        except ConnectionError as exc:
            log.warning("%s: %s", where, exc)
        finally:
            if acker is not None:
                acker.cancel()
            if link is not None:
                self._drop(link, where)
            writer.close()

    async def _hello(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     where: str) -> _Link | None:
        line = await reader.readline()
        try:
            hello = json.loads(line)
            host, boot = str(hello["host"]), str(hello["boot"])
            if hello.get("kind") != "hello" or not host:
                raise KeyError("kind")
        except (ValueError, KeyError, TypeError):
            log.error("%s: the first line is not mod_pushrules' hello: %.200r", where, line)
            return None
        link = _Link(host, boot, bool(hello.get("shadow")), writer)
        window = hello.get("shadow_window")
        if link.shadow and isinstance(window, int | float) and window > 0:
            self.shadow.window = float(window)
        old = self._links.get(host)
        if old is not None and old is not link:
            old.writer.close()
        self._links[host] = link
        self._online.setdefault(host, asyncio.Event()).set()
        self._first.set()
        log.info("mod_pushrules of %s connected%s", host, " (shadow mode)" if link.shadow else "")
        return link

    async def _read_lines(self, reader: asyncio.StreamReader, link: _Link, where: str) -> None:
        while line := await reader.readline():
            try:
                message = json.loads(line)
                kind = message["kind"]
            except (ValueError, KeyError, TypeError):
                log.error("%s: not a mod_pushrules line: %.200r", where, line)
                continue
            if kind == "event":
                await self._on_event(link, message, where)
            elif kind == "answer":
                self._on_answer(link, message)
            elif kind == "observed":
                if self._first_time(link, message.get("seq")):
                    self.shadow.observed(message)
                    self._done(link, message.get("seq"))
            else:
                log.error("%s: unknown line kind %r", where, kind)

    async def _on_event(self, link: _Link, message: dict[str, Any], where: str) -> None:
        seq = message.get("seq")
        data = message.get("event")
        if not isinstance(seq, int) or not isinstance(data, dict):
            log.error("%s: an event line without seq or event: %.200r", where, message)
            return
        if not self._first_time(link, seq):
            return
        assert self._sidecar is not None
        before = self._sidecar.accepted
        await self._sidecar.feed(json.dumps(data), seq, where)
        ok = self._sidecar.accepted > before
        self._done(link, seq)
        if message.get("reply"):
            link.send({"kind": "applied", "seq": seq, "ok": ok,
                       **({} if ok else {"error": "rejected by the push service (see its log)"})})

    def _first_time(self, link: _Link, seq: object) -> bool:
        """Whether the numbered line ``seq`` is new; a line sent again after a reconnection of
        the same module run was applied already (it is acked again, not applied)."""
        if not isinstance(seq, int):
            return True
        boot, last = self._applied.get(link.host, ("", 0))
        if boot == link.boot and seq <= last:
            link.applied = max(link.applied, seq)
            return False
        return True

    def _done(self, link: _Link, seq: object) -> None:
        """The numbered line ``seq`` is applied: acked from now on, never applied again."""
        if isinstance(seq, int):
            self._applied[link.host] = (link.boot, seq)
            link.applied = max(link.applied, seq)

    def _on_answer(self, link: _Link, message: dict[str, Any]) -> None:
        waiter = link.waiting.get(str(message.get("id")))
        if waiter is None or waiter.done():
            return  # answered after our own timeout
        waiter.set_result(read_answer(message))

    async def _ack_loop(self, link: _Link) -> None:
        while True:
            if link.applied > link.acked:
                link.acked = link.applied
                link.send({"kind": "ack", "upto": link.acked})
            await asyncio.sleep(ACK_INTERVAL)

    def _drop(self, link: _Link, where: str) -> None:
        if self._links.get(link.host) is link:
            del self._links[link.host]
            self._online.setdefault(link.host, asyncio.Event()).clear()
            log.warning("%s: disconnected; its pushes wait for it to come back", where)
        for waiter in link.waiting.values():
            if not waiter.done():
                waiter.set_result(TIMEOUT)  # sent or not, unanswered: the dispatcher retries

    async def _sweep_shadow(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.shadow.sweep()


def read_answer(message: dict[str, Any]) -> Answer:
    """The module's report of one publish as the transport's Answer."""
    if message.get("ok") is True:
        return RESULT
    if message.get("timeout") is True:
        return TIMEOUT
    error_type = message.get("error_type")
    condition = message.get("condition")
    return Answer(ok=False, error_type=error_type if error_type in ERROR_TYPES else None,
                  condition=condition if isinstance(condition, str) else None)


def _host_of(user: str) -> str:
    try:
        return JID(user).domain
    except InvalidJID:
        return user.rpartition("@")[2]
