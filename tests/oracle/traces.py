"""Traces as text, the oracle's replay of them, and the engine's (`pushrules replay`, in-process),
in one comparable shape: the pushes as JSON objects and the line numbers warned impossible."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import Oracle, Push

OPTIONS_PREFIX = "# pushrules:"
WARNING_LINE = re.compile(r"^warning: line (\d+),", re.MULTILINE)


@dataclass
class Outcome:
    pushes: list[Push]
    impossible: list[int]  # line numbers


def events_of(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, event) of each event line (blank and `#` lines skipped)."""
    return [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def options_of(text: str) -> dict[str, str]:
    """The `--set` options on a first line `# pushrules: --set a=b ...`."""
    first = (text.splitlines() or [""])[0]
    if not first.startswith(OPTIONS_PREFIX):
        return {}
    words = shlex.split(first[len(OPTIONS_PREFIX):])
    pairs = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    return dict(p.split("=", 1) for p in pairs)


def oracle_replay(text: str, options: dict[str, Any] | None = None,
                  version: int = 2) -> Outcome:
    settings = {**options_of(text), **(options or {}), "version": version}
    oracle = Oracle(settings)
    pushes: list[Push] = []
    impossible: list[int] = []
    for line, event in events_of(text):
        pushes += oracle.feed(event)
        if oracle.rejected is not None:
            impossible.append(line)
    return Outcome(pushes + oracle.finish(), impossible)


def engine_replay(text: str, options: dict[str, Any] | None = None) -> Outcome:
    """`pushrules replay -` on the text, run in-process through click."""
    from click.testing import CliRunner

    from pushrules.cli import main

    settings = {**options_of(text), **(options or {})}
    args = ["replay", "-"]
    for name, value in settings.items():
        args += ["--set", f"{name}={value}"]
    result = CliRunner().invoke(main, args, input=text, catch_exceptions=False)
    if result.exit_code != 0:
        raise AssertionError(f"replay exited {result.exit_code}: {result.stderr}")
    pushes = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return Outcome(pushes, [int(n) for n in WARNING_LINE.findall(result.stderr)])


def per_registration(pushes: list[Push]) -> dict[tuple[str, str, str], list[Push]]:
    """Each registration's pushes in order. The contract does not order the pushes of one event
    to different registrations (the engine keeps a registration's first place after a disable
    and re-enable, the oracle puts it last), so the differential tests compare this."""
    lanes: dict[tuple[str, str, str], list[Push]] = {}
    for push in pushes:
        lanes.setdefault((push["user"], push["jid"], push["node"]), []).append(push)
    return lanes


def expected_of(trace: Path) -> list[Push]:
    expected = trace.with_suffix(".expected").read_text(encoding="utf-8")
    return [json.loads(line) for line in expected.splitlines() if line.strip()]
