"""`pushrules bench --serve`: the shape of its figures and their sanity on a tiny run over a real
Prosody (never their size: timings are the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pushrules.benchmarks import serve
from pushrules.runtime.trace import parse_event

sys.path.insert(0, str(Path(__file__).parent / "integration"))
from harness import in_ci  # noqa: E402

TINY = serve.Plan(users=4, rates=(300,), rate_seconds=1.0, overload_seconds=3.0,
                  ceiling_pushes=100, drain_timeout=30.0, push_heavy_users=6,
                  burst_rounds=3)
STORE_KEYS = {"events_per_s", "pushes_per_s", "p50_ms", "p99_ms", "p99_ms_at_2k"}


def test_the_trace_is_contract_events_addressed_to_the_recording_app_server():
    trace = serve.build_trace(3)
    events = [parse_event(json.loads(line), n) for n, line in enumerate(trace.lines, 1)]
    assert not any(e.EVENT == "push-result" for e in events)  # the sidecar feeds its own
    assert {e.jid for e in events if hasattr(e, "jid")} == {serve.APP}
    assert sum(len(nodes) for nodes in trace.decided) == trace.push_count > 0
    assert len(trace.decided) == len(trace.lines)


def test_the_push_heavy_trace_ends_with_a_burst_pushed_to_every_registration():
    plain = serve.build_trace(4, seed=7, routine=serve.PUSH_HEAVY)
    trace = serve.build_trace(4, seed=7, routine=serve.PUSH_HEAVY, burst=3)
    start = trace.burst_start
    assert plain.burst_start is None and start == len(plain.lines)
    assert trace.lines[:start] == plain.lines  # the same generator's trace, then the burst
    burst = [parse_event(json.loads(line), n) for n, line in enumerate(trace.lines[start:])]
    assert len(burst) == 3 * 2  # three rounds for each of the two users with push
    assert {e.EVENT for e in burst} == {"message/offline/handle"}
    pushed = sum(len(nodes) for nodes in trace.decided[start:])
    assert pushed > len(burst)  # rule c: to every registration of the user
    assert pushed / len(burst) > plain.push_count / len(plain.lines)


def test_renamed_rounds_are_other_users():
    trace = serve.build_trace(2)
    again = serve.renamed(trace.lines, 3)
    assert len(again) == len(trace.lines) and again != trace.lines
    assert all(b"@r3.example.org" in line for line in again if b"@example.org" in line)


def test_latency_matches_the_kth_publish_of_a_node_to_its_kth_push():
    trace = serve.Trace(lines=[b"a\n", b"b\n", b"c\n"], decided=[["n1"], [], ["n1", "n2"]],
                        pushes=[None, None, None])
    written = [10.0, 10.5, 11.0]
    got = serve.latencies(trace, 3, written, [("n1", 10.1), ("n2", 11.2), ("n1", 11.5)])
    assert got["matched"] == got["expected"] == 3
    assert got["max_ms"] == pytest.approx(500.0)
    assert got["p50_ms"] == pytest.approx(200.0)


@pytest.mark.integration
def test_tiny_run_has_the_issue_shape_and_sane_figures():
    if shutil.which("prosody") is None:
        if in_ci():
            pytest.fail("prosody is not installed (CI installs it)")
        pytest.skip("prosody is not installed")
    stores = serve.STORES if shutil.which("redis-server") else ("memory", "sqlite")
    plan = serve.Plan(**{**TINY.__dict__, "stores": stores})
    full = serve.run(plan=plan)
    assert set(full) == {"serve", "detail"}
    result, detail = full["serve"], full["detail"]
    assert set(result) == {"ceiling_pushes_per_s", "stores", "overload_rss_mb"}  # the issue's
    assert result["ceiling_pushes_per_s"] > 0
    assert set(result["stores"]) == set(stores)
    for kind, figures in result["stores"].items():
        assert set(figures) == STORE_KEYS, kind
        assert figures["events_per_s"] > 0 and figures["pushes_per_s"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert figures["p99_ms_at_2k"] is None  # the tiny plan has no 2k rate
        assert detail["ratios"]["pushes_to_ceiling"][kind] > 0
        for run in detail["stores"][kind].values():
            # every publish received is one the sidecar reported, matched to its event
            assert run["matched"] == run["pushes"] <= run["outcomes"] <= run["expected"]
            assert run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    # the push-heavy trace: the same generator, more pushes per event, on every store
    assert set(detail["push_heavy"]) == set(stores)
    heavy = detail["push_heavy_trace"]
    assert heavy["pushes"] / heavy["events"] > detail["trace"]["pushes"] / detail["trace"]["events"]
    for kind, run in detail["push_heavy"].items():
        assert run["matched"] == run["pushes"] <= run["outcomes"] <= run["expected"], kind
        assert run["pushes_per_s"] > 0 and run["event_cap_pushes_per_s"] > 0
        assert detail["ratios"]["push_heavy_to_ceiling"][kind] > 0
        assert 0 < run["burst_pushes"] <= run["matched"], kind  # the closing burst's publishes
        assert detail["ratios"]["burst_to_ceiling"][kind] > 0
        assert run["ceiling_before_pushes_per_s"] > 0  # measured again right before the burst
    assert set(result["overload_rss_mb"]) == {"start", "end"}
    assert result["overload_rss_mb"]["start"] > 0
    assert detail["overload"]["events"] > 0
    json.dumps(full)  # --json prints it as is
    assert "raw ceiling" in serve.text(full)
