"""The sidecar's side of mod_pushrules: a Unix socket the module connects to (one connection per
Prosody VirtualHost), contract events in, publishes out.

It plays both parts the component transport and ``--socket`` play for ``pushrules serve``: the
event lines go to ``Sidecar.feed_lines`` (same parsing, engine, stores and outcomes), and
``publish`` is the dispatcher's ``send``: the publish IQ is written by
:mod:`pushrules.runtime.xmpp.publish` (``publish_xml``; the XEP-0357 form lives there only), and
the module sends it from the user's host and returns the app server's answer. The wire is
described at the top of ``mod_pushrules.lua``.

Applying: one task per connection applies its events in order. When the sidecar batches (a
single Redis, no time-based rule) the events waiting in the connection's inbox (up to
``BATCH_EVENTS``, up to an ``observed`` line) are applied together, one round trip for their
commits; otherwise one at a time. Each event's outcome is its own: its ``applied`` reply as
soon as it is final, its ack only once every event before it is final too.

Delivery of events: the module keeps every event until acknowledged (``ack``), and sends the
unacknowledged ones again after a reconnection; this side skips the ones it already applied
(same module run, same sequence number), so a sidecar that stays up applies each event once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from slixmpp import JID
from slixmpp.jid import InvalidJID

from pushrules.model.config import Config
from pushrules.model.events import ERROR_TYPES
from pushrules.model.records import Push
from pushrules.runtime.xmpp.publish import publish_xml
from pushrules.runtime.xmpp.sidecar import (
    BATCH_EVENTS,
    MAX_LINE_BYTES,
    READ_CHUNK,
    split_lines,
)
from pushrules.runtime.xmpp.transport import RESULT, TIMEOUT, Answer
from pushrules.runtime.xmpp.unixsocket import Listener, peer_uid

from .shadow import ShadowLog

log = logging.getLogger(__name__)

ACK_INTERVAL = 0.1
ANSWER_MARGIN = 5.0  # beyond the module's own IQ timeout: its answer (or its timeout) comes first
PAUSE_AT = 1000  # events read and not yet applied at which the module is asked to hold them
RESUME_AT = 100


class Feeder(Protocol):
    """What the bridge needs of the sidecar: ``feed_lines`` (events, each outcome told),
    whether it applies several together (``batching``), ``reject`` a line it could not read."""

    @property
    def batching(self) -> bool: ...

    async def feed_lines(self, lines: list[tuple[bytes | str, int, str]], source: str,
                         done: Callable[[int, bool], None]) -> None: ...

    def reject(self, message: str) -> None: ...

    def end_source(self, source: str) -> None: ...


class ShadowAnswer(Answer):
    """Shadow mode: nothing was sent (mod_cloud_notify sends); the decision is only compared."""

    __slots__ = ()

    def describe(self) -> str:
        return "shadow: not sent"


SHADOW = ShadowAnswer(ok=True)


@dataclass(frozen=True, slots=True)
class _Numbered:
    """One numbered line of the module (an event or, in shadow mode, an observed push)."""

    seq: int
    line: int
    message: dict[str, Any]


@dataclass
class _Applied:
    """What one module run (``boot``) of a host has had applied: every seq up to ``last``
    (the last one in order) and those in ``ahead`` (applied while an earlier one was still
    retried: acknowledged only once the earlier one is)."""

    boot: str
    last: int
    ahead: set[int] = field(default_factory=set)


@dataclass
class _Link:
    """One module connection (one VirtualHost)."""

    host: str
    boot: str
    shadow: bool
    writer: asyncio.StreamWriter
    waiting: dict[str, asyncio.Future[Answer]] = field(default_factory=dict)
    inbox: deque[_Numbered] = field(default_factory=deque)
    """Read, not yet applied (answers are read meanwhile: an event waiting for room in the
    outbox must not hold back the answers that make room)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    paused: bool = False
    applied: int = 0
    acked: int = 0

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write((json.dumps(message, separators=(",", ":")) + "\n").encode())


class ProsodyBridge:
    """The sidecar's transport for mod_pushrules. ``await bridge.serve_events(sidecar,
    listener)`` accepts module connections until cancelled; ``online`` is set while at least
    one module is connected; ``await bridge.publish(push)`` waits for the module of the push's
    host, sends through it and returns the answer."""

    def __init__(self, path: str, rules: Config, *, iq_timeout: float = 10.0,
                 shadow_window: float = 10.0, allowed_uids: Iterable[int] = ()) -> None:
        self.path = path
        self.rules = rules
        self.iq_timeout = iq_timeout
        self.allowed_uids = frozenset(allowed_uids)
        self.shadow = ShadowLog(window=shadow_window)
        self.online = asyncio.Event()
        self._links: dict[str, _Link] = {}
        self._host_online: dict[str, asyncio.Event] = {}
        self._applied: dict[str, _Applied] = {}  # host -> what its module run had applied
        # Publish ids unique across runs: a late answer to an earlier run's publish (the module
        # outlives a killed sidecar) must not answer this run's.
        self._run = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)
        self._connections = 0
        self._sidecar: Feeder | None = None
        self._reading = False
        # One by one (a store that does not batch): one event at a time across links, as the
        # sidecar tells an event's outcome by its ``accepted`` count then. Batched: each outcome
        # is told, so only a host's links wait for each other (a reconnection's link must not
        # apply what the old one's batch still applies: dedup by seq).
        self._feeding = asyncio.Lock()
        self._host_feeding: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the sidecar's transport interface ----------------------------------------------------
    async def start(self, timeout: float | None = 10.0) -> None:
        """Wait for a first module to connect; only warn when none does (Prosody may start
        later: pushes wait for it). Never raises."""
        try:
            await asyncio.wait_for(self.online.wait(), timeout)
        except TimeoutError:
            log.warning("no Prosody (mod_pushrules) connected to %s after %ss; pushes wait for "
                        "it (is pushrules_socket = %r in Prosody's config, and may Prosody's "
                        "user connect: --socket-group?)", self.path, timeout, self.path)

    async def close(self) -> None:
        self.online.clear()
        for link in list(self._links.values()):
            _unanswered(link)
            link.writer.close()
        self._links.clear()
        self.shadow.flush()

    async def serve_events(self, sidecar: Feeder, listener: Listener) -> None:
        """Accept module connections on ``listener`` and feed their events to ``sidecar`` until
        cancelled; then stop applying events (those not applied are not acknowledged: the
        module sends them to the next run) while publishes go on being answered."""
        self._sidecar = sidecar
        self._reading = True
        server = await asyncio.start_unix_server(self._on_connection, sock=listener.sock,
                                                 limit=READ_CHUNK)
        sweeper = asyncio.get_running_loop().create_task(self._sweep_shadow())
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._reading = False
            for task in list(self._tasks):
                task.cancel()
            sweeper.cancel()
            server.close()
            listener.close()

    async def publish(self, push: Push) -> Answer:
        """Send one publish from the user's host through its module; the answer (never raises)."""
        host = _host_of(push.user)
        link = await self._link(host)
        if link.shadow:
            self.shadow.decided(push)
            return SHADOW
        pid = f"{self._run}-{next(self._ids)}"
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        link.waiting[pid] = answer
        # The bytes the stanza classes write (publish_xml), without building them: the module
        # parses it and sets its own from and id.
        iq = publish_xml(push, self.rules, host, pid)
        link.send({"kind": "publish", "id": pid, "iq": iq, "timeout": self.iq_timeout})
        try:
            return await asyncio.wait_for(answer, self.iq_timeout + ANSWER_MARGIN)
        except TimeoutError:
            return TIMEOUT
        finally:
            link.waiting.pop(pid, None)

    async def _link(self, host: str) -> _Link:
        while (link := self._links.get(host)) is None or link.writer.is_closing():
            await self._host_online.setdefault(host, asyncio.Event()).wait()
        return link

    # --- one module connection ----------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        where = f"prosody connection {self._connections}"
        link: _Link | None = None
        tasks: list[asyncio.Task[None]] = []
        lines = split_lines(_chunks(reader))
        try:
            if not self._allowed(writer, where):
                return
            link = await self._hello(lines, writer, where)
            if link is None:
                return
            where = f"prosody {link.host} (connection {self._connections})"
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._ack_loop(link)),
                     loop.create_task(self._apply_loop(link, where))]
            self._tasks.update(tasks)
            number = 1
            async for line in lines:
                number += 1
                self._on_line(link, line, number, where)
        except ConnectionError as exc:
            log.warning("%s: %s", where, exc)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            if link is not None:
                self._drop(link, where)
                if self._sidecar is not None:
                    self._sidecar.end_source(where)
            writer.close()

    def _allowed(self, writer: asyncio.StreamWriter, where: str) -> bool:
        """Whether the peer may talk to us (--allowed-uid; our own uid always may)."""
        if not self.allowed_uids:
            return True
        sock = writer.get_extra_info("socket")
        try:
            uid = None if sock is None else peer_uid(sock)
        except OSError:
            uid = None
        if uid is not None and uid in self.allowed_uids | {os.getuid()}:
            return True
        log.error("%s: uid %s is not allowed to connect (allowed_uids); connection closed",
                  where, uid)
        return False

    async def _hello(self, lines: AsyncIterator[bytes | None], writer: asyncio.StreamWriter,
                     where: str) -> _Link | None:
        line = await anext(lines, b"")
        hello = _decode(line) if line is not None else f"longer than {MAX_LINE_BYTES} bytes"
        if isinstance(hello, dict):
            host, boot = hello.get("host"), hello.get("boot")
            if hello.get("kind") != "hello" or not isinstance(host, str) or not host \
                    or not isinstance(boot, str):
                hello = "not mod_pushrules' hello (kind, host and boot)"
        if not isinstance(hello, dict):
            if line != b"":  # (an empty first line or none: a probe, said nothing)
                self._reject(f"{where} line 1: {hello}; connection closed")
            return None
        link = _Link(str(host), str(boot), hello.get("shadow") is True, writer)
        window = hello.get("shadow_window")
        if link.shadow and isinstance(window, int | float) and window > 0:
            self.shadow.window = float(window)
        old = self._links.get(link.host)
        if old is not None:
            old.writer.close()
        self._links[link.host] = link
        self._host_online.setdefault(link.host, asyncio.Event()).set()
        self.online.set()
        log.info("mod_pushrules of %s connected%s", link.host,
                 " (shadow mode)" if link.shadow else "")
        return link

    def _on_line(self, link: _Link, line: bytes | None, number: int, where: str) -> None:
        """Handle one line at once: answers now, numbered lines into the inbox (in order)."""
        if line is None:
            self._reject(f"{where} line {number}: longer than {MAX_LINE_BYTES} bytes "
                         "(skipped to its end)")
            return
        if not line.strip():
            return
        message = _decode(line)
        if isinstance(message, str):
            self._reject(f"{where} line {number}: not a mod_pushrules line: {message}")
            return
        kind = message.get("kind")
        if kind == "answer":
            self._on_answer(link, message)
        elif kind in ("event", "observed"):
            seq = message.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or (
                    kind == "event" and not isinstance(message.get("event"), dict)):
                self._reject(f"{where} line {number}: {kind} line without an integer seq"
                             + (" and an event object" if kind == "event" else ""))
                return
            self._enqueue(link, _Numbered(seq, number, message))
        else:
            self._reject(f"{where} line {number}: unknown line kind {kind!r}")

    def _enqueue(self, link: _Link, item: _Numbered) -> None:
        link.inbox.append(item)
        link.wake.set()
        if not link.paused and len(link.inbox) >= PAUSE_AT:
            link.paused = True  # the module holds new events in its bounded buffer
            link.send({"kind": "pause"})

    async def _apply_loop(self, link: _Link, where: str) -> None:
        while self._reading:
            if not link.inbox:
                link.wake.clear()
                await link.wake.wait()
                continue
            together = self._feeder().batching
            items = _head(link.inbox, BATCH_EVENTS if together else 1)
            lock = (self._host_feeding.setdefault(link.host, asyncio.Lock()) if together
                    else self._feeding)
            async with lock:
                if self._reading:
                    if items:
                        await self._apply(link, items, where)
                    else:
                        self._observed(link, link.inbox[0])
            for _ in range(len(items) or 1):
                link.inbox.popleft()
            if link.paused and len(link.inbox) <= RESUME_AT:
                link.paused = False
                link.send({"kind": "resume"})

    def _observed(self, link: _Link, item: _Numbered) -> None:
        """Shadow mode: a push mod_cloud_notify sent, for the shadow log."""
        if self._first_time(link, item.seq):
            self.shadow.observed(item.message)
            self._done(link, item.seq)
        else:
            link.applied = max(link.applied, item.seq)

    async def _apply(self, link: _Link, items: list[_Numbered], where: str) -> None:
        """Apply the events ``items`` (the head of the inbox) in one ``feed_lines``, skipping
        those applied already. Each event's ``applied`` reply goes as soon as its outcome is
        final; it is acknowledged (and counted applied for the dedup) in order only: one
        applied while an earlier one is retried waits for it (until then it is in ``ahead``, so
        that a reconnection meanwhile skips it)."""
        fresh = self._fresh(link, items)
        chosen = set(fresh)
        final = [index not in chosen for index in range(len(items))]
        settled = 0

        def settle() -> None:  # the final items at the head: acked, the dedup's last
            nonlocal settled
            while settled < len(items) and final[settled]:
                if settled in chosen:
                    self._done(link, items[settled].seq)
                else:
                    link.applied = max(link.applied, items[settled].seq)
                settled += 1

        def done(number: int, ok: bool) -> None:
            index = fresh[number]
            item = items[index]
            final[index] = True
            if item.message.get("reply"):
                link.send({"kind": "applied", "seq": item.seq, "ok": ok,
                           **({} if ok else {"error": "rejected by the push service "
                                                      "(see its log)"})})
            settle()
            if settled <= index:
                self._record(link).ahead.add(item.seq)

        settle()
        # "prosody HOST (connection N, event S)"; times never decrease within one connection
        lines: list[tuple[bytes | str, int, str]] = [
            (json.dumps(items[index].message["event"]), items[index].line,
             f"{where[:-1]}, event {items[index].seq})") for index in fresh]
        if lines:
            await self._feeder().feed_lines(lines, where, done)

    def _fresh(self, link: _Link, items: list[_Numbered]) -> list[int]:
        """The indexes of the items to apply, as one by one would: an item is new unless
        applied already or not above an earlier new one (each applied one becomes the last:
        see ``_first_time``)."""
        fresh: list[int] = []
        top: int | None = None
        for index, item in enumerate(items):
            if self._first_time(link, item.seq) and (top is None or item.seq > top):
                fresh.append(index)
                top = item.seq
        return fresh

    def _feeder(self) -> Feeder:
        assert self._sidecar is not None, "serve_events() sets the sidecar"
        return self._sidecar

    def _reject(self, message: str) -> None:
        self._feeder().reject(message)

    def _first_time(self, link: _Link, seq: int) -> bool:
        """Whether the numbered line ``seq`` is new; a line sent again after a reconnection of
        the same module run was applied already (it is acked again, not applied)."""
        applied = self._applied.get(link.host)
        return (applied is None or applied.boot != link.boot
                or (seq > applied.last and seq not in applied.ahead))

    def _record(self, link: _Link) -> _Applied:
        """What the link's module run had applied (a new run starts afresh)."""
        applied = self._applied.get(link.host)
        if applied is None or applied.boot != link.boot:
            applied = self._applied[link.host] = _Applied(link.boot, 0)
        return applied

    def _done(self, link: _Link, seq: int) -> None:
        """The numbered line ``seq`` is applied: acked from now on, never applied again."""
        applied = self._record(link)
        applied.last = seq
        if applied.ahead:
            applied.ahead = {later for later in applied.ahead if later > seq}
        link.applied = max(link.applied, seq)

    def _on_answer(self, link: _Link, message: dict[str, Any]) -> None:
        waiter = link.waiting.get(str(message.get("id")))
        if waiter is None or waiter.done():
            return  # answered after our own timeout, or to an earlier run
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
            self._host_online.setdefault(link.host, asyncio.Event()).clear()
            if not self._links:
                self.online.clear()
            log.warning("%s: disconnected; its pushes wait for it to come back", where)
        _unanswered(link)

    async def _sweep_shadow(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.shadow.sweep()


def _head(inbox: deque[_Numbered], most: int) -> list[_Numbered]:
    """The events at the head of the inbox to apply together: at most ``most``, and none past
    an observed line (shadow mode: handled alone, in order with the events around it)."""
    items: list[_Numbered] = []
    for item in itertools.islice(inbox, most):
        if item.message.get("kind") == "observed":
            break
        items.append(item)
    return items


def _unanswered(link: _Link) -> None:
    for waiter in link.waiting.values():
        if not waiter.done():
            waiter.set_result(TIMEOUT)  # sent or not, unanswered: the dispatcher retries


def _decode(line: bytes) -> dict[str, Any] | str:
    """One line's JSON object, or why it is not one."""
    try:
        message = json.loads(line)
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 at byte {exc.start + 1}"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        return "not accepted JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer longer than Python converts
        return f"not accepted JSON: {exc}"
    if not isinstance(message, dict):
        return f"not a JSON object but {type(message).__name__}"
    return message


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_CHUNK):
        yield chunk


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
