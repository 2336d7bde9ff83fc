"""`pushrules serve`: contract events in (JSON lines on stdin or a Unix socket), pushes out over
XMPP, one outcome per push as a JSON line on stdout.

Input errors: a malformed line is rejected with ``error: <where> line N, field 'x': …`` on
stderr and the sidecar goes on with the next line (a server feeding it live must not be cut off by
one bad event); an impossible event is a warning and skipped, as in ``replay``. Nothing is applied
from a rejected line. SIGTERM/SIGINT (or the end of stdin): stop reading, wait up to
``shutdown_grace`` for the pushes already decided to be answered, report the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from pushrules.model.config import Config
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.trace import TraceError, parse_event

from .dispatcher import Dispatcher, Outcome, RetryPolicy
from .logs import format_line
from .metrics import open_metrics
from .transport import PushTransport

log = logging.getLogger(__name__)

MEMORY_STORES = ("", "memory", "memory:")
STORE_ATTEMPTS = 5


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
    store: str = "memory:"
    socket: str | None = None
    metrics: str | None = None
    """HOST:PORT of the /metrics and /healthz listener (none without)."""


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
                 engine: Engine | None = None, transport: PushTransport | None = None) -> None:
        self.settings = settings
        self.out = out
        self.err = err
        self.engine = engine or make_engine(settings.store, settings.rules)
        self.transport = transport or PushTransport(
            settings.component_jid, settings.component_secret, settings.host, settings.port,
            settings.rules, iq_timeout=settings.iq_timeout)
        self.metrics = open_metrics(settings.metrics)
        self.dispatcher = Dispatcher(self.engine, self.transport.publish, settings.retry,
                                     on_outcome=self._print_outcome,
                                     max_in_flight=settings.max_in_flight, metrics=self.metrics)
        self.metrics.watch(outbox=lambda: self.dispatcher.pending,
                           xmpp_up=self.transport.online.is_set,
                           store=getattr(self.engine, "store", None))
        self._transient = _transient_errors()
        self.rejected = 0
        self.accepted = 0
        self._stop = asyncio.Event()

    # --- one line ----------------------------------------------------------------------------
    async def feed(self, raw: bytes | str, number: int, where: str = "stdin") -> None:
        """Apply one input line; report a bad one on stderr and go on. A store that is
        briefly unavailable is waited for (the same event again is safe)."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            self._reject(f"{where} line {number}: not valid UTF-8 at byte {exc.start}")
            return
        text = text.strip()
        if not text or text.startswith("#"):
            return
        try:
            event = parse_event(json.loads(text), number)
        except json.JSONDecodeError as exc:
            self._reject(f"{where} line {number}: not valid JSON: {exc.msg} at column "
                         f"{exc.colno}")
            return
        except TraceError as exc:
            self._reject(f"{where} {exc}")
            return
        for attempt in range(STORE_ATTEMPTS):
            try:
                self.dispatcher.handle(event)
                break
            except self._transient as exc:
                if attempt + 1 == STORE_ATTEMPTS:
                    self._reject(f"{where} line {number}: {event.EVENT} not applied: {exc}")
                    return
                await asyncio.sleep(0.1 * 2 ** attempt)
            except ImpossibleEvent as exc:
                self._say(f"warning: {where} line {number}: skipped impossible event: {exc}")
                return
            except Exception as exc:  # e.g. a store that is corrupt: name the line, go on
                self._reject(f"{where} line {number}: {event.EVENT} not applied: "
                             f"{type(exc).__name__}: {exc}")
                return
        self.accepted += 1
        self.metrics.event(event.EVENT)

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.metrics.rejected(message)
        self._say(f"error: {message} (line rejected)")

    def _say(self, message: str) -> None:
        self.err.write(format_line(message) + "\n")
        self.err.flush()

    def _print_outcome(self, outcome: Outcome) -> None:
        self.out.write(json.dumps(outcome.to_json()) + "\n")
        self.out.flush()

    # --- running -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self, stdin: BinaryIO | None = None) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        # Input is read from the start: pushes decided before the connection is up wait for it.
        connecting = loop.create_task(self._connect())
        reader: asyncio.Task[None]
        if self.settings.socket:
            reader = loop.create_task(self._serve_socket(self.settings.socket))
        else:
            reader = loop.create_task(self._read_stdin(stdin or sys.stdin.buffer))
        stopper = loop.create_task(self._stop.wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
        stopper.cancel()
        await asyncio.gather(reader, stopper, return_exceptions=True)
        await self.dispatcher.close(self.settings.shutdown_grace)
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await self.transport.close()
        self.metrics.close()
        counts = ", ".join(f"{n} {k}" for k, n in self.dispatcher.counts.items())
        self._say(f"pushrules serve: {self.accepted} events applied, {self.rejected} lines "
                  f"rejected; pushes: {counts}")
        return 0

    async def _connect(self) -> None:
        try:
            await self.transport.start(self.settings.connect_timeout)
        except TimeoutError:
            self._say(f"warning: not connected to {self.settings.host}:{self.settings.port} "
                      f"as {self.settings.component_jid} after {self.settings.connect_timeout}s;"
                      " still trying (pushes wait for the connection)")

    async def _read_stdin(self, stream: BinaryIO) -> None:
        number = 0
        async for raw in _lines_in_thread(stream):
            number += 1
            await self.feed(raw, number, "stdin")

    async def _serve_socket(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket of a previous run
        connections = 0

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            where, number = f"connection {connections}", 0
            try:
                while line := await reader.readline():
                    number += 1
                    await self.feed(line, number, where)
            except (ValueError, asyncio.LimitOverrunError):
                self._reject(f"{where} line {number + 1}: longer than the line limit; "
                             "connection closed")
            finally:
                writer.close()

        server = await asyncio.start_unix_server(client, path, limit=16 * 1024 * 1024)
        try:
            await asyncio.Event().wait()  # until cancelled by stop()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


async def _lines_in_thread(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Lines of a blocking stream, read by a daemon thread (stdin may be a file, pipe or tty,
    and a blocked read must not keep the process alive at shutdown)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)

    def put(item: bytes | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def pump() -> None:
        try:
            for line in stream:
                put(line)
        except RuntimeError:  # the loop is gone: the sidecar is shutting down
            return
        except Exception as exc:  # reading failed: end of input, said why
            log.error("reading input failed: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                put(None)

    threading.Thread(target=pump, name="pushrules-stdin", daemon=True).start()
    while (item := await queue.get()) is not None:
        yield item


def run_sidecar(settings: SidecarSettings, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr, make: Callable[..., Any] = Sidecar) -> int:
    async def main() -> int:
        return await make(settings, out, err).run()

    return asyncio.run(main())
