"""The model checker: the real model passes every property at the default bound, mutants of
the model are killed with a shortest counterexample that `pushrules replay --strict` reproduces."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pushrules.check_cmd import MUTANT_BOUNDS, check
from pushrules.checker import mutants as mutants_module
from pushrules.checker.bounded import V2_BOUNDS, V2_MUTANT_BOUNDS, Bounds
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.explore import Explorer, Result, Taken
from pushrules.checker.mutants import build_tables, mutants, run_mutant
from pushrules.checker.properties import PROPERTIES
from pushrules.checker.tableworld import TableWorld, world_class
from pushrules.generated import tables as generated_tables
from pushrules.model import actions as model_actions
from pushrules.model.config import Config
from pushrules.model.rules import TIME_RULES
from pushrules.runtime.replay import replay

SMALL_BOUNDS = Bounds(sessions=2, push_sessions=1, orphans=1, stanzas=1, max_errors=2,
                      max_devices=2)
"""A bound the reference explorer covers in seconds: a push session beside one without push,
an orphan, an incoming message, two devices (an orphan and a bound registration coexist)."""


def _mutant(mutant_id: str):
    return next(m for m in mutants() if m.id == mutant_id)


@pytest.fixture(scope="module")
def default_run() -> tuple[CompiledExplorer, Result]:
    """`pushrules check` as a user runs it: the default bound (three stanzas in flight)."""
    explorer = CompiledExplorer(Bounds())
    return explorer, explorer.run()


@pytest.fixture(scope="module")
def reference_run() -> tuple[Explorer, Result]:
    explorer = Explorer(SMALL_BOUNDS)
    return explorer, explorer.run()


def test_real_model_passes_every_property_at_the_default_bound(
        default_run: tuple[CompiledExplorer, Result]) -> None:
    explorer, result = default_run
    assert explorer.bounds.stanzas >= 3 and explorer.bounds.orphans >= 1
    assert result.properties == {name: "pass" for name in PROPERTIES}, {
        name: v.detail for name, v in result.violations.items()}
    assert result.uncovered == [] and result.unreached == []
    assert result.states > 1_000_000 and result.transitions > 10 * result.states
    # the memo: far fewer steps run through the model's tables than transitions explored
    assert explorer.computed < result.transitions // 1000


def test_reference_explorer_passes_every_property(
        reference_run: tuple[Explorer, Result]) -> None:
    _, result = reference_run
    failed = {name for name, verdict in result.properties.items() if verdict == "fail"}
    # one stanza leaves rows that need the outgoing copy (b/archive's guard) untaken
    assert failed <= {"every_transition_covered"}, {
        name: result.violations[name].detail for name in failed}


def test_small_bound_explores_an_orphan_beside_a_bound_registration(
        reference_run: tuple[Explorer, Result]) -> None:
    """Rule (b) pushes the orphan, and not the registration bound to a live session, in an
    explored state holding both."""
    explorer, _ = reference_run
    seen = []
    for mid, key, event, step in explorer._step_of:
        regs, sessions = explorer.models[mid][1], explorer.models[mid][0]
        orphans = {explorer.world.nodes[j] for j, r in enumerate(regs) if r.state == "orphaned"}
        live_bound = {explorer.world.nodes[s.binding] for s in sessions
                      if s.binding >= 0 and s.state in ("active", "ack_delayed", "hibernated")}
        if key[0] != "archive" or not isinstance(step, Taken) or not orphans or not live_bound:
            continue
        if not event.stanza.important or event.stanza.to_bare != "u@example.org":
            continue
        pushed = {(p.node, p.rule) for p in step.pushes}
        assert pushed <= {(node, "b/archive") for node in orphans}, (explorer.models[mid], pushed)
        if pushed:  # empty when the orphan already had this stanza (deduplicated)
            seen.append(mid)
    assert seen


def test_mutant_bound_takes_every_row() -> None:
    result = CompiledExplorer(MUTANT_BOUNDS).run()
    assert result.ok, {name: v.detail for name, v in result.violations.items()}


def test_every_operator_yields_mutants_and_swap_is_one_of_them() -> None:
    kinds = {m.id.split()[0] for m in mutants()}
    assert kinds == {"drop-guard", "retarget", "drop-action", "dup-action", "swap-registrations"}


@pytest.mark.parametrize("mutant_id, prop", [
    ("swap-registrations registration orphaned push_archive 0 -> bound", "no_push_to_active"),
    ("drop-guard session ack_delayed stanza_queued 0 bound", "every_event_handled"),
    ("drop-guard registration bound push_result 2 below_max_errors", "deterministic"),
    ("drop-action registration bound push_result 0 reset_errors",
     "disable_only_after_max_errors"),
    ("retarget session hibernated smacks_hibernation_end 0 -> ack_delayed",
     "resume_stops_pushes"),
    ("dup-action registration bound push_result 2 count_error", "disable_only_after_max_errors"),
    ("drop-action registration orphaned push_offline 0 send_push", "no_loss"),
])
def test_mutants_are_killed_by_the_expected_property(mutant_id: str, prop: str) -> None:
    outcome, _, _ = run_mutant(_mutant(mutant_id), MUTANT_BOUNDS)
    assert prop in outcome.killed_by


def test_counterexample_is_shortest_and_replays_the_violating_push() -> None:
    mutant = _mutant("swap-registrations registration orphaned push_archive 0 -> bound")
    tables = build_tables(mutant.ir)
    explorer = CompiledExplorer(MUTANT_BOUNDS, world_class(tables))
    result = explorer.run()
    violation = result.violations["no_push_to_active"]
    text = violation.as_trace(explorer.world)
    assert text.startswith("# property violated: no_push_to_active")
    # shortest: bind, enable, archive an incoming message -> b pushes the active session's device
    events = [json.loads(line)["event"] for line in text.splitlines() if not line.startswith("#")]
    assert events == ["session-bind", "push-enable", "archive-message-added"]
    config = Config(max_errors=MUTANT_BOUNDS.max_errors, max_devices=MUTANT_BOUNDS.max_devices)
    out, err = io.StringIO(), io.StringIO()
    status = replay(text.splitlines(True), out, err, config=config, strict=True,
                    engine=world_class(tables)(config))
    assert status == 0, err.getvalue()
    pushes = [json.loads(line) for line in out.getvalue().splitlines()]
    assert pushes == [{"user": "u@example.org", "jid": "push.example.net", "node": "n1",
                       "rule": "b/archive", "stanzas": ["m1"], "important": True}]
    # the same trace under the real model (the CLI): accepted in --strict, no push
    real = subprocess.run(
        [sys.executable, "-m", "pushrules.cli", "replay", "--strict", "--set", "max_devices=1",
         "-"], input=text, capture_output=True, text=True, check=False)
    assert real.returncode == 0, real.stderr
    assert real.stdout == ""


def test_cli_check_json_passes_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    args = ["--sessions", "2", "--push-sessions", "2", "--orphans", "0", "--stanzas", "2",
            "--max-devices", "1", "--json"]
    ok = runner.invoke(check, args)
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.output)
    assert set(summary) == {"states", "transitions", "seconds", "properties", "left_to_time"}
    # the rows only the clock takes are listed, not required (no bounded world runs it yet)
    time_rows = [row for by_event in generated_tables.REGISTRATION.values()
                 for rows in by_event.values() for row in rows if row[3] in TIME_RULES]
    assert len(summary["left_to_time"]) == len(time_rows) > 0
    assert summary["states"] > 1000 and summary["transitions"] > summary["states"]
    assert set(summary["properties"].values()) == {"pass"}
    mutant = _mutant("drop-guard registration bound push_result 2 below_max_errors")
    monkeypatch.setattr(TableWorld, "tables", build_tables(mutant.ir))
    bad = runner.invoke(check, args)
    assert bad.exit_code == 1
    lines = bad.output.splitlines()
    assert json.loads(lines[0])["properties"]["deterministic"] == "fail"
    assert "# counterexample for deterministic" in bad.output


def test_cli_mutants_json_and_unexplained_survivor_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    killed = runner.invoke(check, ["--mutants", "--mutant", "retarget session offline "
                                   "session_bind 0 -> hibernated", "--json"])
    assert killed.exit_code == 0, killed.output
    assert json.loads(killed.output) == {"mutants": 1, "killed": 1, "survivors": []}
    equivalent = "drop-action registration absent enable 0 reset_errors"
    listed = runner.invoke(check, ["--mutants", "--mutant", equivalent, "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["survivors"] == [
        {"id": equivalent, "equivalent": mutants_module.EQUIVALENT[equivalent]}]
    monkeypatch.setattr(mutants_module, "EQUIVALENT", {})
    unlisted = runner.invoke(check, ["--mutants", "--mutant", equivalent, "--json"])
    assert unlisted.exit_code == 1
    assert json.loads(unlisted.output)["survivors"] == [{"id": equivalent, "equivalent": None}]


def test_bad_bound_is_a_clear_error() -> None:
    result = CliRunner().invoke(check, ["--sessions", "1", "--push-sessions", "2"])
    assert result.exit_code == 2
    assert "push_sessions cannot exceed sessions" in result.output


def test_dead_state_analysis_finds_a_world_that_cannot_quiesce() -> None:
    class NoDestroy(Explorer):
        """An environment that never destroys a session: nothing gets every session offline."""

        def events(self, model, queues):  # type: ignore[no-untyped-def]
            return [(k, e) for k, e in super().events(model, queues)
                    if k[0] != "destroy"]

    result = NoDestroy(Bounds(sessions=1, push_sessions=1, orphans=0, stanzas=1,
                              max_devices=1)).run()
    violation = result.violations["no_dead_state"]
    assert "no state with every session offline is reachable" in violation.detail
    assert [e.EVENT for e in violation.trace] == ["session-bind"]


# --- contract v2 (pushrules check --v2) --------------------------------------------------------

@pytest.fixture(scope="module")
def v2_run() -> tuple[CompiledExplorer, Result]:
    """`pushrules check --v2` as a user runs it: the v2 default bound."""
    explorer = CompiledExplorer(V2_BOUNDS)
    return explorer, explorer.run()


def test_real_model_passes_every_property_at_the_v2_bound(
        v2_run: tuple[CompiledExplorer, Result],
        default_run: tuple[CompiledExplorer, Result]) -> None:
    explorer, result = v2_run
    assert result.properties == {name: "pass" for name in PROPERTIES}, {
        name: v.detail for name, v in result.violations.items()}
    # every v2 row is taken here; the v1 rows it leaves are taken at the v1 default bound
    assert result.uncovered == [] and result.unreached == []
    assert result.left_to_v1 and not any("push_call" in row or "groupchat" in row
                                          for row in result.left_to_v1)
    assert default_run[1].uncovered == [] and default_run[1].left_to_v1 == []
    assert result.states > 1_000_000 and explorer.computed < result.transitions // 10_000


def test_v2_rows_are_required_only_when_v2_is_explored() -> None:
    """Without v2 events the v2 rows are not required; with them, a row not taken fails."""
    v1 = CompiledExplorer(MUTANT_BOUNDS).run()
    assert v1.ok and v1.left_to_v1 == []
    # no session enables push: only the orphan, never bound
    tiny = CompiledExplorer(dataclasses.replace(V2_MUTANT_BOUNDS, push_sessions=0)).run()
    assert "every_transition_covered" in tiny.violations
    assert "registration bound --push_groupchat[]--> bound" in tiny.uncovered


def _v2_mutant(mutant_id: str):
    return next(m for m in mutants(v2=True) if m.id == mutant_id)


@pytest.mark.parametrize("mutant_id, prop", [
    ("drop-action registration bound push_call 3 send_push", "no_missed_ring"),
    ("drop-action session active csi_state 0 set_csi", "no_missed_ring"),
    ("drop-guard registration bound push_call_end 0 call_pushed_here",
     "call_end_only_where_rung"),
    ("drop-action registration orphaned push_call_end 0 send_push", "call_end_only_where_rung"),
    ("dup-action registration bound push_groupchat 0 send_push", "at_most_once"),
    ("retarget registration bound remote_disable 0 -> orphaned", "remote_disabled_never_pushed"),
])
def test_v2_mutants_are_killed_by_the_expected_property(mutant_id: str, prop: str) -> None:
    outcome, _, _ = run_mutant(_v2_mutant(mutant_id), V2_MUTANT_BOUNDS)
    assert prop in outcome.killed_by


def test_v2_counterexample_replays_the_missed_ring() -> None:
    """A mutant that does not push the call to a bound registration: its shortest
    counterexample replays (--strict) without the ring, and the real model rings there."""
    mutant = _v2_mutant("drop-action registration bound push_call 3 send_push")
    tables = build_tables(mutant.ir)
    explorer = CompiledExplorer(V2_MUTANT_BOUNDS, world_class(tables))
    violation = explorer.run(stop_at_first=True).violations["no_missed_ring"]
    text = violation.as_trace(explorer.world)
    config = Config(max_errors=V2_MUTANT_BOUNDS.max_errors,
                    max_devices=V2_MUTANT_BOUNDS.max_devices)

    def pushes(engine: TableWorld) -> list[dict[str, object]]:
        out, err = io.StringIO(), io.StringIO()
        assert replay(text.splitlines(True), out, err, config=config, strict=True,
                      engine=engine) == 0, err.getvalue()
        return [json.loads(line) for line in out.getvalue().splitlines()]

    last = json.loads([line for line in text.splitlines() if not line.startswith("#")][-1])
    call = "p1"  # the proposal (V2_MUTANT_BOUNDS has no proposal without an id)
    assert f"id='{call}'" in last["stanza"] and "<propose" in last["stanza"]
    rings = [p for p in pushes(TableWorld(config)) if call in p["stanzas"]]
    assert rings and all(p["rule"] == "e/call" and p["urgent"] for p in rings)
    assert not [p for p in pushes(world_class(tables)(config)) if call in p["stanzas"]
                and p["node"] in {r["node"] for r in rings}]


@pytest.mark.parametrize("name, replacement, prop", [
    ("is_echo", lambda stanza, setting: False, "echo_never_pushed"),
    ("setting_blocks", lambda *args: None, "chat_settings_respected"),
])
def test_chat_setting_properties_catch_a_model_that_ignores_them(
        monkeypatch: pytest.MonkeyPatch, name: str, replacement: object, prop: str) -> None:
    """The row mutants cannot reach the chat rules (they live in send_push): a model whose
    echo rule or setting check is switched off must fail the property."""
    monkeypatch.setattr(model_actions, name, replacement)
    result = CompiledExplorer(V2_MUTANT_BOUNDS).run(stop_at_first=True)
    assert prop in result.violations


def test_cli_v2_mutants_json() -> None:
    runner = CliRunner()
    equivalent = "dup-action session active csi_state 0 set_csi"
    listed = runner.invoke(check, ["--v2", "--mutants", "--mutant", equivalent, "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["survivors"] == [
        {"id": equivalent, "equivalent": mutants_module.EQUIVALENT[equivalent]}]
    killed = runner.invoke(check, ["--v2", "--mutants", "--mutant",
                                   "retarget registration orphaned remote_disable", "--json"])
    assert killed.exit_code == 0, killed.output
    assert json.loads(killed.output)["killed"] == json.loads(killed.output)["mutants"] > 0
