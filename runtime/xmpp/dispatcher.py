"""Sending decided pushes: one ordered queue per registration, retries, answers back to the model.

Transport policy (the model decides counting and disabling, from the push-results fed back):
- result: ``push-result ok`` -> delivered.
- error ``wait``: ``push-result wait`` (never counted) each time, then retried with exponential
  backoff and jitter, up to ``max_attempts`` sends in all; after the last one the push is given up
  (logged and reported as ``gave-up``; nothing more is fed: the model already saw every wait).
- any other error (or one without a type): ``push-result`` with that type (None for no type):
  counted by the model; not retried.
- no answer within ``iq_timeout``: retried like ``wait`` but not fed (nothing was answered); when
  the last attempt also times out, the model's option ``final_timeout_counts`` decides: on (the
  default), ``push-result`` with error_type None is fed (a counted error); off, it is given up.
- Before each attempt the registration must still be enabled (the model's ENABLED_STATES): a push
  to a registration disabled meanwhile is dropped and reported, never sent. (A push queued
  behind another of its registration is read by the commit that recorded the answer to that
  one: the engine's copy; over a store that batches, that round trip also counts its send, and
  the other sends of one loop iteration have their registrations read in one round trip.)
- ``close()`` waits up to ``grace`` seconds for every queued push to be sent and answered; what is
  still queued then is reported ``undelivered`` (logged), never silently lost. A send whose
  answer arrived is finished as answered, however late.
- Over a durable outbox (StoredEngine): each send is counted in the store before it goes out;
  the push-result commit that feeds an answer also removes the push from the outbox; a push
  given up or dropped is removed; an undelivered one stays for the next run (``resume``).
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
from pushrules.runtime.store.base import StoreUnavailable
from pushrules.runtime.store.engine import OutboxEntry

from .metrics import NO_METRICS, Metrics
from .transport import Answer

log = logging.getLogger(__name__)

Send = Callable[[Push], Awaitable[Answer]]

REPORT_ATTEMPTS = 4
REPORT_LANE = "push-results"
"""The engine lane of the answers fed back (apart from the readers' events)."""
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


@dataclass(slots=True)
class _Report:
    """An answer waiting to be fed to the model (``done``: the error it ended with)."""

    event: PushResult
    settle: tuple[str, ...]
    done: asyncio.Future[Exception | None]


@dataclass
class _Queue:
    entries: deque[OutboxEntry] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    read: bool = False
    """The round trip that recorded the answer to the push before the first one landed: it
    read the registration (the engine's copy of its user is what the store held then)."""


class _Aborted(Exception):
    """close()'s grace ran out while a send or a backoff was waiting."""


class Dispatcher:
    """Feeds pushes to ``send`` and every answer back into ``engine`` as a push-result.

    Over an engine with a durable outbox (``StoredEngine``) each push is an entry of the
    store's outbox: every send is counted there first, the push-result that answers it
    removes it in the same commit, and ``resume(engine.outbox_pending())`` sends again what an
    earlier run left."""

    def __init__(self, engine: Any, send: Send, policy: RetryPolicy | None = None, *,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_in_flight: int = 512,
                 ready: Callable[[], Awaitable[Any]] | None = None,
                 metrics: Metrics = NO_METRICS,
                 flush: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.flush = flush
        """For a store that commits once per loop iteration: called (once per iteration)
        before pushes are sent, so that each is durable, with its attempt counted, first."""
        self.flush_waiting: Callable[[], bool] = lambda: True
        """Whether ``flush`` has anything to send (the store may have sent it already, with
        another round trip: then a send need not wait for the flush)."""
        self._barrier: asyncio.Future[None] | None = None
        self.metrics = metrics
        self.ready = ready
        """Awaited before each send is counted (e.g. until the connection is up)."""
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
        self._changed = asyncio.Event()
        self._abort = asyncio.Event()
        self._abortable: set[asyncio.Task[Any]] = set()
        self._pending = 0
        self._closed = False
        self._durable = bool(getattr(engine, "outbox", False)) and hasattr(engine,
                                                                           "outbox_pending")
        self._batch_checks = hasattr(engine, "current_registrations") and bool(
            getattr(getattr(engine, "store", None), "batches", False))
        """Whether the "still enabled?" reads of one loop iteration go in one round trip."""
        self._checks: list[tuple[Push, asyncio.Future[str | None]]] = []
        self._ahead: dict[int, OutboxEntry] = {}
        """Entries (by id) whose next send was counted with the answer before them."""
        self._lanes = hasattr(engine, "handle_many")
        """Whether the engine takes a ``lane`` (a StoredEngine: see ``handle``)."""
        self._batch_reports = self._batch_checks and self._lanes
        self._reads_copy = hasattr(engine, "cached_registration")
        """Whether a push queued behind another is read from the engine's copy, which the
        commit of the answer before it read (a StoredEngine)."""
        """Whether the push-results of one loop iteration are applied in one round trip."""
        self._reports: list[_Report] = []
        self._report_task: asyncio.Task[None] | None = None

    # --- feeding -----------------------------------------------------------------------------
    def handle(self, event: Any, lane: str | None = None) -> list[Push]:
        """``engine.handle(event)`` and queue the pushes it decided (ImpossibleEvent passes).
        ``lane`` names the caller to an engine over a store (each caller that retries its own
        events after StoreUnavailable has its own: see ``StoredEngine.handle``)."""
        start = time.perf_counter()
        pushes: list[Push] = (self.engine.handle(event, lane=lane) if self._lanes
                              else self.engine.handle(event))
        self.metrics.decide_seconds(time.perf_counter() - start)
        entries = getattr(self.engine, "last_entries", None) if self._durable else None
        if entries is not None and len(entries) == len(pushes):
            self.resume(entries)
        else:
            self.submit(pushes)
        return pushes

    def handle_many(self, events: list[Any], lane: str | None = None) -> list[Any]:
        """``engine.handle_many(events)`` (a StoredEngine's: several users' events in one
        round trip) and queue the pushes of each event applied; one ``Handled`` per event
        (its ``error`` says why it was not applied). ``lane``: as ``handle``'s."""
        start = time.perf_counter()
        results: list[Any] = self.engine.handle_many(events, lane=lane)
        if events:
            self.metrics.decide_seconds((time.perf_counter() - start) / len(events))
        for handled in results:
            if handled.error is not None:
                continue
            if self._durable and len(handled.entries) == len(handled.pushes):
                self.resume(handled.entries)
            else:
                self.submit(handled.pushes)
        return results

    def submit(self, pushes: Iterable[Push]) -> None:
        """Queue pushes held in memory only."""
        self.resume(OutboxEntry(push) for push in pushes)

    def resume(self, entries: Iterable[OutboxEntry]) -> None:
        """Queue outbox entries (decided now, or left by an earlier run), in their order."""
        for entry in entries:
            push = entry.push
            if self._closed:
                self._finish(Outcome(push, UNDELIVERED, entry.attempts, "dispatcher closed"))
                continue
            key = (push.user, push.jid, push.node)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            queue.entries.append(entry)
            self._pending += 1
            if queue.task is None:
                queue.task = asyncio.get_running_loop().create_task(self._drain_queue(key))
            self._idle.clear()

    @property
    def pending(self) -> int:
        """Pushes queued or being sent."""
        return self._pending

    async def room(self, bound: int) -> None:
        """Wait until at most ``bound`` pushes are pending (the caller's backpressure)."""
        while self._pending > bound and not self._closed:
            self._changed.clear()
            await self._changed.wait()

    async def drain(self) -> None:
        """Wait until every push submitted so far is finished."""
        await self._idle.wait()

    async def close(self, grace: float | None = None) -> None:
        """Stop taking pushes; wait up to ``grace`` seconds for the queued ones; report the rest
        undelivered (a durable outbox keeps them for the next run). A send already answered
        is always finished as answered."""
        self._closed = True
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), grace)
        self._abort.set()
        for task in list(self._abortable):
            task.cancel()
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for key, queue in list(self._queues.items()):
            while queue.entries:
                entry = self._take(queue)
                why = ("sent, not answered before shutdown" if entry.attempts
                       else "shut down before it was sent")
                self._unfinished(entry, why)
            del self._queues[key]
        self._idle.set()

    # --- one registration --------------------------------------------------------------------
    async def _drain_queue(self, key: RegKey) -> None:
        queue = self._queues[key]
        try:
            while queue.entries and not self._abort.is_set():
                entry = queue.entries[0]
                try:
                    outcome = await self._deliver(entry, queue)
                except _Aborted:
                    break
                self._take(queue)
                self._finish(outcome, entry)
        except Exception as exc:  # a defect must not silently stop this registration's queue
            log.error("dispatch to %s %s failed: %s: %s", key[1], key[2], type(exc).__name__,
                      exc)
            while queue.entries:
                self._unfinished(self._take(queue), f"internal error ({exc})")
        finally:
            queue.task = None
            if not queue.entries and self._queues.get(key) is queue:
                del self._queues[key]
            if not self._queues:
                self._idle.set()

    def _take(self, queue: _Queue) -> OutboxEntry:
        self._pending -= 1
        self._changed.set()
        entry = queue.entries.popleft()
        if self._ahead.pop(id(entry), None) is not None:
            entry.attempts -= 1  # counted ahead, never sent (its stored count stays ahead)
        return entry

    async def _until_aborted(self, awaitable: Awaitable[Any]) -> Any:
        """``await awaitable`` unless close()'s grace runs out first (then _Aborted).

        Awaited in this task (close() cancels the tasks waiting here): a task and a wait per
        step cost a loop iteration each, and a busy reader makes every iteration long."""
        if self._abort.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _Aborted
        task = asyncio.current_task()
        assert task is not None
        self._abortable.add(task)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self._abort.is_set():
                raise
            task.uncancel()
            raise _Aborted from None
        finally:
            self._abortable.discard(task)

    async def _deliver(self, entry: OutboxEntry, queue: _Queue | None = None) -> Outcome:
        push = entry.push
        read = queue is not None and queue.read  # (the answer before this one read it)
        if queue is not None:
            queue.read = False

        async def attempt() -> Answer | str:
            nonlocal read
            if self.ready is not None and not _already(self.ready):
                await self._until_aborted(self.ready())
            reason = await self._checked_and_counted(entry, read)
            read = False  # (a retry reads the store again)
            if reason is not None:
                return reason
            if self.flush is not None and self.flush_waiting():
                await self._until_aborted(self._committed())
            async with self._slots:
                answer: Answer = await self._until_aborted(
                    self.metrics.publish(self.send, push))
            if not answer.ok and answer.error_type == TRANSIENT_ERROR:
                await self._report(entry, answer.ok, TRANSIENT_ERROR, settles=False)
            return answer

        async def sleep(seconds: float) -> None:
            await self._until_aborted(self.sleep(seconds))

        answer = await attempt()
        if _transient(answer) and self.policy.max_attempts > 1:
            # Most pushes are answered at once: tenacity's machinery (a retry object, its state
            # and an iteration of actions per call) is only set up for the ones that retry.
            # Its first attempt is the one already made, so schedule and count are unchanged.
            answer = await self._retrying(sleep)(_first_then(answer, attempt))
        attempts = entry.attempts
        if isinstance(answer, str):
            return Outcome(push, DROPPED, attempts, answer)
        if answer.ok:
            await self._report(entry, True, None, queue)
            return Outcome(push, DELIVERED, attempts, answer.describe())
        if answer.timed_out:
            # The model's option decides whether a final timeout counts (model/config.py).
            if self.engine.config.final_timeout_counts:
                await self._report(entry, False, None, queue)
                return Outcome(push, ERROR, attempts, answer.describe())
            return Outcome(push, GAVE_UP, attempts, answer.describe())
        if answer.error_type == TRANSIENT_ERROR:
            return Outcome(push, GAVE_UP, attempts, answer.describe())
        await self._report(entry, False, answer.error_type, queue)
        return Outcome(push, ERROR, attempts, answer.describe())

    async def _checked_and_counted(self, entry: OutboxEntry, read: bool) -> str | None:
        """Why the push must not be sent (``_not_enabled``; read from the engine's copy when
        the commit of the answer before it ``read`` the registration), or None once its send
        is counted. Over a store that batches, the count goes first, in the checks' round
        trip (the store sends waiting counts with its next batch), or it went with the
        answer before it (``_count_ahead``): a push found disabled then was counted ahead,
        never sent; its entry is removed with it, so only the outcome's figure is taken
        back."""
        reason: str | None
        if not self._batch_checks:
            reason = (self._not_enabled_in_copy(entry.push) if read
                      else self._not_enabled(entry.push))
            if reason is None:
                self._count_attempt(entry)
            return reason
        if self._ahead.pop(id(entry), None) is None:
            self._count_attempt(entry)
        try:
            reason = self._not_enabled_in_copy(entry.push) if read else None
            if reason is None and not read:
                reason = await self._until_aborted(self._enabled_check(entry.push))
        except _Aborted:
            entry.attempts -= 1  # (its stored count stays one ahead: the next run's budget)
            raise
        if reason is not None:
            entry.attempts -= 1
        return reason

    def _not_enabled_in_copy(self, push: Push) -> str | None:
        """``_not_enabled`` read from the engine's copy, or by a round trip if it holds none."""
        if not self._reads_copy:
            return self._not_enabled(push)
        key = (push.user, push.jid, push.node)
        try:
            reg = self.engine.cached_registration(key)
        except KeyError:  # (evicted from its cache since)
            return self._not_enabled(push)
        except Exception as exc:
            reg = exc
        return self._why_not(push, reg)

    def _count_ahead(self, queue: _Queue | None) -> None:
        """Count the send of the push queued behind the one answered now: the count goes in
        the round trip that records this answer (before its send, as every count)."""
        if queue is None or len(queue.entries) < 2 or not self._batch_reports:
            return
        entry = queue.entries[1]
        if id(entry) not in self._ahead:
            self._count_attempt(entry)
            self._ahead[id(entry)] = entry

    def _retrying(self, sleep: Callable[[float], Awaitable[None]]) -> AsyncRetrying:
        policy = self.policy
        return AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
            + wait_random(0, policy.jitter),
            retry=retry_if_result(_transient),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=sleep,
            reraise=True,
        )

    async def _committed(self) -> None:
        """Until the store committed what this iteration wrote (one commit for all sends)."""
        barrier = self._barrier
        if barrier is None:
            loop = asyncio.get_running_loop()
            barrier = self._barrier = loop.create_future()
            loop.call_soon(self._commit_barrier)
        await asyncio.shield(barrier)

    def _commit_barrier(self) -> None:
        barrier, self._barrier = self._barrier, None
        try:
            assert self.flush is not None
            self.flush()
        except Exception as exc:  # the pushes were decided: sent rather than lost
            log.error("pushes sent before their decision was committed: %s: %s",
                      type(exc).__name__, exc)
        if barrier is not None and not barrier.done():
            barrier.set_result(None)

    def _count_attempt(self, entry: OutboxEntry) -> None:
        if not self._durable:
            entry.attempts += 1
            return
        try:
            self.engine.outbox_attempt(entry)
        except Exception as exc:  # the send goes ahead; only the count of a crash is lower
            log.warning("send of %s %s not counted in the outbox: %s: %s", entry.push.jid,
                        entry.push.node, type(exc).__name__, exc)

    def _not_enabled(self, push: Push) -> str | None:
        """Why the push must not be sent (its registration is no longer enabled), or None.
        Unknown to the engine (e.g. an engine without the user's state): the decision stands."""
        key = (push.user, push.jid, push.node)
        current = getattr(self.engine, "current_registration", self.engine.registration)
        try:
            reg = current(key)
        except Exception as exc:
            reg = exc
        return self._why_not(push, reg)

    async def _enabled_check(self, push: Push) -> str | None:
        """``_not_enabled`` over a store that batches: the pushes about to be sent in one loop
        iteration have their registrations read in one round trip."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        if not self._checks:
            loop.call_soon(self._run_checks)
        self._checks.append((push, future))
        return await future

    def _run_checks(self) -> None:
        checks, self._checks = self._checks, []
        keys = [(push.user, push.jid, push.node) for push, _ in checks]
        try:
            regs = self.engine.current_registrations(keys)
        except Exception as exc:  # a defect: each push as decided, as when a read fails
            regs = [exc] * len(checks)
        for (push, future), reg in zip(checks, regs, strict=True):
            if not future.done():  # (not aborted meanwhile)
                future.set_result(self._why_not(push, reg))

    def _why_not(self, push: Push, reg: Any) -> str | None:
        """What ``_not_enabled`` says of the registration read (an exception: unreadable)."""
        if isinstance(reg, Exception):  # the store is down: the decision stands
            log.warning("state of %s %s not readable before sending (%s: %s); sending as "
                        "decided", push.jid, push.node, type(reg).__name__, reg)
            return None
        if reg is None or reg.state in ENABLED_STATES:
            return None
        why = f": {reg.reason}" if reg.reason else ""
        return f"registration {reg.state} before it was sent{why}"

    async def _report(self, entry: OutboxEntry, ok: bool, error_type: str | None,
                      queue: _Queue | None = None, *, settles: bool = True) -> None:
        """Feed the answer to the model (settling the outbox entry in the same commit). An
        engine over a store may fail transiently (StoreUnavailable: the same event again is
        safe), so a failure is tried again a few times, then logged with what was not
        recorded (the entry then stays in the outbox: sent again after a restart). Over a
        store that batches, the answers of one loop iteration go in one round trip."""
        push = entry.push
        event = PushResult(user=push.user, jid=push.jid, node=push.node, ok=ok,
                           error_type=None if ok else error_type)
        settle = (entry.key,) if settles and self._durable and entry.key is not None else ()
        if settles:
            self._count_ahead(queue)
        error = (await self._batched_report(event, settle) if self._batch_reports
                 else await self._report_now(event, settle))
        if (error is None and settles and queue is not None and self._reads_copy
                and len(queue.entries) > 1):
            queue.read = True  # (for the push behind this one: the next this queue sends)
        if error is None:
            if not ok:  # (the copy the commit just read says whether it disabled it)
                self.metrics.push_error(error_type, self._not_enabled_in_copy(push) is not None)
        elif isinstance(error, ImpossibleEvent):
            log.warning("push-result for %s %s not applied: %s", push.jid, push.node, error)
            if settle:
                self._remove(entry)
        else:
            log.error("push-result (ok=%s, error_type=%s) for %s %s not recorded: %s: %s",
                      ok, error_type, push.jid, push.node, type(error).__name__, error)

    async def _report_now(self, event: PushResult, settle: tuple[str, ...]
                          ) -> Exception | None:
        """``engine.handle(event)``, tried again on failure: the error it ended with."""
        options: dict[str, Any] = {"lane": REPORT_LANE} if self._lanes else {}
        if settle:
            options["settle"] = settle
        error: Exception | None = None
        for attempt in range(REPORT_ATTEMPTS):
            if attempt:
                await self.sleep(0.1 * 2 ** (attempt - 1))  # not aborted: the answer is in hand
            try:
                self.engine.handle(event, **options)
                return None
            except ImpossibleEvent as exc:
                return exc
            except Exception as exc:
                error = exc
        return error

    def _batched_report(self, event: PushResult, settle: tuple[str, ...]
                        ) -> asyncio.Future[Exception | None]:
        """The answer joins this loop iteration's others (one ``handle_many``); a future of
        the error it ended with."""
        loop = asyncio.get_running_loop()
        report = _Report(event, settle, loop.create_future())
        self._reports.append(report)
        if self._report_task is None:
            self._report_task = loop.create_task(self._run_reports())
        return report.done

    async def _run_reports(self) -> None:
        """Apply the waiting answers, a batch at a time: one batch is retried (in order, as
        the engine requires) before the next is applied; answers arriving meanwhile wait."""
        try:
            while self._reports:
                batch, self._reports = self._reports, []
                await self._apply_reports(batch)
        finally:
            self._report_task = None

    async def _apply_reports(self, batch: list[_Report]) -> None:
        for attempt in range(REPORT_ATTEMPTS):
            try:
                results = self.engine.handle_many([r.event for r in batch],
                                                  settles=[r.settle for r in batch],
                                                  lane=REPORT_LANE)
                errors = [handled.error for handled in results]
            except Exception as exc:  # a defect: every answer of the batch unrecorded
                errors = [exc] * len(batch)
            again = []
            for report, error in zip(batch, errors, strict=True):
                # Only these are to be handled again (and only they, in order: the engine
                # resends their commits); any other error is the answer's last word.
                if isinstance(error, StoreUnavailable) and attempt + 1 < REPORT_ATTEMPTS:
                    again.append(report)
                elif not report.done.done():
                    report.done.set_result(error)
            if not again:
                return
            batch = again
            await self.sleep(0.1 * 2 ** attempt)  # not aborted: the answers are in hand

    def _remove(self, entry: OutboxEntry) -> None:
        if not self._durable:
            return
        try:
            self.engine.outbox_remove(entry)
        except Exception as exc:
            log.warning("outbox entry for %s %s not removed (sent again after a restart): "
                        "%s: %s", entry.push.jid, entry.push.node, type(exc).__name__, exc)

    def _unfinished(self, entry: OutboxEntry, why: str) -> None:
        kept = "; kept in the outbox for the next start" if self._durable and entry.key else ""
        self._finish(Outcome(entry.push, UNDELIVERED, entry.attempts, why + kept))

    def _finish(self, outcome: Outcome, entry: OutboxEntry | None = None) -> None:
        if entry is not None and outcome.status in (GAVE_UP, DROPPED):
            self._remove(entry)  # nothing was fed that could settle it
        self.counts[outcome.status] += 1
        self.metrics.push_outcome(outcome.push.rule, outcome.status)
        push = outcome.push
        if outcome.status in (GAVE_UP, UNDELIVERED, DROPPED):
            log.warning("push %s to %s %s (stanzas %s): %s after %d attempt(s): %s",
                        push.rule, push.jid, push.node, ",".join(map(str, push.stanzas)),
                        outcome.status, outcome.attempts, outcome.answer)
        if self.on_outcome is not None:
            self.on_outcome(outcome)


def _transient(answer: Answer | str | None) -> bool:
    return isinstance(answer, Answer) and not answer.ok and (
        answer.timed_out or answer.error_type == TRANSIENT_ERROR)


def _first_then(first: Answer | str, attempt: Callable[[], Awaitable[Answer | str]]
                ) -> Callable[[], Awaitable[Answer | str]]:
    """``attempt`` whose first call returns ``first`` (an answer already in hand)."""
    given = [first]

    async def again() -> Answer | str:
        return given.pop() if given else await attempt()

    return again


def _already(ready: Callable[[], Awaitable[Any]]) -> bool:
    """``ready`` is an asyncio.Event's ``wait`` and the event is set: nothing to wait for."""
    event = getattr(ready, "__self__", None)
    return isinstance(event, asyncio.Event) and event.is_set()
