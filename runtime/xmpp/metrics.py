"""What the sidecar counts and times, for Prometheus, and whether it is healthy.

``Metrics`` is the interface the sidecar and the dispatcher call, one line per place; its
methods do nothing, so the default (``NO_METRICS``) costs a method call. ``PrometheusMetrics``
records them in its own registry (never the process-global one: two sidecars in one process,
e.g. tests, must not share counters) and ``listen(host, port)`` serves it:

- ``GET /metrics``: the Prometheus text format;
- ``GET /healthz``: ``{"xmpp": bool, "store": bool}``, 200 when both are up, else 503.

The listener is an HTTP server in a daemon thread (prometheus_client's WSGI app under wsgiref):
a scrape never runs on the event loop.

The counters and histograms the hot path touches (every event, store operation and push) are
our own plain numbers, read by a collector of the registry at scrape time: prometheus_client's
take a lock and check their labels on every call, 1.2-1.6 µs each, ~7% of the sidecar's CPU at
saturation. Only the event loop writes them; a scrape copies each series at once (a C-level
copy the GIL does not interrupt), so it never sees a half-made observation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")

# Seconds: deciding is microseconds to a few ms (a store round trip); a publish round trip is
# milliseconds to the IQ timeout.
DECIDE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25)


class Metrics:
    """The no-op sink: every method of the interface, doing nothing."""

    def event(self, kind: str) -> None:
        """One contract event applied (``kind``: its ``event`` name)."""

    def rejected(self, message: str) -> None:
        """One input line rejected; ``message`` is what the sidecar said about it."""

    def decide_seconds(self, seconds: float) -> None:
        """Time the engine took to decide one event (store included)."""

    async def publish(self, send: Callable[[A], Awaitable[T]], push: A) -> T:
        """``await send(push)``, counted in flight and timed (the publish round trip)."""
        return await send(push)

    def push_outcome(self, rule: str, outcome: str) -> None:
        """What became of one push (delivered, error, gave-up, dropped, undelivered)."""

    def push_error(self, error_type: str | None, disabled: bool) -> None:
        """A counted error fed to the model (error type, None: no type or a timeout);
        ``disabled``: the model disabled the registration on it."""

    def disabled(self, reason: str) -> None:
        """A registration disabled (``reason``: errors, client)."""

    def watch(self, *, outbox: Callable[[], int] | None = None,
              xmpp_up: Callable[[], bool] | None = None, store: Any = None) -> None:
        """Read at scrape time: pushes decided and not finished, whether the XMPP link is up;
        ``store`` (the engine's, if any) gets its operations timed and its health followed."""

    def close(self) -> None:
        """Stop the listener, if any."""


NO_METRICS = Metrics()


class LoopCounter:
    """A counter by label values, counted without a lock (see the module's doc)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *key: str) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + 1.0

    def family(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.copy().items():
            family.add_metric(key, value)
        return family


class LoopHistogram:
    """A histogram by label values, observed without a lock (see the module's doc). Each
    series is one list: the count of each bucket (not cumulative; the last +Inf), then the
    sum."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 labels: tuple[str, ...] = ()) -> None:
        from prometheus_client.utils import floatToGoString

        self.name, self.documentation, self.labels = name, documentation, labels
        self.bounds = (*buckets, float("inf"))
        self.les = tuple(floatToGoString(b) for b in self.bounds)  # type: ignore[no-untyped-call]
        """Each bucket's ``le`` label, as prometheus_client writes it."""
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observer(self, *key: str) -> Callable[[float], None]:
        """``observe`` for one series (label values ``key``), looked up once."""
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 1)
        bounds = self.bounds

        def observe(value: float) -> None:
            counts[bisect_left(bounds, value)] += 1.0  # (a bucket holds values <= its bound)
            counts[-1] += value

        return observe

    def family(self) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, series in self.series.copy().items():
            counts = series[:]
            cumulative, buckets = 0.0, []
            for le, count in zip(self.les, counts[:-1], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(key, buckets, counts[-1])
        return family


class _LoopCollector:
    """The registry's view of the loop-counted metrics."""

    def __init__(self, metrics: list[LoopCounter | LoopHistogram]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        for metric in self.metrics:
            yield metric.family()


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = registry = CollectorRegistry()
        self._events = LoopCounter("pushrules_events", "Contract events applied, by event name.",
                                   ("event",))
        self._rejected = LoopCounter("pushrules_rejected_lines",
                                     "Input lines rejected, by reason.", ("reason",))
        self._pushes = LoopCounter("pushrules_pushes", "Pushes finished, by rule and outcome.",
                                   ("rule", "outcome"))
        self._errors = LoopCounter("pushrules_push_errors",
                                   "Counted push errors fed to the model, by error type.",
                                   ("type",))
        self._disables = LoopCounter("pushrules_disables", "Registrations disabled, by reason.",
                                     ("reason",))
        self._decide = LoopHistogram("pushrules_decide_seconds", "Deciding one event.",
                                     DECIDE_BUCKETS)
        self._publish = LoopHistogram("pushrules_publish_seconds",
                                      "Publish round trip: sent to answered (or timed out).",
                                      PUBLISH_BUCKETS)
        self._store = LoopHistogram("pushrules_store_seconds", "Store operations, by operation.",
                                    STORE_BUCKETS, ("operation",))
        self._observe_decide = self._decide.observer()
        self._observe_publish = self._publish.observer()
        self._in_flight = 0
        registry.register(_LoopCollector([self._events, self._rejected, self._pushes,
                                          self._errors, self._disables, self._decide,
                                          self._publish, self._store]))
        Gauge("pushrules_publishes_in_flight", "Publishes sent and not yet answered.",
              registry=registry).set_function(lambda: self._in_flight)
        self._outbox = Gauge("pushrules_outbox_depth", "Pushes decided and not yet finished.",
                             registry=registry)
        self._up = Gauge("pushrules_up", "1 when the part is up: xmpp (the component link), "
                         "store.", ["part"], registry=registry)
        self._health: dict[str, Callable[[], bool]] = {"xmpp": lambda: False,
                                                       "store": lambda: True}
        self._store_ok = True
        self._server: WSGIServer | None = None
        for part in self._health:
            self._up.labels(part).set_function(self._probe(part))

    # --- the interface -----------------------------------------------------------------------
    def event(self, kind: str) -> None:
        self._events.inc(kind)
        if kind == "push-disable":
            self.disabled("client")

    def rejected(self, message: str) -> None:
        self._rejected.inc(rejection_reason(message))

    def decide_seconds(self, seconds: float) -> None:
        self._observe_decide(seconds)

    async def publish(self, send: Callable[[A], Awaitable[T]], push: A) -> T:
        self._in_flight += 1
        start = time.perf_counter()
        try:
            return await send(push)
        finally:
            self._observe_publish(time.perf_counter() - start)
            self._in_flight -= 1

    def push_outcome(self, rule: str, outcome: str) -> None:
        self._pushes.inc(rule, outcome)

    def push_error(self, error_type: str | None, disabled: bool) -> None:
        self._errors.inc(error_type or "none")
        if disabled:
            self.disabled("errors")

    def disabled(self, reason: str) -> None:
        self._disables.inc(reason)

    def watch(self, *, outbox: Callable[[], int] | None = None,
              xmpp_up: Callable[[], bool] | None = None, store: Any = None) -> None:
        if outbox is not None:
            self._outbox.set_function(outbox)
        if xmpp_up is not None:
            self._health["xmpp"] = xmpp_up
        if store is not None:
            self.instrument_store(store)

    def instrument_store(self, store: Any) -> Any:
        """Wrap the instance's ``load``, ``commit`` and ``run_batch`` (a batch's round trip):
        timed; a StoreUnavailable marks the store down until an operation succeeds again (no
        extra round trip to find out)."""
        from pushrules.runtime.store import StoreUnavailable

        for name in ("load", "commit", "run_batch"):
            original = getattr(store, name, None)
            if original is not None:
                setattr(store, name, self._timed(name, original, StoreUnavailable))
        self._health["store"] = lambda: self._store_ok
        return store

    def _timed(self, name: str, call: Callable[..., T],
               unavailable: type[Exception]) -> Callable[..., T]:
        observe = self._store.observer(name)
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> T:
            start = clock()
            try:
                result = call(*args, **kwargs)
            except unavailable:
                self._store_ok = False
                raise
            observe(clock() - start)
            self._store_ok = True
            return result

        return timed

    # --- health and the listener -------------------------------------------------------------
    def _probe(self, part: str) -> Callable[[], float]:
        return lambda: float(self._check(part))

    def _check(self, part: str) -> bool:
        try:
            return bool(self._health[part]())
        except Exception:  # a health probe that fails says: not healthy
            return False

    def health(self) -> dict[str, bool]:
        return {part: self._check(part) for part in self._health}

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics and /healthz on ``host:port`` (port 0: any free one); returns the
        address bound. OSError (e.g. the port is taken) goes to the caller."""
        from prometheus_client import make_wsgi_app

        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                health = self.health()
                status = "200 OK" if all(health.values()) else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [json.dumps(health).encode()]
            if path in ("/metrics", "/"):
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics or /healthz\n"]

        self._server = make_server(host, port, app, handler_class=_QuietHandler)
        thread = threading.Thread(target=self._server.serve_forever, name="pushrules-metrics",
                                  daemon=True)
        thread.start()
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("metrics: " + format, *args)


REJECTIONS = (("not valid UTF-8", "utf-8"), ("not valid JSON", "json"),
              ("not applied", "store"), ("longer than the line limit", "too-long"))


def rejection_reason(message: str) -> str:
    """A label for a rejected line: utf-8, json, store, too-long, or contract (a field)."""
    return next((label for text, label in REJECTIONS if text in message), "contract")


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError naming what is
    wrong."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9108")
    return host, int(port)


def open_metrics(address: str | None) -> Metrics:
    """NO_METRICS without an address; else a PrometheusMetrics listening there."""
    if not address:
        return NO_METRICS
    metrics = PrometheusMetrics()
    host, port = parse_listen(address)
    try:
        metrics.listen(host, port)
    except OSError as exc:
        raise ValueError(f"--metrics {address}: cannot listen: {exc.strerror or exc}") from None
    return metrics
