"""Sending decided pushes: one ordered queue per registration, retries, answers back to the model.

Transport policy (the model decides counting and disabling, from the push-results fed back):
- result: ``push-result ok`` -> delivered.
- error ``wait``: ``push-result wait`` (never counted) each time, then retried with exponential
  backoff and jitter, up to ``max_attempts`` sends in all; after the last one the push is given up
  (logged and reported as ``gave-up``; nothing more is fed: the model already saw every wait).
- any other error (or one without a type): ``push-result`` with that type (None for no type):
  counted by the model; not retried.
- no answer within ``iq_timeout``: retried like ``wait`` but not fed (nothing was answered); when
  the last attempt also times out, ``push-result`` with error_type None is fed: a counted error.
- Before each attempt the registration must still be enabled (the model's ENABLED_STATES): a push
  to a registration disabled meanwhile is dropped and reported, never sent.
- ``close()`` waits up to ``grace`` seconds for every queued push to be sent and answered; what is
  still queued then is reported ``undelivered`` (logged), never silently lost.
One registration's pushes are sent one at a time in the order decided (so a push-result is
always the answer to the most recent push); registrations do not wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from pushrules.generated.events import PushResult
from pushrules.model.actions import ENABLED_STATES
from pushrules.model.events import TRANSIENT_ERROR
from pushrules.model.records import Push, RegKey
from pushrules.model.world import ImpossibleEvent

from .metrics import NO_METRICS, Metrics
from .transport import Answer

log = logging.getLogger(__name__)

Send = Callable[[Push], Awaitable[Answer]]

REPORT_ATTEMPTS = 4
DELIVERED, ERROR, GAVE_UP, DROPPED, UNDELIVERED = (
    "delivered", "error", "gave-up", "dropped", "undelivered")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    """Sends of one push in all, for wait errors and timeouts."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("max_attempts must be at least 1 and backoff times not negative")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one push (``push.to_json()`` is safe to print: no secret)."""

    push: Push
    status: str
    attempts: int
    answer: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.push.to_json(), "status": self.status, "attempts": self.attempts,
                "answer": self.answer}


@dataclass
class _Queue:
    pushes: deque[Push] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Dispatcher:
    """Feeds pushes to ``send`` and every answer back into ``engine`` as a push-result."""

    def __init__(self, engine: Any, send: Send, policy: RetryPolicy | None = None, *,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_in_flight: int = 512, metrics: Metrics = NO_METRICS) -> None:
        self.engine = engine
        self.metrics = metrics
        self.send = send
        self.policy = policy or RetryPolicy()
        self.on_outcome = on_outcome
        self.sleep = sleep
        self.counts: dict[str, int] = dict.fromkeys(
            (DELIVERED, ERROR, GAVE_UP, DROPPED, UNDELIVERED), 0)
        self._queues: dict[RegKey, _Queue] = {}
        # Publishes awaiting an answer at once (over all registrations): a burst to many
        # registrations must not flood the server; a backoff sleep holds no slot.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # --- feeding -----------------------------------------------------------------------------
    def handle(self, event: Any) -> list[Push]:
        """``engine.handle(event)`` and queue the pushes it decided (ImpossibleEvent passes)."""
        start = time.perf_counter()
        pushes = self.engine.handle(event)
        self.metrics.decide_seconds(time.perf_counter() - start)
        self.submit(pushes)
        return pushes

    def submit(self, pushes: Iterable[Push]) -> None:
        for push in pushes:
            if self._closed:
                self._finish(Outcome(push, UNDELIVERED, 0, "dispatcher closed"))
                continue
            key = (push.user, push.jid, push.node)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            queue.pushes.append(push)
            if queue.task is None:
                queue.task = asyncio.get_running_loop().create_task(self._drain_queue(key))
            self._idle.clear()

    @property
    def pending(self) -> int:
        return sum(len(q.pushes) for q in self._queues.values())

    async def drain(self) -> None:
        """Wait until every push submitted so far is finished."""
        await self._idle.wait()

    async def close(self, grace: float | None = None) -> None:
        """Stop taking pushes; wait up to ``grace`` seconds for the queued ones; report the rest
        undelivered."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), grace)
        for queue in list(self._queues.values()):
            if queue.task is not None:
                queue.task.cancel()
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for key, queue in list(self._queues.items()):
            while queue.pushes:
                self._finish(Outcome(queue.pushes.popleft(), UNDELIVERED, 0,
                                     "shut down before it was answered"))
            del self._queues[key]
        self._idle.set()

    # --- one registration --------------------------------------------------------------------
    async def _drain_queue(self, key: RegKey) -> None:
        queue = self._queues[key]
        try:
            while queue.pushes:
                push = queue.pushes[0]
                outcome = await self._deliver(push)
                queue.pushes.popleft()
                self._finish(outcome)
        except Exception:  # a defect must not silently stop this registration's queue
            log.exception("dispatch to %s %s failed", key[1], key[2])
            while queue.pushes:
                self._finish(Outcome(queue.pushes.popleft(), UNDELIVERED, 0, "internal error"))
        finally:
            queue.task = None
            if not queue.pushes and self._queues.get(key) is queue:
                del self._queues[key]
            if not self._queues:
                self._idle.set()

    async def _deliver(self, push: Push) -> Outcome:
        attempts = 0

        async def attempt() -> Answer | None:
            nonlocal attempts
            if not self._enabled(push):
                return None
            attempts += 1
            async with self._slots:
                answer = await self.metrics.publish(self.send, push)
            if not answer.ok and answer.error_type == TRANSIENT_ERROR:
                await self._report(push, answer.ok, TRANSIENT_ERROR)
            return answer

        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
            + wait_random(0, policy.jitter),
            retry=retry_if_result(_transient),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self.sleep,
        )
        answer = await retrying(attempt)
        if answer is None:
            return Outcome(push, DROPPED, attempts, "registration no longer enabled")
        if answer.ok:
            await self._report(push, True, None)
            return Outcome(push, DELIVERED, attempts, answer.describe())
        if answer.timed_out:
            await self._report(push, False, None)
            return Outcome(push, ERROR, attempts, answer.describe())
        if answer.error_type == TRANSIENT_ERROR:
            return Outcome(push, GAVE_UP, attempts, answer.describe())
        await self._report(push, False, answer.error_type)
        return Outcome(push, ERROR, attempts, answer.describe())

    def _enabled(self, push: Push) -> bool:
        # Unknown to this engine (e.g. state held in a store): the decision stands.
        reg = self.engine.registration((push.user, push.jid, push.node))
        return reg is None or reg.state in ENABLED_STATES

    async def _report(self, push: Push, ok: bool, error_type: str | None) -> None:
        """Feed the answer to the model. An engine over a store may fail transiently
        (StoreUnavailable: the same event again is safe), so a failure is tried again a few
        times, then logged with what was not recorded."""
        event = PushResult(user=push.user, jid=push.jid, node=push.node, ok=ok,
                           error_type=None if ok else error_type)
        for attempt in range(REPORT_ATTEMPTS):
            try:
                self.engine.handle(event)
                if not ok:
                    self.metrics.push_error(error_type, not self._enabled(push))
                return
            except ImpossibleEvent as exc:
                log.warning("push-result for %s %s not applied: %s", push.jid, push.node, exc)
                return
            except Exception as exc:
                if attempt + 1 == REPORT_ATTEMPTS:
                    log.error("push-result (ok=%s, error_type=%s) for %s %s not recorded: %s: %s",
                              ok, error_type, push.jid, push.node, type(exc).__name__, exc)
                    return
                await self.sleep(0.1 * 2 ** attempt)

    def _finish(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self.metrics.push_outcome(outcome.push.rule, outcome.status)
        push = outcome.push
        if outcome.status in (GAVE_UP, UNDELIVERED, DROPPED):
            log.warning("push %s to %s %s (stanzas %s): %s after %d attempt(s): %s",
                        push.rule, push.jid, push.node, ",".join(map(str, push.stanzas)),
                        outcome.status, outcome.attempts, outcome.answer)
        if self.on_outcome is not None:
            self.on_outcome(outcome)


def _transient(answer: Answer | None) -> bool:
    return answer is not None and not answer.ok and (answer.timed_out
                                                     or answer.error_type == TRANSIENT_ERROR)
