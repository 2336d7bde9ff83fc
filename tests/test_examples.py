"""Every example trace replays to exactly its expected output, through the CLI, and the
reference model (python-statemachine) decides the same pushes as the generated runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from replaykit import (
    EXAMPLES,
    cli,
    example_config,
    example_options,
    example_traces,
)

from pushrules.model.reference import ReferenceWorld
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine
from pushrules.runtime.trace import read_trace

TRACES = example_traces()
EXPLAINED = [t for t in TRACES if t.with_suffix(".explain.expected").exists()]


def test_examples_are_there() -> None:
    names = {t.stem for t in TRACES}
    rules = {"rule-a-ack-delayed", "rule-a-hibernation-start", "rule-a-queued",
             "rule-b-archive", "rule-c-offline"}
    assert rules <= names
    assert {"tour", "dedup-across-paths", "disable-variants", "error-counting",
            "eviction"} <= names
    assert len([n for n in names if n.startswith("s")]) >= 13
    for trace in TRACES:
        assert trace.with_suffix(".expected").exists(), f"{trace.name} has no .expected"


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.stem)
def test_replay_prints_expected(trace: Path) -> None:
    run = cli("replay", str(trace), *example_options(trace))
    assert run.status == 0, run.err
    assert run.out == trace.with_suffix(".expected").read_text(encoding="utf-8")
    warned = trace.stem == "impossible-events"
    assert bool(run.err) is warned, run.err


@pytest.mark.parametrize("trace", EXPLAINED, ids=lambda p: p.stem)
def test_explain_prints_expected(trace: Path) -> None:
    run = cli("replay", str(trace), *example_options(trace), "--explain")
    assert run.status == 0, run.err
    assert run.out == trace.with_suffix(".explain.expected").read_text(encoding="utf-8")


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.stem)
def test_explain_says_something_for_every_event(trace: Path) -> None:
    """--explain adds one line per event, pushes or not, and the same pushes as without it."""
    run = cli("replay", str(trace), *example_options(trace), "--explain")
    events = [n for n, line in enumerate(trace.read_text().splitlines(), start=1)
              if line.strip() and not line.lstrip().startswith("#")]
    comments = [line for line in run.out.splitlines() if line.startswith("# line ")]
    assert [int(c.split()[2]) for c in comments] == events
    pushes = [line + "\n" for line in run.out.splitlines() if not line.startswith("#")]
    assert "".join(pushes) == trace.with_suffix(".expected").read_text(encoding="utf-8")


def _pushes(world_cls: type, trace: Path) -> list[tuple]:
    world = world_cls(example_config(trace), clock=lambda: 1_700_000_000.0)
    decided = []
    with trace.open(encoding="utf-8") as lines:
        for item in read_trace(lines):
            try:
                pushes = world.handle(item.event)
            except ImpossibleEvent:
                decided.append((item.line, "impossible"))
                continue
            decided.extend((item.line, json.dumps(p.to_json())) for p in pushes)
    # The state each engine ends in, too: examples with no push still compare something.
    decided.extend(sorted(str(s.as_dict()) for s in world.sessions.values()))
    decided.extend(str(r.as_dict()) for user in sorted(world.users)
                   for r in world.users[user].values())
    return decided


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.stem)
def test_reference_model_agrees(trace: Path) -> None:
    assert _pushes(ReferenceWorld, trace) == _pushes(Engine, trace)


def test_strict_stops_at_first_impossible_event() -> None:
    trace = EXAMPLES / "impossible-events.jsonl"
    run = cli("replay", "--strict", str(trace))
    assert run.status == 2
    assert run.out == ""  # its only push comes after the first impossible event
    assert run.err.startswith("error: line 6, field 'event': impossible event: "
                              "smacks-hibernation-end")
    assert run.err.count("\n") == 1


def test_stdin_trace() -> None:
    trace = EXAMPLES / "tour.jsonl"
    run = cli("replay", "-", input=trace.read_bytes())
    assert run.status == 0
    assert run.out == trace.with_suffix(".expected").read_text(encoding="utf-8")
