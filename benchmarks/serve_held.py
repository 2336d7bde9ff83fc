"""`pushrules bench --serve`: held pushes' lateness (issue 14: held pushes go out on time under
load).

A timed run feeds ``pushrules serve --set burst_window=W`` a trace from the benchmark mix's
generator with ``at`` on every line, written in real time: each line at its ``at`` on the
bench's monotonic clock (``origin``: trace time ``at0`` is monotonic ``mono0``), at a mean rate
with bursts (a Poisson process whose rate is ``BURST_FACTOR`` times the mean for the first
``BURST_SECONDS`` of every ``PERIOD_SECONDS``, and lower the rest of the period). A closing
``tick`` a little after the last window's end makes everything still held come due in the model
even if the timer never fired, so the run ends with nothing held (a late push shows up as late,
not as missing).

The sidecar maps the events' clock to its own the same way (runtime/xmpp/clock.py: the last
event's ``at`` plus the monotonic time since it was read), so a held push due at trace time
``due`` is on time when the app server receives it at ``mono0 + (due - at0)``; its lateness is
the receive time minus that. Input the sidecar reads late (a backlog at saturation) makes its
clock lag, and that lag is part of the lateness measured here.

Which push was held is read from the sidecar's own outcome lines, not predicted: a held push
comes due when the window since the last push sent to its registration ends, so its ``at`` is
exactly the previous push's ``at`` plus ``W`` (the model adds the same two floats), and no line's
``at`` can equal that by chance (they are random). A held push the sidecar reported but the app
server never received (or reported failed) is counted in ``never_arrived``: a failure of the
run. The offline engine's decisions on the same trace are kept beside: how many pushes it holds,
and which stanzas it pushes that the live run did not (the live clock runs on between lines, so
a few stanzas may be grouped into another window: reported, not failed).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pushrules.generated.events import PushResult
from pushrules.model.config import Config
from pushrules.runtime.engine import Engine
from pushrules.runtime.trace import event_json

from .mix import APP_SERVER, generate

WINDOW_SECONDS = 1.0
"""burst_window of the timed runs (Prosody's own batching timer is 1 s)."""
PERIOD_SECONDS = 2.0
BURST_SECONDS = 0.5
BURST_FACTOR = 2.5
"""Every PERIOD_SECONDS, BURST_SECONDS at BURST_FACTOR times the mean rate; the rest of the
period slower, so that the mean is the rate asked for."""
TICK_AFTER = 0.25
"""The closing tick comes this long after the last window's end."""


def bursty_offsets(count: int, rate: float, seed: int = 14) -> list[float]:
    """``count`` arrival times (seconds from 0) of a Poisson process with mean ``rate`` per
    second, BURST_FACTOR times faster in the first BURST_SECONDS of every period."""
    share = BURST_SECONDS / PERIOD_SECONDS
    calm = rate * (1 - share * BURST_FACTOR) / (1 - share)
    if calm <= 0:
        raise ValueError("the burst takes more than the whole mean rate")
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while len(out) < count:
        in_burst = t % PERIOD_SECONDS < BURST_SECONDS
        t += rng.expovariate(rate * BURST_FACTOR if in_burst else calm)
        out.append(t)
    return out


@dataclass
class TimedTrace:
    lines: list[bytes]
    """One contract event per line with ``at``, the closing ``tick`` last."""
    offsets: list[float]
    """Per line, when it is written: seconds after the run's start (its ``at`` minus ``at0``)."""
    at0: float
    window: float
    predicted_held: int
    """Held pushes the offline engine sends on this trace."""
    predicted: set[tuple[str, str]] = field(repr=False)
    """(node, stanza id) of every stanza the offline engine pushes."""
    pushes: int = 0


def build_timed_trace(users: int, rate: float, seconds: float,
                      window: float = WINDOW_SECONDS, seed: int = 5,
                      app: str = "app.localhost") -> TimedTrace:
    """The mix's first ``rate * seconds`` events (fewer if the mix has fewer) with bursty
    ``at``s, addressed to ``app``; and what the offline engine decides on them."""
    mix = generate(users, seed=seed, keep_xml=True)
    events = [e for e in mix.events if not isinstance(e, PushResult)]
    events = events[:int(rate * seconds)]
    offsets = bursty_offsets(len(events), rate, seed)
    at0 = float(int(time.time()))
    offsets.append(offsets[-1] + window + TICK_AFTER if offsets else 0.0)
    offsets = [(at0 + offset) - at0 for offset in offsets]  # what the lines' `at` say
    engine = Engine(Config(burst_window=window))
    lines: list[bytes] = []
    predicted: set[tuple[str, str]] = set()
    held = pushes = 0
    for event, offset in zip([*events, None], offsets, strict=True):
        at = at0 + offset  # (exactly the same float as before: offsets are at - at0)
        if event is None:
            data: dict[str, Any] = {"event": "tick", "at": at}
        else:
            if getattr(event, "jid", None) == APP_SERVER:
                event = replace(event, jid=app)
            event = replace(event, at=at)
            data = event_json(event, lambda stanza: mix.xml[str(stanza.id)])
        lines.append((json.dumps(data) + "\n").encode())
        due = engine.advance(at)
        held += len(due)
        decided = due + ([] if event is None else engine.handle(event))
        pushes += len(decided)
        for push in decided:
            predicted.update((push.node, str(sid)) for sid in push.stanzas)
            engine.handle(PushResult(push.user, push.jid, push.node, True))
    return TimedTrace(lines, offsets, at0, window, held, predicted, pushes)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def held_lateness(outcomes: Iterable[dict[str, Any]], records: Iterable[tuple[str, float]],
                  window: float, origin: tuple[float, float]) -> dict[str, Any]:
    """Lateness of every held push: received by the app server minus due, in ms.

    ``outcomes``: the sidecar's outcome lines in the order it wrote them (per registration the
    order it decided and sent them: one ordered queue each); ``records``: (node, monotonic
    time) of every publish the app server received, in order; ``origin``: (trace time,
    monotonic time) of the same instant. A push is held when its ``at`` is the previous push's
    to the same registration plus ``window``. ``never_arrived``: held pushes reported failed,
    or delivered with no publish received for them; ``dropped``: held pushes the dispatcher
    dropped for a rule's reason (the registration was disabled after they were decided);
    ``at_once_p50`` (p99, max): the same measure for the pushes sent at once, from their
    event's ``at``."""
    at0, mono0 = origin
    received: dict[str, deque[float]] = defaultdict(deque)
    for node, when in records:
        received[node].append(when)
    last: dict[tuple[str, str, str], float] = {}
    late: list[float] = []
    sent_at_once: list[float] = []
    never = dropped = 0
    for outcome in outcomes:
        key = (outcome["user"], outcome["jid"], outcome["node"])
        at: float | None = outcome.get("at")
        held = at is not None and key in last and at == last[key] + window
        if at is not None:
            last[key] = at
        delivered = outcome["status"] == "delivered"
        got = received[key[2]].popleft() if delivered and received[key[2]] else None
        if at is None:
            continue
        if not held:
            if got is not None:
                sent_at_once.append((got - (mono0 + at - at0)) * 1000)
        elif outcome["status"] == "dropped":
            dropped += 1
        elif got is None:
            never += 1
        else:
            late.append((got - (mono0 + at - at0)) * 1000)
    out: dict[str, Any] = {"held": len(late) + never + dropped, "never_arrived": never,
                           "dropped": dropped, **_quantiles(late, "")}
    # The pushes sent at once in the same run, from their event's `at`: the input's and the
    # push path's own delay at that load, to tell it from the timer's.
    out.update(_quantiles(sent_at_once, "at_once_"))
    return out


def _quantiles(values: list[float], prefix: str) -> dict[str, float | None]:
    names = [f"{prefix}p50", f"{prefix}p99", f"{prefix}max"]
    if not values:
        return dict.fromkeys(names)
    ordered = sorted(values)
    figures = (statistics.median(ordered), _percentile(ordered, 0.99), ordered[-1])
    return {name: round(value, 1) for name, value in zip(names, figures, strict=True)}


def unpushed(predicted: set[tuple[str, str]], outcomes: Iterable[dict[str, Any]]
             ) -> list[tuple[str, str]]:
    """Stanzas (node, stanza id) the offline engine pushes to a node that no delivered push
    brought there, in order."""
    sent = {(o["node"], str(sid)) for o in outcomes if o["status"] == "delivered"
            for sid in o["stanzas"]}
    return sorted(predicted - sent)
