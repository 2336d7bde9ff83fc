"""`pushrules replay`: a trace through the engine, pushes out as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from pushrules.model.config import Config
from pushrules.model.world import ImpossibleEvent

from .engine import Engine
from .trace import TraceError, read_trace

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def replay(lines: Iterable[str], out: TextIO, err: TextIO, *, config: Config | None = None,
           explain: bool = False, strict: bool = False, engine: Engine | None = None) -> int:
    """Run a trace; return the exit status (0, or 2 at the first bad line)."""
    engine = engine or Engine(config, explain=explain)
    try:
        for item in read_trace(lines):
            try:
                pushes = engine.handle(item.event)
            except ImpossibleEvent as exc:
                if strict:
                    err.write(f"error: line {item.line}: impossible event: {exc}\n")
                    return EXIT_BAD_INPUT
                err.write(f"warning: line {item.line}: skipped impossible event: {exc}\n")
                if explain:
                    out.write(f"# line {item.line} {item.event.EVENT}: skipped: {exc}\n")
                continue
            if explain:
                _explain(out, item.line, item.event.EVENT, engine.last_notes, len(pushes))
            for push in pushes:
                out.write(json.dumps(push.to_json()) + "\n")
    except TraceError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _explain(out: TextIO, line: int, event: str, notes: list[str], pushed: int) -> None:
    verdict = f"{pushed} push(es)" if pushed else "no push"
    detail = "; ".join(notes) if notes else "no machine took it"
    out.write(f"# line {line} {event}: {verdict}: {detail}\n")
