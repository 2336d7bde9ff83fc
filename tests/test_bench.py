"""The benchmark harness runs and reports every figure. Speed is never asserted here."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from click.testing import CliRunner

from pushrules.benchmarks import harness
from pushrules.benchmarks.mix import generate, idle_binds, write_trace
from pushrules.cli import main
from pushrules.model.config import Config
from pushrules.model.reference import ReferenceWorld
from pushrules.runtime import Engine
from pushrules.runtime.trace import read_trace

TINY = harness.Plan(
    users={harness.GENERATED: 6, harness.PSM: 2, harness.TRANSITIONS: 2},
    idle_sessions={harness.GENERATED: 50, harness.PSM: 4, harness.TRANSITIONS: 4},
    scaling={harness.GENERATED: (40, 80), harness.PSM: (4,), harness.TRANSITIONS: (4,)},
    scaling_users={harness.GENERATED: 2, harness.PSM: 1, harness.TRANSITIONS: 1},
    replay_users=3, repeats=1, stores=False,
    checker_bounds={"sessions": 1, "push_sessions": 1, "orphans": 0, "stanzas": 1,
                    "max_devices": 1},
)


def test_mix_is_a_valid_trace_covering_every_state_and_event():
    mix = generate(20)
    engine = Engine(Config(), clock=lambda: 0.0)
    seen = set()
    pushes = 0
    for event in mix.events:  # ImpossibleEvent would fail the test
        pushes += len(engine.handle(event))
        for record in engine.sessions.values():
            seen.add(record.state)
    assert seen == {"active", "ack_delayed", "hibernated"}
    assert pushes > 0
    assert set(mix.counts()) >= {
        "session-bind", "push-enable", "push-disable", "smacks-ack-delayed",
        "smacks-ack-received", "smacks-hibernation-start", "smacks-hibernation-end",
        "stanza-queued", "session-destroyed", "archive-message-added",
        "message/offline/handle", "push-result"}
    assert engine.sessions == {}  # every session of the mix ends destroyed


def test_decision_mix_has_no_push():
    mix = generate(10, push=False)
    engine = Engine(Config(), clock=lambda: 0.0)
    assert all(engine.handle(event) == [] for event in mix.events)
    assert "push-enable" not in mix.counts()


def test_engines_agree_on_the_mix():
    mix = generate(4)
    generated = Engine(Config(), clock=lambda: 0.0)
    reference = ReferenceWorld(Config(), clock=lambda: 0.0)
    for event in mix.events:
        assert generated.handle(event) == reference.handle(event), event


def test_trace_of_the_mix_parses_back_to_the_same_events():
    mix = generate(5, keep_xml=True)
    out = io.StringIO()
    assert write_trace(mix.events, mix.xml, out) == len(mix.events)
    parsed = [line.event for line in read_trace(out.getvalue().splitlines())]
    assert parsed == mix.events


def test_idle_binds_bind_distinct_sessions():
    engine = Engine(Config())
    for event in idle_binds(10):
        engine.handle(event)
    assert len(engine.sessions) == 10
    assert {r.state for r in engine.sessions.values()} == {"active"}


def test_run_reports_every_key():
    result = harness.run(plan=TINY)
    json.dumps(result)  # JSON-able
    present = set(harness.engine_factories())
    for key in ("events_per_s", "decision_events_per_s", "bytes_per_session",
                "bytes_per_session_with_jid"):
        assert set(result[key]) == set(harness.ENGINES)
        for name in harness.ENGINES:
            value = result[key][name]
            assert (value is not None and value > 0) == (name in present), (key, name)
    assert set(result["ratios"]) >= {
        "generated_vs_python_statemachine", "generated_vs_transitions",
        "decision_generated_vs_python_statemachine", "decision_generated_vs_transitions"}
    assert result["ratios"]["generated_vs_python_statemachine"] > 0
    assert result["replay_events_per_s"] > 0
    assert result["details"]["replay"]["pushes"] > 0
    assert [p["sessions"] for p in result["scaling"]["generated"]] == [40, 80]
    for point in result["scaling"]["generated"]:
        assert point["us_per_event"] > 0 and point["bytes_per_session"] > 0
    assert set(result["machine"]) >= {"cpu", "cores", "python"}
    assert set(result["targets"]) == set(harness.TARGETS)


def test_bench_command_prints_json(monkeypatch):
    monkeypatch.setattr(harness, "QUICK", replace(TINY, stores=True))
    monkeypatch.setattr(harness, "store_bench", lambda quick: {"quick": quick})
    outcome = CliRunner().invoke(main, ["bench", "--quick", "--json"])
    assert outcome.exit_code == 0, outcome.output
    data = json.loads(outcome.stdout)
    assert data["quick"] is True
    assert data["stores"] == {"quick": True}
    assert set(data) >= {"events_per_s", "bytes_per_session", "ratios", "replay_events_per_s",
                         "scaling", "machine"}


def test_bench_command_prints_tables(monkeypatch):
    monkeypatch.setattr(harness, "QUICK", TINY)
    outcome = CliRunner().invoke(main, ["bench", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    assert "| generated |" in outcome.stdout
    assert "replay end to end" in outcome.stdout
