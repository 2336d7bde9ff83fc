"""`pushrules replay`: a trace through the engine, pushes out as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.world import ImpossibleEvent

from .engine import Engine
from .trace import MAX_LINE_BYTES, TraceError, read_trace

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def replay(lines: Iterable[str | bytes], out: TextIO, err: TextIO, *, config: Config | None = None,
           explain: bool = False, strict: bool = False, engine: Engine | None = None) -> int:
    """Run a trace; return the exit status (0, or 2 at the first bad line, or when the engine
    fails to apply an event, e.g. a store that went away: the message names the line)."""
    engine = engine or Engine(config, explain=explain)
    try:
        for item in read_trace(bounded_lines(lines)):
            try:
                pushes = engine.handle(item.event)
            except ImpossibleEvent as exc:
                where = f"line {item.line}, field {exc.field!r}"
                if strict:
                    err.write(f"error: {where}: impossible event: {exc}\n")
                    return EXIT_BAD_INPUT
                err.write(f"warning: {where}: skipped impossible event: {exc}\n")
                if explain:
                    out.write(f"# line {item.line} {item.event.EVENT}: skipped: {exc}\n")
                continue
            except Exception as exc:  # the store failed: say where, stop, no traceback
                err.write(f"error: line {item.line}: {item.event.EVENT} not applied: "
                          f"{type(exc).__name__}: {exc}\n")
                return EXIT_BAD_INPUT
            if explain:
                _explain(out, item.line, item.event.EVENT, engine.last_notes, len(pushes))
            for push in pushes:
                out.write(json.dumps(_output(push, engine.config)) + "\n")
    except TraceError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    return EXIT_OK


def bounded_lines(lines: Iterable[str | bytes]) -> Iterator[str | bytes]:
    """The lines of a file, read at most MAX_LINE_BYTES (and a line end) at a time, so a line
    without end is not read whole into memory (parse_event then refuses it as too long, and
    replay stops there); other iterables as they are."""
    readline: Any = getattr(lines, "readline", None)
    if readline is None:
        yield from lines
        return
    while True:
        line = readline(MAX_LINE_BYTES + 2)  # the longest line and its \r\n
        if not line:
            return
        yield line
        if len(line) > MAX_LINE_BYTES and line[-1:] not in ("\n", b"\n"):
            return  # cut short: the rest of that line is not a line of its own


def _output(push: Push, config: Config) -> dict[str, object]:
    """The contract's output object; include_sender and include_body add what the notification
    would then carry (the sender's JID, the body of the last important stanza)."""
    data = push.to_json()
    if config.include_sender:
        data["sender"] = push.sender
    if config.include_body:
        data["body"] = push.body
    return data


def _explain(out: TextIO, line: int, event: str, notes: list[str], pushed: int) -> None:
    verdict = f"{pushed} push(es)" if pushed else "no push"
    detail = "; ".join(notes) if notes else "no machine took it"
    out.write(f"# line {line} {event}: {verdict}: {detail}\n")


def open_engine(store_url: str | None, config: Config | None, *,
                explain: bool = False) -> tuple[Engine, Callable[[], None]]:
    """The engine replay runs (in memory, or over the store ``store_url`` names) and what
    closes it. A store that cannot be opened or reached raises ValueError naming the cause;
    it is tried before any line is read, so nothing is half-applied."""
    if store_url is None:
        return Engine(config, explain=explain), lambda: None
    from pushrules.runtime.store import StoredEngine, open_store

    try:
        store = open_store(store_url)
    except Exception as exc:  # StoreError, or what a driver raises for an odd URL
        raise ValueError(f"store {store_url!r} cannot be opened: {exc}") from None
    try:
        store.load(_PROBE_USER)  # a read: an unreachable server is named now, not at line N
    except Exception as exc:
        store.close()
        raise ValueError(f"store {getattr(store, 'url', store_url)} cannot be used: "
                         f"{type(exc).__name__}: {exc}") from None
    return StoredEngine(store, config, explain=explain), store.close


_PROBE_USER = "pushrules-replay-probe@localhost"
