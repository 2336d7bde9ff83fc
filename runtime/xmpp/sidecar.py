"""`pushrules serve`: contract events in (JSON lines on stdin or a Unix socket), pushes out over
XMPP, one outcome per push as a JSON line on stdout.

Input: every line is applied or rejected with ``error: <where> line N[, field 'x']: <reason>
(line rejected)`` on stderr, and reading goes on (a server feeding it live must not be cut off
by one bad event): lines longer than ``MAX_LINE_BYTES`` are rejected while being read (never
held whole), as are bad UTF-8, bad JSON and anything unexpected; an impossible event is a
warning and skipped, as in ``replay``. Nothing is applied from a rejected line, and no
traceback is printed.

Durability: over a store, each decided push is in the store's outbox from the commit that
decided it until answered; a new run sends again what an earlier one left. Reading waits while
more than ``max_outbox`` pushes are pending (backpressure). On SQLite the events of ``COMMIT_EVERY``
share one transaction (a savepoint each), committed before any push they decided is sent: a
crash loses at most those few milliseconds of events, never a decided push that went out. On a
single Redis the lines read together (up to ``BATCH_EVENTS``) are applied in one round trip
(``StoredEngine.handle_many``: their commits in one pipeline, each landing or refused whole,
their pushes sent only once their commits landed), and the send counts of a loop iteration go
in one pipeline, before those sends.

Exits: SIGTERM/SIGINT or the end of stdin: stop reading, wait up to ``shutdown_grace`` for the
decided pushes to be answered, report the rest, exit 0. The component refused (secret), the
server unreachable within ``connect_timeout``, the store or the socket unusable: ``error: …``
naming the cause, exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from pushrules.model.config import Config
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime import trace
from pushrules.runtime.engine import Engine
from pushrules.runtime.trace import TraceError, parse_event

from .clock import DueTimer
from .dispatcher import Dispatcher, Outcome, RetryPolicy
from .logs import format_line
from .metrics import open_metrics
from .outcomes import OutcomeWriter
from .transport import ComponentRefused, PushTransport
from .unixsocket import Listener, SocketPathError, open_listener, peer_uid

log = logging.getLogger(__name__)

MEMORY_STORES = ("", "memory", "memory:")
STORE_RETRY_SECONDS = 15.0
"""Default retry budget for an event the store refuses as unavailable: covers a Redis Cluster
failover at cluster-node-timeout 5 s (failure detection plus election, ~7 s)."""
MAX_LINE_BYTES: int = trace.MAX_LINE_BYTES
"""The longest input line accepted, in bytes (the trace module's limit when it has one)."""
READ_CHUNK = 64 * 1024
LOOP_TURN = 0.001
"""Seconds of reading after which the reader lets the other tasks (publishes, answers) run."""
BATCH_EVENTS = 64
"""Lines read at once that a store which batches (a single Redis) applies in one round trip."""
COMMIT_EVERY = 0.002
"""Seconds a store that can (SQLite) holds events in one transaction; the dispatcher commits it
sooner when it sends a push decided meanwhile."""
FAILED = 1


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    component_jid: str
    component_secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 5347
    rules: Config = field(default_factory=Config)
    iq_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 30.0
    shutdown_grace: float = 30.0
    max_in_flight: int = 512
    max_outbox: int = 10_000
    """Pending pushes above which reading waits (backpressure)."""
    store: str = "memory:"
    socket: str | None = None
    socket_group: str | None = None
    """Group allowed to connect (the socket is then 0660, else 0600)."""
    allowed_uids: tuple[int, ...] = ()
    """When set, only these uids (and our own) may send on the socket (SO_PEERCRED)."""
    prosody: str | None = None  # mod_pushrules' Unix socket: events in, publishes out
    metrics: str | None = None
    """HOST:PORT of the /metrics and /healthz listener (none without)."""
    store_retry_seconds: float = STORE_RETRY_SECONDS
    """How long an event the store refuses as unavailable is retried before it is rejected."""


@dataclass(frozen=True, slots=True)
class _Read:
    """A line of a batch read as an event: its place among the caller's lines, its number
    and ``where`` (for messages)."""

    index: int
    number: int
    where: str
    event: Any


def _no_outcome(index: int, applied: bool) -> None:
    """``feed_many``'s callers count outcomes with ``accepted``."""


def make_engine(store_url: str, rules: Config) -> Engine:
    """The in-memory engine, or the engine over the store named by ``store_url``."""
    if store_url in MEMORY_STORES:
        return Engine(rules)
    from pushrules.runtime.store import StoredEngine, StoreError, open_store

    try:
        return StoredEngine(open_store(store_url), rules)
    except StoreError as exc:
        raise ValueError(str(exc)) from None


def _transient_errors() -> tuple[type[Exception], ...]:
    from pushrules.runtime.store import StoreUnavailable

    return (StoreUnavailable,)


class Sidecar:
    def __init__(self, settings: SidecarSettings, out: TextIO, err: TextIO, *,
                 engine: Engine | None = None, transport: Any = None) -> None:
        self.settings = settings
        self.out = out
        self.err = err
        self.outcomes = OutcomeWriter(out)
        self.engine = engine or make_engine(settings.store, settings.rules)
        if transport is None and settings.prosody:
            from pushrules.runtime.prosody.bridge import ProsodyBridge

            transport = ProsodyBridge(settings.prosody, settings.rules,
                                      iq_timeout=settings.iq_timeout,
                                      allowed_uids=settings.allowed_uids)
        self.transport = transport or PushTransport(
            settings.component_jid, settings.component_secret, settings.host, settings.port,
            settings.rules, iq_timeout=settings.iq_timeout)
        self.metrics = open_metrics(settings.metrics)
        self.dispatcher = Dispatcher(self.engine, self.transport.publish, settings.retry,
                                     on_outcome=self._print_outcome,
                                     max_in_flight=settings.max_in_flight, metrics=self.metrics,
                                     ready=self.transport.online.wait)
        self.metrics.watch(outbox=lambda: self.dispatcher.pending,
                           xmpp_up=self.transport.online.is_set,
                           store=getattr(self.engine, "store", None))
        self._transient = _transient_errors()
        self.timer = DueTimer(self.engine, self.dispatcher)  # time-based rules live (clock.py)
        self.rejected = 0
        self.accepted = 0
        self.resent = 0
        self.fatal: str | None = None
        self._stop = asyncio.Event()
        self._failed = asyncio.Event()
        self._hurry = asyncio.Event()
        self._signals = 0
        self._connections: set[asyncio.StreamWriter] = set()
        self._last_at: dict[str, float] = {}  # per input stream: the last event's `at`

    # --- one line ----------------------------------------------------------------------------
    async def feed(self, raw: bytes | str, number: int, where: str = "stdin",
                   source: str | None = None) -> None:
        """Apply one input line, or reject it on stderr naming the line and why; never
        raises. Waits while too many pushes are pending, and while the store is briefly
        unavailable (the same event again is safe). ``source`` (default: ``where``) names the
        stream the line belongs to: times (``at``) never decrease within one."""
        try:
            await self.dispatcher.room(self.settings.max_outbox)
            await self._apply(raw, number, where, source or where)
        except Exception as exc:  # a defect must cost one line, not the reader
            self._reject(f"{where} line {number}: not applied: internal error "
                         f"({type(exc).__name__}: {exc})")

    def _event_of(self, raw: bytes | str, number: int, where: str, source: str) -> Any:
        """The line's event, or None (blank, a comment, or rejected: malformed, out of time)."""
        event = self._parse(raw, number, where)
        if event is None or not self._in_time(event, number, where, source):
            return None
        return event

    def _retry_delay(self, attempt: int, give_up: float) -> float:
        """The backoff before the next try of an event the store refused as unavailable
        (<= 0: give up; ``_gave_up`` says so)."""
        return min(0.05 * 2.0 ** attempt, 1.0, give_up - time.monotonic())

    def _gave_up(self, number: int, where: str, event: Any, exc: Exception) -> None:
        self._reject(f"{where} line {number}: {event.EVENT} not applied: {exc} "
                     f"(retried for {self.settings.store_retry_seconds:g} s)")

    def _too_long(self, number: int, where: str) -> None:
        self._reject(f"{where} line {number}: longer than {MAX_LINE_BYTES} bytes "
                     "(skipped to its end)")

    async def _apply(self, raw: bytes | str, number: int, where: str, source: str) -> None:
        event = self._event_of(raw, number, where, source)
        if event is None:
            return
        event = self.timer.stamp(event)
        give_up = time.monotonic() + self.settings.store_retry_seconds
        for attempt in itertools.count():
            try:
                self.dispatcher.handle(event, lane=source)
                break
            except self._transient as exc:
                delay = self._retry_delay(attempt, give_up)
                if delay <= 0:
                    self._gave_up(number, where, event, exc)
                    return
                await asyncio.sleep(delay)
            except ImpossibleEvent as exc:
                self._say(f"warning: {where} line {number}: skipped impossible event: {exc}")
                return
            except Exception as exc:  # e.g. a store that is corrupt: name the line, go on
                self._reject(f"{where} line {number}: {event.EVENT} not applied: "
                             f"{type(exc).__name__}: {exc}")
                return
        self.accepted += 1
        self.metrics.event(event.EVENT)
        self.timer.after_event()

    # --- several lines at once (a store that batches: one round trip for all) ------------------
    @property
    def batching(self) -> bool:
        """Lines read together are applied together: the store sends their commits in one
        round trip (a single Redis). With a time-based rule on, one by one (each event is
        stamped with the clock after the one before it)."""
        store = getattr(self.engine, "store", None)
        return (bool(getattr(store, "batches", False)) and hasattr(self.engine, "handle_many")
                and not self.timer.on)

    async def feed_many(self, lines: list[tuple[bytes | None, int]], where: str,
                        source: str | None = None) -> None:
        """``feed`` for several lines read at once (``None``: a line over the limit), applied
        in one batch when the store batches; every line is applied or rejected, in order
        within each user. Never raises."""
        if not self.batching:
            for raw, number in lines:
                await self._line(raw, number, where)
            return
        await self._feed_batch([(raw, number, where) for raw, number in lines],
                               source or where, where, _no_outcome)

    async def feed_lines(self, lines: list[tuple[bytes | str, int, str]], source: str,
                         done: Callable[[int, bool], None]) -> None:
        """``feed_many`` for lines each named by its own ``where`` (the Prosody bridge: one
        module event each), all from the stream ``source``: its time order, and its engine
        lane (a retry after StoreUnavailable resends that stream's own commits).
        ``done(index, applied)`` is called once per line, as soon as its outcome is final
        (applied, or rejected or skipped as ``feed`` says): not always in order, as another
        user's event may be final while an earlier one is retried. One batch when the store
        batches; otherwise one by one through ``feed``, ``applied`` read from ``accepted``
        (the caller then feeds one line at a time). Never raises."""
        if not self.batching:
            for index, (raw, number, where) in enumerate(lines):
                before = self.accepted
                await self.feed(raw, number, where, source)
                done(index, self.accepted > before)
            return
        await self._feed_batch(list(lines), source, source, done)

    async def _feed_batch(self, lines: list[tuple[bytes | str | None, int, str]], source: str,
                          lane: str, done: Callable[[int, bool], None]) -> None:
        events: list[_Read] = []
        for index, (raw, number, where) in enumerate(lines):
            event = self._batch_event(raw, number, where, source)
            if event is None:
                done(index, False)
            else:
                events.append(_Read(index, number, where, event))
        bound = self.settings.max_outbox
        while events:
            # Backpressure as line by line: no more events at once than the outbox has room
            # for at one push each (one event when it is full).
            await self.dispatcher.room(bound)
            take = max(1, bound - self.dispatcher.pending)
            await self._apply_many(events[:take], lane, done)
            events = events[take:]

    def _batch_event(self, raw: bytes | str | None, number: int, where: str,
                     source: str) -> Any:
        """The line's event (as ``_event_of``), or None: rejected here or nothing to apply."""
        if raw is None:
            self._too_long(number, where)
            return None
        try:
            return self._event_of(raw, number, where, source)
        except Exception as exc:  # a defect must cost one line, not the reader
            self._reject(f"{where} line {number}: not applied: internal error "
                         f"({type(exc).__name__}: {exc})")
            return None

    async def _apply_many(self, events: list[_Read], lane: str,
                          done: Callable[[int, bool], None]) -> None:
        """Apply the batch; events the store refused as unavailable are retried (in order, in
        the same lane) for ``store_retry_seconds``, then rejected; the others are applied or
        rejected. ``done`` is told each event's outcome once it is final."""
        give_up = time.monotonic() + self.settings.store_retry_seconds
        for attempt in itertools.count():
            try:
                results = self.dispatcher.handle_many([read.event for read in events], lane=lane)
            except Exception as exc:  # a defect costs this batch's lines, not the reader
                for read in events:
                    self._reject(f"{read.where} line {read.number}: {read.event.EVENT} not "
                                 f"applied: internal error ({type(exc).__name__}: {exc})")
                    done(read.index, False)
                return
            again: list[tuple[_Read, Exception]] = []
            for read, handled in zip(events, results, strict=True):
                if self._outcome(read, handled.error):
                    again.append((read, handled.error))
                else:
                    done(read.index, handled.error is None)
            if not again:
                return
            delay = self._retry_delay(attempt, give_up)
            if delay <= 0:
                for read, error in again:
                    self._gave_up(read.number, read.where, read.event, error)
                    done(read.index, False)
                return
            await asyncio.sleep(delay)
            events = [read for read, _ in again]

    def _outcome(self, read: _Read, error: Exception | None) -> bool:
        """Count or report one event's outcome; True when it is to be retried."""
        if error is None:
            self.accepted += 1
            self.metrics.event(read.event.EVENT)
        elif isinstance(error, self._transient):
            return True
        elif isinstance(error, ImpossibleEvent):
            self._say(f"warning: {read.where} line {read.number}: skipped impossible event: "
                      f"{error}")
        else:
            self._reject(f"{read.where} line {read.number}: {read.event.EVENT} not applied: "
                         f"{type(error).__name__}: {error}")
        return False

    def _parse(self, raw: bytes | str, number: int, where: str) -> Any:
        """The line's event, or None (blank, comment, or rejected here)."""
        if isinstance(raw, bytes):
            if len(raw) > MAX_LINE_BYTES:
                self._reject(f"{where} line {number}: longer than {MAX_LINE_BYTES} bytes")
                return None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._reject(f"{where} line {number}: not valid UTF-8 at byte {exc.start + 1} "
                             f"({raw[exc.start]:#04x})")
                return None
        else:
            text = raw
        text = text.strip()
        if not text or text.startswith("#"):
            return None
        try:
            # One parse path (runtime/trace.py): JSON limits, fields, JIDs; TraceError only.
            return parse_event(text, number)
        except TraceError as exc:
            self._reject(f"{where} {exc}")
        return None

    def _in_time(self, event: Any, number: int, where: str, source: str) -> bool:
        """Contract v2: an ``at`` earlier than the one before it in the same stream is a
        malformed line (as in replay); each stream has its own (their clocks may differ)."""
        at = event.at
        if at is None:
            return True
        last = self._last_at.get(source)
        if last is not None and at < last:
            late = TraceError(number, f"{at!r} is earlier than the previous event's {last!r} "
                                      "(times never decrease)", "at")
            self._reject(f"{where} {late}")
            return False
        self._last_at[source] = at
        return True

    def end_source(self, source: str) -> None:
        """A stream ended (a connection closed): forget its last time, and what its engine
        lane kept for a retry that will not come."""
        self._last_at.pop(source, None)
        end_lane = getattr(self.engine, "end_lane", None)
        if end_lane is not None:
            end_lane(source)

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.metrics.rejected(message)
        self._say(f"error: {message} (line rejected)")

    def reject(self, message: str) -> None:
        """Reject a line read elsewhere (the Prosody bridge), counted like every other."""
        self._reject(message)

    def _say(self, message: str) -> None:
        self.err.write(format_line(message) + "\n")
        self.err.flush()

    def _print_outcome(self, outcome: Outcome) -> None:
        self.outcomes.write(outcome.to_json())

    # --- running -----------------------------------------------------------------------------
    def stop(self) -> None:
        """The first call (a signal) stops reading and starts the grace; a second one ends
        the grace."""
        self._signals += 1
        if self._signals > 1:
            self._hurry.set()
        self._stop.set()

    def _fail(self, message: str) -> None:
        if self.fatal is None:
            self.fatal = message
            self._failed.set()
            self._say(f"error: {message}")
        self._stop.set()

    async def run(self, stdin: BinaryIO | None = None) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_loop_errors)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self._defer_commits(loop)
        listener = self._open_socket() if self.settings.socket or self.settings.prosody else None
        if self.fatal is not None or not self._resume():
            if listener is not None:
                listener.close()
            await self.transport.close()
            return FAILED
        # Input is read from the start: pushes decided before the connection is up wait for it.
        connecting = loop.create_task(self._connect())
        reader: asyncio.Task[None]
        serve_events = getattr(self.transport, "serve_events", None)  # e.g. the Prosody bridge
        if serve_events is not None:
            reader = loop.create_task(serve_events(self, listener))
        elif listener is not None:
            reader = loop.create_task(self._serve_socket(listener))
        else:
            reader = loop.create_task(self._read_stdin(stdin or sys.stdin.buffer))
        stopper = loop.create_task(self._stop.wait())
        timer = loop.create_task(self.timer.run())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()  # end of input is a stop too: connections still open are closed
        reader.cancel()
        self.timer.stop()
        timer.cancel()
        await asyncio.gather(reader, stopper, timer, return_exceptions=True)
        self.timer.finish()
        if listener is not None:
            listener.close()  # (again: a no-op once the reader closed it)
        await self._finish_pushes()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await self.transport.close()
        self._flush_store()
        self.outcomes.close()
        self.metrics.close()
        counts = ", ".join(f"{n} {k}" for k, n in self.dispatcher.counts.items())
        self._say(f"pushrules serve: {self.accepted} events applied, {self.rejected} lines "
                  f"rejected; pushes: {counts}"
                  + (f" ({self.resent} from an earlier run)" if self.resent else ""))
        return FAILED if self.fatal is not None else 0

    def _defer_commits(self, loop: asyncio.AbstractEventLoop) -> None:
        """A store that can: one commit per loop iteration instead of one per event (the
        dispatcher flushes it before sending, so a decided push is durable before it goes)."""
        store = getattr(self.engine, "store", None)
        defer = getattr(store, "defer_commits", None)
        if defer is not None and getattr(self.engine, "outbox", False):
            defer(lambda flush: loop.call_later(COMMIT_EVERY, flush))
            self.dispatcher.flush = store.flush  # type: ignore[union-attr]
            self.dispatcher.flush_waiting = getattr(store, "flush_waiting",
                                                    self.dispatcher.flush_waiting)

    def _flush_store(self) -> None:
        if self.dispatcher.flush is None:
            return
        try:
            self.dispatcher.flush()
        except Exception as exc:
            self._say(f"error: store {self.settings.store}: the last events not recorded: {exc}")

    async def _finish_pushes(self) -> None:
        """Up to shutdown_grace for the decided pushes, unless the connection failed for good."""
        if self.fatal is None:
            waits = [asyncio.ensure_future(w) for w in (
                self.dispatcher.drain(), self._failed.wait(), self._hurry.wait())]
            await asyncio.wait(waits, timeout=self.settings.shutdown_grace,
                               return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        await self.dispatcher.close(0)

    def _resume(self) -> bool:
        """Queue what an earlier run decided and never settled; False if the store failed."""
        pending = getattr(self.engine, "outbox_pending", None)
        if pending is None or not getattr(self.engine, "outbox", False):
            return True
        try:
            entries = pending()
        except Exception as exc:
            self._fail(f"store {self.settings.store}: cannot be used: {exc}")
            return False
        if entries:
            self.resent = len(entries)
            self._say(f"pushrules serve: sending again {len(entries)} decided push(es) an "
                      "earlier run left in the outbox")
            self.dispatcher.resume(entries)
        return True

    def _open_socket(self) -> Listener | None:
        path = self.settings.socket or self.settings.prosody  # --prosody: mod_pushrules' socket
        assert path is not None
        try:
            return open_listener(path, group=self.settings.socket_group)
        except SocketPathError as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"socket {path}: {exc.strerror or exc}")
        return None

    async def _connect(self) -> None:
        where = f"{self.settings.host}:{self.settings.port} as {self.settings.component_jid}"
        try:
            await self.transport.start(self.settings.connect_timeout)
        except ComponentRefused as exc:
            self._fail(f"{exc}; stopping")
        except TimeoutError:
            self._fail(f"not connected to {where} within connect_timeout "
                       f"({self.settings.connect_timeout}s): is the server up and the "
                       "component port right?; stopping")

    async def _read_stdin(self, stream: BinaryIO) -> None:
        if self.batching:
            await self._read_batches(stream_chunks(stream), "stdin")
            return
        number = 0
        async for line in split_lines(stream_chunks(stream)):
            number += 1
            if self._stop.is_set():
                return
            await self._line(line, number, "stdin")

    async def _read_batches(self, chunks: AsyncIterator[bytes], where: str) -> None:
        number = 0
        async for lines in line_batches(chunks, BATCH_EVENTS):
            if self._stop.is_set():
                return
            await self.feed_many(list(zip(lines, itertools.count(number + 1))), where)
            number += len(lines)

    async def _line(self, line: bytes | None, number: int, where: str) -> None:
        if line is None:
            self._too_long(number, where)
        else:
            await self.feed(line, number, where)

    async def _serve_socket(self, listener: Listener) -> None:
        connections = 0
        allowed = set(self.settings.allowed_uids) | {os.getuid()}

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            where = f"connection {connections}"
            self._connections.add(writer)
            try:
                uid = _peer(writer)
                if self.settings.allowed_uids and uid not in allowed:
                    self._say(f"error: {where}: uid {uid} is not allowed to send events "
                              "(allowed_uids); connection closed")
                    return
                if self.batching:
                    await self._read_batches(_reader_chunks(reader), where)
                    return
                number = 0
                async for line in split_lines(_reader_chunks(reader)):
                    number += 1
                    if self._stop.is_set():
                        return
                    await self._line(line, number, where)
            except ConnectionError:
                pass  # the peer went away: what it sent before is applied
            except Exception as exc:  # a defect must cost one connection, not the server
                self._say(f"error: {where}: closed after an unexpected error "
                          f"({type(exc).__name__}: {exc})")
            finally:
                self._connections.discard(writer)
                self.end_source(where)
                writer.close()

        server = await asyncio.start_unix_server(client, sock=listener.sock, limit=READ_CHUNK)
        try:
            await asyncio.Event().wait()  # until cancelled by stop()
        finally:
            server.close()
            for writer in list(self._connections):
                writer.close()
            listener.close()


def _peer(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return peer_uid(sock)
    except OSError:
        return None


def _quiet_loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's default handler prints tracebacks; one line is enough and never leaks input."""
    exc = context.get("exception")
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    log.error("%s%s", context.get("message", "unexpected error"), detail)


# --- reading lines without holding an over-long one ---------------------------------------------

async def line_batches(chunks: AsyncIterator[bytes], size: int,
                       limit: int = MAX_LINE_BYTES) -> AsyncIterator[list[bytes | None]]:
    """The lines of a byte stream (as ``split_lines``) in lists of at most ``size``: the
    complete lines of each chunk read; the event loop gets a turn after each list."""
    batch: list[bytes | None] = []
    async for line in split_lines(chunks, limit, turn=float("inf"), ends=True):
        if line is _CHUNK_END:
            if batch:
                yield batch
                batch = []
                await asyncio.sleep(0)
            continue
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
            await asyncio.sleep(0)
    if batch:
        yield batch


_CHUNK_END = b"\n"
"""What ``split_lines(ends=True)`` yields after the lines of each chunk (never a line: lines
come without their newline)."""


async def split_lines(chunks: AsyncIterator[bytes], limit: int = MAX_LINE_BYTES,
                      turn: float = LOOP_TURN, ends: bool = False
                      ) -> AsyncIterator[bytes | None]:
    """The lines of a byte stream (without their newline); None stands for a line longer than
    ``limit``, yielded as soon as it is known, whose rest is then skipped unbuffered.

    Gives the event loop a turn at least every ``turn`` seconds: a backlog of buffered input
    must not hold back the publishes its lines already decided (a chunk holds hundreds of lines
    and reading a buffered one never suspends). ``ends``: ``_CHUNK_END`` after each chunk's
    lines (for ``line_batches``)."""
    buffer = bytearray()
    skipping = False
    clock = time.monotonic
    last = clock()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if skipping:
                skipping = False
            elif buffer:  # the line began in an earlier chunk
                buffer += chunk[start:end]
                line = bytes(buffer) if len(buffer) <= limit else None
                buffer.clear()
                yield line
            else:
                yield chunk[start:end] if end - start <= limit else None
            start = end + 1
            if clock() - last >= turn:
                await asyncio.sleep(0)
                last = clock()
        if not skipping and start < len(chunk):
            buffer += chunk[start:]
            if len(buffer) > limit:
                buffer.clear()
                skipping = True
                yield None
        if ends:
            yield _CHUNK_END
    if buffer and not skipping:
        yield bytes(buffer)


async def _reader_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_CHUNK):
        yield chunk


async def stream_chunks(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Chunks of stdin without a thread blocked in read(): a pipe, socket or tty through the
    event loop (cancellable at any time), a regular file or /dev/null by plain reads (they
    never block)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # not a real file: e.g. io.BytesIO in tests
        while chunk := stream.read(READ_CHUNK):
            yield chunk
        return
    if not stat.S_ISREG(mode):
        reader = await _pipe_reader(fd)
        if reader is not None:
            reader_, transport = reader
            try:
                async for chunk in _reader_chunks(reader_):
                    yield chunk
            finally:
                transport.close()
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, True)  # the file description is shared with our parent
            return
    loop = asyncio.get_running_loop()
    while chunk := await loop.run_in_executor(None, os.read, fd, READ_CHUNK):
        yield chunk


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport] | None:
    loop = asyncio.get_running_loop()
    try:  # connect_read_pipe registers the fd later, in a callback: ask the selector now
        loop.add_reader(fd, lambda: None)
        loop.remove_reader(fd)
    except (OSError, ValueError):  # e.g. /dev/null: epoll refuses it (plain reads then)
        return None
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except (OSError, ValueError):  # e.g. /dev/null: epoll refuses it
        pipe.close()
        return None
    return reader, transport


def run_sidecar(settings: SidecarSettings, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr, make: Callable[..., Any] = Sidecar) -> int:
    async def main() -> int:
        code: int = await make(settings, out, err).run()
        return code

    return asyncio.run(main())
