"""The sidecar's clock for the time-based rules (contract v2): what ``now`` is live, and the timer
that fires held pushes, expiries and retries when they come due with no event arriving.

``now`` is on the events' clock: the ``at`` of the last event that carried one (the Prosody
module stamps every event with the server's clock, util.time.now: seconds since the epoch) plus
the monotonic time elapsed since that event was read; before any, the wall clock (the same
epoch as Prosody's on one machine). So a wall-clock jump of the sidecar's host moves nothing,
and a server whose clock differs is followed from its own events.

With a time-based rule on, an event without ``at`` happens when the sidecar reads it (it is
stamped ``now``), and an event whose ``at`` is earlier than the engine's clock (raised before a
due time the timer has already run, read after it) happens at the engine's clock: the model's
time never goes back. With every time rule off events pass unchanged (pushes carry no ``at``).

After a restart over a store the engine's clock starts from nothing, and a user's clock (kept in
the store) may be ahead of ``now``: a server whose clock is ahead of this host's sent the earlier
run's ``at``. An event without ``at`` for that user then happens at the user's clock (a user's
clock never goes back: ``StoredTime.advance_time``), and ``now`` follows it forward, as it
follows an event's ``at``: the user's held push comes due a window after that event, not when
this host's clock reaches the user's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""Over a store: how often the due index is read even when this node knows of nothing due
(another node may have decided held pushes and died)."""
RETRY_SECONDS = 1.0
"""After the due work failed (the store down): try again this much later."""


class LiveClock:
    """Seconds on the events' clock, advanced between events by a monotonic clock."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._at = wall()
        self._since = monotonic()

    def now(self) -> float:
        return self._at + (self._monotonic() - self._since)

    def saw(self, at: float) -> None:
        """An event carried ``at``: the clock follows the server's."""
        self._at, self._since = at, self._monotonic()


class DueTimer:
    """Runs the engine's due work when it comes due and queues its pushes for sending."""

    def __init__(self, engine: Any, dispatcher: Any, clock: LiveClock | None = None) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.clock = clock or LiveClock()
        self.on = bool(engine.config.timed)
        self._stored = hasattr(engine, "store")
        self._wake = asyncio.Event()
        self._stopped = False
        self._waiting_for: float | None = None
        self._stamped = False  # the last event had no `at`: it was stamped `now`
        self.fired = 0
        """Pushes the timer decided (for tests and logs)."""

    def stamp(self, event: Any) -> Any:
        """The event as the rules take it live (see the module's docstring)."""
        if not self.on or event.EVENT == "tick" and event.at is None:
            return event
        at = event.at
        self._stamped = at is None
        if at is None:
            return dataclasses.replace(event, at=max(self.clock.now(), self.engine.time))
        self.clock.saw(at)
        if at < self.engine.time:
            return dataclasses.replace(event, at=self.engine.time)
        return event

    def after_event(self) -> None:
        """An event was applied: wake the timer if it made something due sooner."""
        if not self.on:
            return
        if self._stamped and self.engine.time > self.clock.now():
            self.clock.saw(self.engine.time)  # a stored user's clock was ahead (see above)
        due = self.engine.due_hint() if self._stored else self.engine.next_due()
        if due is not None and (self._waiting_for is None or due < self._waiting_for):
            self._wake.set()

    async def run(self) -> None:
        """Until cancelled: sleep until the next due time (or a poke), then run what is due."""
        if not self.on:
            return
        while not self._stopped:
            try:
                due = self.engine.next_due()
            except Exception as exc:  # the store is down: the due work waits, nothing is lost
                log.warning("due work not read (%s: %s); trying again", type(exc).__name__, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._waiting_for = due
            delay = None if due is None else max(0.0, due - self.clock.now())
            if self._stored:
                delay = POLL_SECONDS if delay is None else min(delay, POLL_SECONDS)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                continue  # poked: something may be due sooner
            except TimeoutError:
                pass
            if due is not None and due <= self.clock.now() and not self._stopped:
                self._fire()

    def stop(self) -> None:
        """End ``run`` at its next turn. Cancelling alone is not enough: on Python 3.11,
        ``asyncio.wait_for`` loses a cancellation that meets its inner wait's completion (the
        last event's poke at end of input), and the loop would go on for ever."""
        self._stopped = True
        self._wake.set()

    def _fire(self) -> None:
        engine = self.engine
        now = max(self.clock.now(), engine.time)
        try:
            pushes = engine.run_due(now)
        except Exception as exc:
            log.warning("due work at %s not applied (%s: %s); trying again", now,
                        type(exc).__name__, exc)
            return
        engine.timed = True
        self._queue(pushes)

    def _queue(self, pushes: list[Any]) -> None:
        self.fired += len(pushes)
        entries = getattr(self.engine, "last_entries", None) if self._stored else None
        if entries is not None and len(entries) == len(pushes) and pushes:
            self.dispatcher.resume(entries)
        elif pushes:
            self.dispatcher.submit(pushes)

    def finish(self) -> None:
        """End of input: an engine in memory sends its held pushes now (they would be lost);
        over a store they stay held, durable, and come due in the next run."""
        if self.on and not self._stored:
            self._queue(self.engine.flush())
