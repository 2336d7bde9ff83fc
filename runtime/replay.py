"""`pushrules replay`: a trace through the engine, pushes out as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.world import ImpossibleEvent

from .engine import Engine
from .trace import MAX_LINE_BYTES, TraceError, TraceLine, read_trace

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def replay(lines: Iterable[str | bytes], out: TextIO, err: TextIO, *, config: Config | None = None,
           explain: bool = False, strict: bool = False, engine: Engine | None = None) -> int:
    """Run a trace; return the exit status (0, or 2 at the first bad line, or when the engine
    fails to apply an event, e.g. a store that went away: the message names the line). At the
    end of input, and at a line that ends the replay, the held pushes (burst_window) are sent,
    each at its due time."""
    engine = engine or Engine(config, explain=explain)
    try:
        for item in read_trace(bounded_lines(lines)):
            status = _step(engine, item, out, err, explain=explain, strict=strict)
            if status == _STORE_FAILED:
                return EXIT_BAD_INPUT  # nothing more is asked of a store that failed
            if status is not None:
                _flush(engine, out, explain)
                return status
    except TraceError as exc:
        _flush(engine, out, explain)
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    _flush(engine, out, explain)
    return EXIT_OK


_STORE_FAILED = -1
"""_step's status when the engine failed to apply an event (a store that went away)."""


def _step(engine: Engine, item: TraceLine, out: TextIO, err: TextIO, *, explain: bool,
          strict: bool) -> int | None:
    """One trace line: what came due before it, then the event. None to go on, else the exit
    status that ends the replay."""
    event = item.event
    try:
        if event.at is not None:  # the clock first: due pushes go out even if the event fails
            _write(engine, out, engine.run_due(event.at), explain, item.line)
        pushes = engine.handle(event)
    except ImpossibleEvent as exc:
        where = f"line {item.line}, field {exc.field!r}"
        if strict:
            err.write(f"error: {where}: impossible event: {exc}\n")
            return EXIT_BAD_INPUT
        err.write(f"warning: {where}: skipped impossible event: {exc}\n")
        if explain:
            out.write(f"# line {item.line} {event.EVENT}: skipped: {exc}\n")
        return None
    except Exception as exc:  # the store failed: say where, stop, no traceback
        err.write(f"error: line {item.line}: {event.EVENT} not applied: "
                  f"{type(exc).__name__}: {exc}\n")
        return _STORE_FAILED
    if explain:
        _explain(out, item.line, event.EVENT, engine.last_notes, len(pushes))
    for push in pushes:
        out.write(json.dumps(_output(push, engine.config)) + "\n")
    return None


def _flush(engine: Engine, out: TextIO, explain: bool) -> None:
    """End of the replay: the held pushes, each at its due time."""
    _write(engine, out, engine.flush_held(), explain, None)


def _write(engine: Engine, out: TextIO, pushes: list[Push], explain: bool,
           line: int | None) -> None:
    """Pushes the clock decided, after what --explain says of each timer event."""
    if explain:
        where = "at the end of input" if line is None else f"before line {line}"
        for step in engine.due_log:
            verdict = f"{step.pushes} push(es)" if step.pushes else "no push"
            detail = "; ".join(step.notes) or "no machine took it"
            out.write(f"# at {step.at} {where}: {step.timer} {step.reg}: {verdict}: "
                      f"{detail}\n")
    for push in pushes:
        out.write(json.dumps(_output(push, engine.config)) + "\n")


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
