"""`pushrules bench --serve`: the shape of its figures and their sanity on a tiny run over a real
Prosody (never their size: timings are the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pushrules.benchmarks import serve, serve_held
from pushrules.runtime.trace import parse_event

sys.path.insert(0, str(Path(__file__).parent / "integration"))
from harness import in_ci  # noqa: E402

TINY = serve.Plan(users=4, rates=(300,), rate_seconds=1.0, overload_seconds=3.0,
                  ceiling_pushes=100, drain_timeout=30.0, push_heavy_users=6,
                  burst_rounds=3, held_rates=("saturation",), held_seconds=1.5)
STORE_KEYS = {"events_per_s", "pushes_per_s", "p50_ms", "p99_ms", "p99_ms_at_2k",
              "held_lateness_ms", "held_lateness_ms_at_saturation"}
LATENESS_KEYS = {"p50", "p99", "max", "held", "never_arrived"}


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


def test_burst_users_enable_push_before_the_burst_and_widen_it_to_their_registrations():
    """The quick plan's burst users: each enables two registrations (orphaned) before the
    burst, so the burst pushes to twice as many more registrations, once per round."""
    plain = serve.build_trace(4, seed=7, routine=serve.PUSH_HEAVY, burst=2)
    trace = serve.build_trace(4, seed=7, routine=serve.PUSH_HEAVY, burst=2, burst_users=5)
    start = trace.burst_start
    assert start is not None and plain.burst_start is not None
    setup = [parse_event(json.loads(line), n) for n, line in
             enumerate(trace.lines[plain.burst_start:start])]
    assert [e.EVENT for e in setup] == (["session-bind"] * 2 + ["push-enable"] * 2
                                        + ["session-destroyed"] * 2) * 5
    assert not any(trace.decided[plain.burst_start:start])  # the setup pushes nothing

    def registrations(t: serve.Trace) -> set[str]:
        return {node for nodes in t.decided[t.burst_start:] for node in nodes}

    assert len(registrations(trace)) == len(registrations(plain)) + 2 * 5
    assert len(trace.lines) - start == 2 * (2 + 5)  # two rounds, the mix's users and the new
    assert sum(map(len, trace.decided[start:])) == sum(
        map(len, plain.decided[plain.burst_start:])) + 2 * 2 * 5
    quick = serve.build_trace(serve.QUICK.push_heavy_users, seed=7, routine=serve.PUSH_HEAVY,
                              burst=1, burst_users=serve.QUICK.burst_users)
    assert len(registrations(quick)) >= 512  # as wide as the ceiling's publishes in flight


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


def outcome(node: str, at: float | None, status: str = "delivered", user: str = "u@x",
            stanzas: tuple[str, ...] = ("m",)) -> dict:
    return {"user": user, "jid": "app", "node": node, "at": at, "status": status,
            "stanzas": list(stanzas)}


ORIGIN = (1000.0, 50.0)  # trace time 1000.0 is monotonic 50.0


def test_held_lateness_is_received_minus_the_windows_end_on_the_bench_clock():
    # n1: at once at 1000.2, held until 1001.2 (received 0.05 s late), held again until 1002.2
    # (0.3 s late); n2: at once at 1000.5 only. A push after the window (1003.0) goes at once.
    outcomes = [outcome("n1", 1000.2), outcome("n2", 1000.5), outcome("n1", 1001.2),
                outcome("n1", 1002.2), outcome("n1", 1003.0)]
    records = [("n1", 50.21), ("n2", 50.52), ("n1", 51.25), ("n1", 52.5), ("n1", 53.01)]
    got = serve_held.held_lateness(outcomes, records, 1.0, ORIGIN)
    assert got["held"] == 2 and got["never_arrived"] == got["dropped"] == 0
    assert got["max"] == pytest.approx(300.0)
    assert got["p99"] == pytest.approx(300.0)  # two values: the 99th percentile is the top
    assert got["p50"] == pytest.approx(175.0)
    # the pushes sent at once: 10, 20, 10 ms after their events' `at`
    assert got["at_once_p50"] == pytest.approx(10.0) and got["at_once_max"] == pytest.approx(20.0)


def test_a_held_push_is_told_by_its_at_not_by_its_distance_to_any_event():
    # 1001.7 is within the window of 1001.2's push but not its end: a push at once (an event
    # exactly at the window's end would collide; the bench's random times never do).
    outcomes = [outcome("n1", 1000.2), outcome("n1", 1001.7), outcome("n1", 1002.7)]
    records = [("n1", 50.2), ("n1", 51.7), ("n1", 52.8)]
    got = serve_held.held_lateness(outcomes, records, 1.0, ORIGIN)
    assert got["held"] == 1 and got["max"] == pytest.approx(100.0)
    # the same outcomes on other users' registrations of the same node name are apart
    mixed = [outcome("n1", 1000.2), outcome("n1", 1001.2, user="v@x")]
    assert serve_held.held_lateness(mixed, [("n1", 50.2), ("n1", 51.2)], 1.0,
                                    ORIGIN)["held"] == 0


def test_a_held_push_that_never_arrives_is_counted_not_skipped():
    outcomes = [outcome("n1", 1000.0), outcome("n1", 1001.0), outcome("n2", 1000.0),
                outcome("n2", 1001.0, status="failed"), outcome("n3", 1000.0),
                outcome("n3", 1001.0, status="dropped")]
    records = [("n1", 50.0), ("n2", 50.0), ("n3", 50.0)]  # n1's held push was not received
    got = serve_held.held_lateness(outcomes, records, 1.0, ORIGIN)
    assert got["held"] == 3
    assert got["never_arrived"] == 2 and got["dropped"] == 1
    assert got["p50"] is got["p99"] is got["max"] is None
    run = {**got, "rate": 2000, "unpushed_stanzas": 3}  # reported, not a failure
    assert serve.held_failures(run) == ["2 of 3 held pushes never arrived at 2000 events/s"]
    assert serve.held_failures({**run, "never_arrived": 0}) == []
    assert serve.held_failures({**run, "never_arrived": 0, "held": 0}) == [
        "no push was held at 2000 events/s"]


def test_untimed_outcomes_hold_nothing_and_undelivered_pushes_take_no_publish():
    outcomes = [outcome("n1", None), outcome("n1", 1000.0, status="dropped"),
                outcome("n1", 1000.5), outcome("n1", 1001.5)]
    records = [("n1", 49.0), ("n1", 50.5), ("n1", 51.6)]  # the dropped push sent nothing
    got = serve_held.held_lateness(outcomes, records, 1.0, ORIGIN)
    assert got["held"] == 1 and got["max"] == pytest.approx(100.0)


def test_unpushed_counts_stanzas_no_delivered_push_brought_to_their_node():
    predicted = {("n1", "m1"), ("n1", "m2"), ("n2", "m3")}
    outcomes = [outcome("n1", 1.0, stanzas=("m1", "m2")), outcome("n2", 1.0, "failed", "u@x",
                                                                  ("m3",))]
    assert serve_held.unpushed(predicted, outcomes) == [("n2", "m3")]
    again = [*outcomes[:1], outcome("n2", 2.0, stanzas=("m3",))]
    assert serve_held.unpushed(predicted, again) == []


def test_bursty_offsets_keep_the_mean_rate_and_burst():
    offsets = serve_held.bursty_offsets(20000, 1000.0)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    span = offsets[-1]
    assert 0.9 * 20 < span < 1.1 * 20  # 20000 events at a mean of 1000/s
    in_burst = sum(1 for t in offsets if t % serve_held.PERIOD_SECONDS < serve_held.BURST_SECONDS)
    burst_share = serve_held.BURST_SECONDS / serve_held.PERIOD_SECONDS * serve_held.BURST_FACTOR
    assert in_burst / len(offsets) == pytest.approx(burst_share, abs=0.05)


def test_the_timed_trace_has_at_on_every_line_and_ends_with_a_tick_past_every_window():
    trace = serve_held.build_timed_trace(4, 500.0, 2.0, app=serve.APP)
    events = [parse_event(json.loads(line), n) for n, line in enumerate(trace.lines, 1)]
    assert all(e.at is not None for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert [e.at - trace.at0 for e in events] == pytest.approx(trace.offsets)
    assert events[-1].EVENT == "tick" and events[-1].at >= events[-2].at + trace.window
    assert not any(e.EVENT == "push-result" for e in events)
    assert {e.jid for e in events if hasattr(e, "jid")} == {serve.APP}
    assert 0 < trace.predicted_held < trace.pushes
    assert len(trace.predicted) >= trace.pushes


def assert_store_figures(kind: str, figures: dict, detail: dict) -> None:
    assert set(figures) == STORE_KEYS, kind
    assert figures["events_per_s"] > 0 and figures["pushes_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["p99_ms_at_2k"] is None  # the tiny plan has no 2k rate
    assert detail["ratios"]["pushes_to_ceiling"][kind] > 0
    for run in detail["stores"][kind].values():
        # every publish received is one the sidecar reported, matched to its event
        assert run["matched"] == run["pushes"] <= run["outcomes"] <= run["expected"]
        assert run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]


def assert_held_figures(kind: str, figures: dict, detail: dict) -> None:
    held = figures["held_lateness_ms_at_saturation"]
    assert set(held) == LATENESS_KEYS and figures["held_lateness_ms"] is None  # (no 2k run)
    assert held["held"] > 0 and held["never_arrived"] == 0
    assert held["p50"] <= held["p99"] <= held["max"]
    run = detail["held"][kind]["at_saturation"]
    # the offline engine's decisions on the same trace: the live clock may group a few
    # stanzas differently (serve.held_failures), so they are reported, not compared
    assert run["predicted_held"] > 0
    assert len(run["unpushed_first"]) == min(5, run["unpushed_stanzas"])


def assert_push_heavy(detail: dict, stores: tuple[str, ...]) -> None:
    """The push-heavy trace: the same generator, more pushes per event, on every store."""
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
        assert run["ceiling_after_pushes_per_s"] > 0  # and right after it: the mean divides
        assert run["ceiling_around_pushes_per_s"] == round(
            (run["ceiling_before_pushes_per_s"] + run["ceiling_after_pushes_per_s"]) / 2)


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
    # the issue's keys, and the failures of held pushes (none)
    assert set(result) == {"ceiling_pushes_per_s", "stores", "overload_rss_mb", "failures"}
    assert result["failures"] == []
    assert result["ceiling_pushes_per_s"] > 0
    assert set(result["stores"]) == set(stores)
    for kind, figures in result["stores"].items():
        assert_store_figures(kind, figures, detail)
        assert_held_figures(kind, figures, detail)
    assert_push_heavy(detail, stores)
    assert set(result["overload_rss_mb"]) == {"start", "end"}
    assert result["overload_rss_mb"]["start"] > 0
    assert detail["overload"]["events"] > 0
    if "redis" in stores:  # the store batched against its floor, in the same run
        floor = detail["redis_floor"]
        assert floor["round_trip_floor_events_per_s"] > 0 and floor["store_events_per_s"] > 0
    checked = detail["targets"]
    assert set(checked) >= {"sqlite events/s >= 5000", "overload RSS end <= 1.5 x start",
                            "all met"}  # (the tiny plan has no 2k events/s run)
    assert all(isinstance(t["met"], bool) for n, t in checked.items() if n != "all met")
    for run_ in detail["push_heavy"].values():  # every outcome line counted once, by status
        assert sum(run_["statuses"].values()) == run_["outcomes"]
    json.dumps(full)  # --json prints it as is
    text = serve.text(full)
    assert "raw ceiling" in text and "held pushes (burst_window" in text
    assert "issue 12's targets in this run:" in text


def test_each_target_is_judged_by_its_own_limit():
    """One figure beyond its limit: that target and "all met" are false, the others true."""
    stores = {kind: {"events_per_s": need, "p99_ms_at_2k": 50.0}
              for kind, need in serve.EVENT_TARGETS.items()}
    result = {"stores": stores}
    ratios = {"burst_to_ceiling": {"memory": 0.5, "redis": 0.49}, "rss_end_to_start": 1.5}
    detail = {"redis_floor": {"floor_to_store": 1.5}}
    checked = serve.targets(result, detail, ratios)
    missed = [name for name, t in checked.items() if name != "all met" and not t["met"]]
    assert missed == ["redis push path (burst pushes/s) >= 0.5 x ceiling"]
    assert checked["all met"] is False
    stores["sqlite"]["events_per_s"] = 4999
    ratios["burst_to_ceiling"]["redis"] = 0.5
    checked = serve.targets(result, detail, ratios)
    assert [n for n, t in checked.items() if n != "all met" and not t["met"]] == [
        "sqlite events/s >= 5000"]
