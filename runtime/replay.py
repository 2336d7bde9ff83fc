"""`pushrules replay`: a trace through the engine, pushes out as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.model.world import ImpossibleEvent

from .engine import Engine
from .trace import TraceError, read_trace

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def replay(lines: Iterable[str | bytes], out: TextIO, err: TextIO, *, config: Config | None = None,
           explain: bool = False, strict: bool = False, engine: Engine | None = None) -> int:
    """Run a trace; return the exit status (0, or 2 at the first bad line)."""
    engine = engine or Engine(config, explain=explain)
    try:
        for item in read_trace(lines):
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
            if explain:
                _explain(out, item.line, item.event.EVENT, engine.last_notes, len(pushes))
            for push in pushes:
                out.write(json.dumps(_output(push, engine.config)) + "\n")
    except TraceError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    return EXIT_OK


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
