"""The sidecar's metrics (runtime/xmpp/metrics.py): what each call records, the listener's
/metrics and /healthz, store timing and health over real stores, and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pushrules.generated.events import SessionBind
from pushrules.runtime.store import StoredEngine, StoreUnavailable, open_store
from pushrules.runtime.store.local_redis import free_port
from pushrules.runtime.xmpp import logs
from pushrules.runtime.xmpp.metrics import (
    NO_METRICS,
    PUBLISH_BUCKETS,
    STORE_BUCKETS,
    PrometheusMetrics,
    open_metrics,
    parse_listen,
    rejection_reason,
)


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple], float]:
    from prometheus_client import generate_latest

    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_each_call_is_recorded_under_its_labels():
    m = PrometheusMetrics()
    m.event("session-bind")
    m.event("session-bind")
    m.event("push-disable")
    m.push_outcome("c/offline", "delivered")
    m.push_error("cancel", disabled=True)
    m.push_error(None, disabled=False)
    m.decide_seconds(0.002)
    m.rejected("stdin line 4: not valid JSON: Expecting value at column 1")
    got = samples(m)
    assert got[("pushrules_events_total", (("event", "session-bind"),))] == 2
    assert got[("pushrules_pushes_total", (("outcome", "delivered"), ("rule", "c/offline")))] == 1
    assert got[("pushrules_push_errors_total", (("type", "cancel"),))] == 1
    assert got[("pushrules_push_errors_total", (("type", "none"),))] == 1
    assert got[("pushrules_disables_total", (("reason", "errors"),))] == 1
    assert got[("pushrules_disables_total", (("reason", "client"),))] == 1
    assert got[("pushrules_decide_seconds_count", ())] == 1
    assert got[("pushrules_decide_seconds_bucket", (("le", "0.0025"),))] == 1
    assert got[("pushrules_decide_seconds_bucket", (("le", "0.001"),))] == 0
    assert got[("pushrules_rejected_lines_total", (("reason", "json"),))] == 1


def test_publish_is_timed_and_counted_in_flight():
    import asyncio

    m = PrometheusMetrics()
    seen = []

    async def send(push):
        seen.append(samples(m)[("pushrules_publishes_in_flight", ())])
        return f"answer to {push}"

    assert asyncio.run(m.publish(send, "p1")) == "answer to p1"
    assert seen == [1.0]
    got = samples(m)
    assert got[("pushrules_publishes_in_flight", ())] == 0
    assert got[("pushrules_publish_seconds_count", ())] == 1


async def _noop_send(push):
    return push


def test_the_default_records_nothing_and_passes_calls_through():
    import asyncio

    assert open_metrics(None) is NO_METRICS
    assert asyncio.run(NO_METRICS.publish(_noop_send, "p")) == "p"
    NO_METRICS.watch(outbox=lambda: 1, xmpp_up=lambda: True, store=None)


def test_store_operations_are_timed_on_a_real_store(tmp_path):
    m = PrometheusMetrics()
    store = open_store(f"sqlite:///{tmp_path}/s.sqlite")
    m.watch(store=store)
    engine = StoredEngine(store)
    engine.handle(SessionBind("ann@example.org/phone"))
    got = samples(m)
    assert got[("pushrules_store_seconds_count", (("operation", "load"),))] >= 1
    assert got[("pushrules_store_seconds_count", (("operation", "commit"),))] >= 1
    assert m.health()["store"] is True
    store.close()


def test_an_unreachable_store_is_reported_down():
    m = PrometheusMetrics()
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    m.watch(store=store, xmpp_up=lambda: True)
    with pytest.raises(StoreUnavailable):
        StoredEngine(store).handle(SessionBind("ann@example.org/phone"))
    assert m.health() == {"xmpp": True, "store": False}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_listener_serves_metrics_and_health():
    m = PrometheusMetrics()
    host, port = m.listen("127.0.0.1", 0)
    try:
        base = f"http://{host}:{port}"
        m.event("session-bind")
        status, body = get(f"{base}/metrics")
        assert status == 200 and 'pushrules_events_total{event="session-bind"} 1.0' in body
        assert get(f"{base}/healthz") == (503, json.dumps({"xmpp": False, "store": True}))
        link = {"up": True}
        m.watch(xmpp_up=lambda: link["up"], outbox=lambda: 7)
        assert get(f"{base}/healthz")[0] == 200
        assert "pushrules_outbox_depth 7.0" in get(f"{base}/metrics")[1]
        assert 'pushrules_up{part="xmpp"} 1.0' in get(f"{base}/metrics")[1]
        link["up"] = False
        assert get(f"{base}/healthz")[0] == 503
        assert get(f"{base}/nothing")[0] == 404
    finally:
        m.close()


@pytest.mark.parametrize("address", ["9108", "localhost:", ":9108", "h:99999", "h:x"])
def test_a_bad_listen_address_is_named(address):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(address)


def test_a_taken_port_is_a_clear_error():
    m = PrometheusMetrics()
    _host, port = m.listen("127.0.0.1", 0)
    try:
        with pytest.raises(ValueError, match=f"127.0.0.1:{port}: cannot listen"):
            open_metrics(f"127.0.0.1:{port}")
    finally:
        m.close()


@pytest.mark.parametrize(("message", "reason"), [
    ("stdin line 2: not valid UTF-8 at byte 3", "utf-8"),
    ("stdin line 2: not valid JSON: x at column 1", "json"),
    ("stdin line 2: field 'session': missing", "contract"),
    ("stdin line 2: session-bind not applied: StoreUnavailable", "store"),
])
def test_rejected_lines_by_reason(message, reason):
    assert rejection_reason(message) == reason


def test_json_log_lines_mask_the_secret():
    out = io.StringIO()
    try:
        logs.configure_logging("info", "json", out)
        logging.getLogger("slixmpp.xmlstream").info(
            "SEND: <publish-options><x><field var='secret'><value>hunter2</value></field></x>"
            "</publish-options>")
        line = json.loads(out.getvalue().splitlines()[-1])
        assert line["level"] == "INFO" and line["logger"] == "slixmpp.xmlstream"
        assert "hunter2" not in out.getvalue() and "***" in line["message"]
        said = json.loads(logs.format_line("error: stdin line 3: not valid JSON (line rejected)"))
        assert said["level"] == "ERROR" and said["message"].startswith("error: stdin line 3")
    finally:
        logs.configure_logging("warning", "text")
    assert logs.format_line("warning: x") == "warning: x"
    with pytest.raises(ValueError, match="not one of"):
        logs.configure_logging("info", "xml")


def _exposed(registry) -> dict[tuple[str, tuple], float]:
    from prometheus_client import generate_latest

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.endswith("_created")}


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.floats(0, 40, allow_nan=False),
                                 st.sampled_from(STORE_BUCKETS + PUBLISH_BUCKETS)),
                       max_size=40),
       labels=st.lists(st.sampled_from(["load", "commit", "run_batch"]), min_size=40,
                       max_size=40))
def test_loop_metrics_expose_what_prometheus_clients_own_would(values, labels):
    """The hot path's own counters and histograms (no lock per call) must expose exactly what
    prometheus_client's Counter and Histogram expose for the same calls: same names, labels,
    bucket bounds (a value on a bound falls in that bucket), counts and sums."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from pushrules.runtime.xmpp.metrics import LoopCounter, LoopHistogram, _LoopCollector

    theirs = CollectorRegistry()
    counter = Counter("t_ops", "ops", ["operation"], registry=theirs)
    histogram = Histogram("t_seconds", "secs", ["operation"], buckets=STORE_BUCKETS,
                          registry=theirs)
    plain = Histogram("t_publish_seconds", "p", buckets=PUBLISH_BUCKETS, registry=theirs)
    ours_registry = CollectorRegistry()
    our_counter = LoopCounter("t_ops", "ops", ("operation",))
    our_histogram = LoopHistogram("t_seconds", "secs", STORE_BUCKETS, ("operation",))
    our_plain = LoopHistogram("t_publish_seconds", "p", PUBLISH_BUCKETS)
    ours_registry.register(_LoopCollector([our_counter, our_histogram, our_plain]))
    observe_plain = our_plain.observer()
    plain.observe(0.0)  # (a histogram without labels is exposed before its first value)
    observe_plain(0.0)
    for value, label in zip(values, labels, strict=False):
        counter.labels(label).inc()
        our_counter.inc(label)
        histogram.labels(label).observe(value)
        our_histogram.observer(label)(value)
        plain.observe(value)
        observe_plain(value)
    assert _exposed(ours_registry) == _exposed(theirs)
