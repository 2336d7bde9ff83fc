"""Differential test: the oracle's reading of contract v1 against the engine (`pushrules replay`)
on generated version-1 traces: the same pushes in the same order, and the same lines warned
impossible. Also every example trace: the oracle prints its .expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from .strategies import traces, v1_options
from .traces import engine_replay, expected_of, oracle_replay, per_registration

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.jsonl"))


def assert_agree(text: str, options: dict[str, str], version: int) -> None:
    oracle = oracle_replay(text, options, version=version)
    engine = engine_replay(text, options)
    assert oracle.impossible == engine.impossible, text
    assert per_registration(oracle.pushes) == per_registration(engine.pushes), text


@pytest.mark.parametrize("trace", EXAMPLES, ids=lambda p: p.stem)
def test_oracle_prints_every_v1_example(trace: Path) -> None:
    text = trace.read_text(encoding="utf-8")
    assert oracle_replay(text, version=1).pushes == expected_of(trace)
    assert_agree(text, {}, version=1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(v2=False), v1_options())
def test_oracle_agrees_with_engine_on_v1_traces(text: str, options: dict[str, str]) -> None:
    assert_agree(text, options, version=1)
