"""Differential test of contract v2 (issues 13 and 14): the oracle against the engine on
generated v2 traces, untimed and timed. Skipped until the engine knows the v2 events; remove the
skip condition's need when v2 lands (the test then runs as is)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings

from pushrules.generated.events import EVENT_CLASSES
from pushrules.model.config import Config

from .strategies import time_heavy_traces, time_options, traces, v2_options
from .traces import engine_replay, oracle_replay, per_registration

V2_KNOWN = "message/bare/groupchat" in EVENT_CLASSES
pytestmark = pytest.mark.skipif(
    not V2_KNOWN, reason="contract v2 not implemented yet (issues 13, 14): the engine does not "
    "know the event message/bare/groupchat")


def assert_agree(text: str, options: dict[str, str]) -> None:
    oracle = oracle_replay(text, options, version=2)
    engine = engine_replay(text, options)
    assert oracle.impossible == engine.impossible, text
    assert per_registration(oracle.pushes) == per_registration(engine.pushes), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(v2=True), v2_options(timed=False))
def test_oracle_agrees_with_engine_on_v2_traces(text: str, options: dict[str, str]) -> None:
    assert_agree(text, options)


TIME_RULES = "burst_window" in {f.name for f in fields(Config)}


@pytest.mark.skipif(not TIME_RULES, reason="the time-based rules are issue 14's")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(v2=True, timed=True), v2_options(timed=True))
def test_oracle_agrees_with_engine_on_timed_v2_traces(text: str,
                                                       options: dict[str, str]) -> None:
    assert_agree(text, options)


@pytest.mark.skipif(not TIME_RULES, reason="the time-based rules are issue 14's")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(time_heavy_traces(), time_options())
def test_oracle_agrees_with_engine_on_time_heavy_traces(text: str,
                                                         options: dict[str, str]) -> None:
    """Every event timed, bob's answers from the app server, short windows, ttls and retry
    waits: held pushes, expiries and probes happen in most traces."""
    assert_agree(text, options)
