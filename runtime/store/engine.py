"""The engine over a store: each event loads its user's state, runs, and commits what changed.

Pushes are returned only after the commit succeeded. When another writer (a second node) changed
the same user in between, the commit is refused and the event is run again on the fresh state;
the pushes of the refused attempt are dropped, so no stanza is pushed twice and no update is lost.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pushrules.generated import tables
from pushrules.model.config import Config
from pushrules.model.context import Ctx
from pushrules.model.events import EVENTS_BY_NAME, SESSION
from pushrules.model.records import Push, RegistrationRecord, RegKey, SessionRecord
from pushrules.runtime.engine import _with_push_flag

from .base import (
    BatchCheck,
    RegId,
    Row,
    Store,
    StoreConflict,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    UserChanges,
    UserSnapshot,
    has_time_facts,
    new_token,
    outbox_key,
    outbox_row,
    push_from_row,
    pushed_delta,
    registration_from_row,
    registration_row,
    session_from_row,
    session_row,
)
from .due import UNKEPT, Attempt, StoredTime

TIMER_EVENT = "expire"
"""The model's timer event (model/registration.py TIMER_EVENTS) a store's orphan TTL fires."""


def event_user(event: Any) -> str:
    """The bare JID of the one user an event concerns."""
    spec = EVENTS_BY_NAME[event.EVENT]
    value: str = getattr(event, spec.user_field)
    return value.split("/", 1)[0] if spec.target == SESSION else value


def _diff(records: dict[Any, Any], old_rows: dict[Any, Row],
          to_row: Callable[[Any], Row]) -> tuple[dict[Any, Row], dict[Any, Row]]:
    """(every record's row, the rows that differ from old_rows). Unchanged rows are the old
    objects, so a cached snapshot shares them instead of holding copies."""
    rows: dict[Any, Row] = {}
    changed: dict[Any, Row] = {}
    for key, rec in records.items():
        row = to_row(rec)
        old = old_rows.get(key)
        if old == row:
            row = old
        else:
            changed[key] = row
        rows[key] = row
    return rows, changed


def _diff_touched(records: dict[Any, Any], old_rows: dict[Any, Row], touched: set[Any],
                  to_row: Callable[[Any], Row]) -> tuple[dict[Any, Row], dict[Any, Row],
                                                         list[Any]]:
    """``_diff`` of the records built for the event (every one it touched: no other can have
    changed): (every record's row, the rows that differ from old_rows, the ``touched`` keys
    whose record is gone). The others' rows are old_rows' objects, in old_rows' order."""
    changed: dict[Any, Row] = {}
    for key, rec in records.items():
        row = to_row(rec)
        if old_rows.get(key) != row:
            changed[key] = row
    gone = [key for key in touched if key not in records and key in old_rows]
    if not changed and not gone:
        return old_rows, changed, gone
    if gone:
        if len(gone) > 1:
            gone = [key for key in old_rows if key in gone]  # (in the old order)
        rows = {key: row for key, row in old_rows.items() if key not in gone}
    else:
        rows = dict(old_rows)
    rows.update(changed)  # (one stored anew goes last, where the records have it)
    return rows, changed, gone


def _timers_after(snapshot: UserSnapshot, changes: UserChanges) -> tuple[tuple[str, str], ...]:
    """The orphan TTLs running once ``changes`` are committed (the store starts one for each
    registration the commit leaves orphaned, keeps those still orphaned, stops the others)."""
    put = changes.registrations_put
    kept = tuple(reg for reg in snapshot.timers if reg not in put)
    if not changes.orphan_ttl:
        return kept
    return kept + tuple(reg for reg, row in put.items() if row["state"] == "orphaned")


def _registration_deltas(snapshot: UserSnapshot, changes: UserChanges) -> None:
    """Fill in, for each put registration, its dedup ids' delta and its state before."""
    for reg, row in changes.registrations_put.items():
        old = snapshot.registrations.get(reg)
        old_pushed = [] if old is None else old["pushed"]
        if old_pushed != row["pushed"]:
            changes.pushed_ops[reg] = pushed_delta(old_pushed, row["pushed"])
        if old is not None:
            changes.previous_states[reg] = old["state"]


def _writes_nothing(snapshot: UserSnapshot, changes: UserChanges,
                    but_settles: bool = False) -> bool:
    """Whether the commit would write nothing (``but_settles``: besides its settles)."""
    return (changes.facts is None and not changes.registrations_del
            and not changes.sessions_put and not changes.sessions_del and not changes.audit
            and not changes.registrations_put and changes.seq == snapshot.seq
            and not changes.outbox_put and (but_settles or not changes.outbox_del))


@dataclass(frozen=True, slots=True)
class Timer:
    """What a store's clock fires: the model's timer event, shown as such by --explain."""

    EVENT = TIMER_EVENT


@dataclass(slots=True)
class _Pending:
    event: Any
    changes: UserChanges
    pushes: list[Push]
    settle: tuple[str, ...]


@dataclass(slots=True)
class Handled:
    """What ``handle_many`` did with one event: its pushes and their outbox entries, or the
    error that kept it from being applied (``StoreUnavailable``: handle it again)."""

    pushes: list[Push] = field(default_factory=list)
    entries: list[OutboxEntry] = field(default_factory=list)
    error: Exception | None = None
    version: int = 0
    """The user's version its outcome belongs to (``last_version`` of ``handle``)."""
    committed: bool = False
    """Whether it made a commit (else it changed nothing: it read ``version``)."""


@dataclass(slots=True)
class _Step:
    """One event of a batch as first run: on which copy, with what outcome."""

    index: int
    event: Any
    user: str
    clock: float
    """The engine's clock before it ran (a rerun starts there again)."""
    version: int = 0
    """The version of the copy it ran on."""
    settle: tuple[str, ...] = ()
    """The outbox entries it settles (``handle``'s ``settle``)."""
    pushes: list[Push] = field(default_factory=list)
    changes: UserChanges | None = None
    error: Exception | None = None
    op: int = -1
    """Its commit or check in the batch's ops (-1: none: its outcome is final)."""
    made: UserSnapshot | None = None
    """The copy its commit makes (the next event of its user runs on it)."""


@dataclass(slots=True)
class _Batch:
    events: list[Any]
    settles: list[tuple[str, ...]]
    steps: list[_Step]
    ops: list[UserChanges | BatchCheck]
    results: list[Handled | None]


def _in_order(items: list[Any], handled: Callable[[Any], Handled]) -> list[Handled]:
    """``handled`` of each item in order; an error is that item's result, and after a
    ``StoreUnavailable`` the rest are not run (a user's events stay in order): the same error."""
    results: list[Handled] = []
    unavailable: StoreUnavailable | None = None
    for item in items:
        if unavailable is not None:
            results.append(Handled(error=unavailable))
            continue
        try:
            results.append(handled(item))
        except StoreUnavailable as exc:
            unavailable = exc
            results.append(Handled(error=exc))
        except Exception as exc:  # ImpossibleEvent, StoreCorrupt...: this item only
            results.append(Handled(error=exc))
    return results


@dataclass(slots=True)
class OutboxEntry:
    """A decided push on its way: ``key`` names it in the user's outbox (None: not stored),
    ``attempts`` counts the sends started, including those of earlier runs."""

    push: Push
    key: str | None = None
    attempts: int = 0


class StoredEngine(StoredTime):
    """``Engine`` whose state lives in a store (see ``open_store``). ``handle`` may raise
    ``StoreUnavailable`` (nothing applied; handle the same event again to retry) besides
    ``ImpossibleEvent``. ``audit_log`` holds the entries of the last event only: the store
    keeps the history. One instance is not thread-safe; use one engine per thread or node.
    Like ``sessions`` and ``users``, ``chats`` and ``calls`` hold the last event's user only:
    the user's facts record (``user_facts``) is stored and installed with the rest. Of the
    user's sessions and registrations, only those the event touched are built as records.

    The state of the ``cache_users`` most recently seen users is kept as loaded; each load
    still asks the store, which answers "unchanged" (no rows) when the cached copy is current:
    a user's dedup ids (up to dedup_window per registration) are then not decoded again.

    With ``outbox`` (the default) every decided push is also stored in the user's outbox in
    the same commit as the dedup ids that decided it (``last_entries`` names them), until
    ``handle(push_result, settle=(key,))`` or ``outbox_remove`` settles it; ``outbox_pending``
    lists what a crashed run left. Without it, pushes live only in the caller's memory.

    ``handle_many(events)`` applies several events as ``handle`` would one by one, with one
    round trip for all their commits on a store that batches (a single Redis).

    The model's ``orphan_ttl`` runs by the events' clock on every store (due.py); a Redis key
    TTL started by an earlier version that fired makes the engine take the model's ``expire``
    transition (model/registration.py) before the event, committed with it."""

    # The contract's rows and the model's timer rows (only a store with a clock raises those).
    _REGISTRATION_ROWS = _with_push_flag(
        {state: {**by_event, **tables.REGISTRATION_TIMERS.get(state, {})}
         for state, by_event in tables.REGISTRATION.items()})

    def __init__(self, store: Store, config: Config | None = None, *, explain: bool = False,
                 clock: Any = time.time, max_attempts: int = 100,
                 cache_users: int = 1024, outbox: bool = True) -> None:
        super().__init__(config, explain=explain, clock=clock)
        self.store = store
        self.max_attempts = max_attempts
        self.commits = 0
        self.conflicts = 0
        self.before_commit: Callable[[UserChanges], None] | None = None
        """Called with the changes right before each commit (tests use it to interleave)."""
        self.last_version = 0
        """The user's version the last event's outcome belongs to: the one its commit made, or
        (when it changed nothing) the one it read. Orders events across nodes."""
        self.cache_users = cache_users
        self._cache: OrderedDict[str, UserSnapshot] = OrderedDict()
        self._user_seq = 0
        # What a StoreUnavailable left unknown, per lane (a caller that retries its own events
        # in order: a reader, the push-results): one caller's retry never drops another's.
        self._pending: dict[Hashable, _Pending] = {}
        self._pending_batch: dict[Hashable, _Batch] = {}
        self._next: UserSnapshot | None = None
        self.outbox = outbox
        self.last_entries: list[OutboxEntry] = []
        """The outbox entries of the pushes the last ``handle`` returned, in the same order."""
        self._touched_sessions: set[str] = set()
        self._touched_regs: set[RegId] = set()
        self._touched_all = False
        """What the current attempt touched (reset by ``_install``): the storage methods."""
        self._installed = UserSnapshot("")
        """The snapshot installed: the rows records are built from when touched."""

    def next_seq(self) -> int:
        # Enable order is compared within one user only, so the counter is the user's, stored.
        self._user_seq += 1
        return self._user_seq

    def handle(self, event: Any, *, settle: tuple[str, ...] = (),
               lane: Hashable = None) -> list[Push]:
        """Apply the event; ``settle``: keys of the user's outbox entries this event answers,
        removed in the same commit (a commit is made for them even if nothing else changed).
        ``lane``: the caller (callers that each retry their own events after StoreUnavailable,
        interleaved, each name theirs: the retry of one resends its commit whatever the
        others ran meanwhile)."""
        if event.EVENT == "tick":  # time passes for every user (due.py)
            return self.tick(event)
        user = event_user(event)
        self.last_entries = []
        pending = self._pending.pop(lane, None)
        # The same event again after StoreUnavailable: resend the same commit. It lands once
        # (the token makes a repeat a no-op) or, if the user moved on meanwhile, we run again.
        if (pending is not None and pending.event == event and pending.changes.user == user
                and pending.settle == settle):
            self._cache.pop(user, None)
            if self._commit(pending.changes, event, pending.pushes, settle, lane):
                self.last_entries = self._entries(pending.changes, pending.pushes)
                return pending.pushes
        pushes, self.last_entries = self._run_user(
            user, event, lambda snapshot, verified: self._attempt(event, snapshot, settle,
                                                                  verified),
            settle=settle, what=event.EVENT, lane=lane)
        return pushes

    def end_lane(self, lane: Hashable) -> None:
        """The caller of ``lane`` is gone (a connection closed): forget what it kept for a
        retry (an event whose outcome was unknown stays so: the store has it or not)."""
        self._pending.pop(lane, None)
        self._pending_batch.pop(lane, None)

    def _attempt(self, event: Any, snapshot: UserSnapshot, settle: tuple[str, ...],
                 verified: bool, settled_apart: bool = False
                 ) -> tuple[list[Push], UserChanges | None]:
        """One run of ``event`` on ``snapshot``: its pushes and what it changed (None).
        ``settled_apart``: the caller settles ``settle`` itself when nothing else changed."""
        self._install(snapshot)
        pushes = super().handle(event)
        return pushes, self._changes(snapshot, pushes, settle, verified, settled_apart)

    def _run_user(self, user: str, unit: Any, attempt: Attempt, *,
                  settle: tuple[str, ...] = (), cached: bool = True, what: str = "",
                  lane: Hashable = UNKEPT) -> tuple[list[Push], list[OutboxEntry]]:
        """Run ``attempt`` for ``user`` until its commit lands: on the cached copy first
        (``cached``) without asking the store, which refuses the commit unless that copy is
        still current; an attempt that changes nothing on an unchecked copy asks then whether
        it ran on the current one. Each refused commit: a randomised backoff, then again on
        fresh state (at most ``max_attempts``, then StoreConflict). The pushes and entries.
        A commit whose outcome a StoreUnavailable left unknown is kept for ``lane``'s retry
        (``UNKEPT``: for none, as due work, which is found again in the store)."""
        snapshot: UserSnapshot | None = self._cache.get(user) if cached else None
        verified = False
        for number in range(self.max_attempts):
            if snapshot is None:
                snapshot, verified = self._load(user), True
            try:
                pushes, changes = attempt(snapshot, verified)
            except Exception:  # ImpossibleEvent...: final only if the copy is current
                fresh = None if verified else self._fresher(snapshot)
                if fresh is None:
                    raise
                snapshot, verified = fresh, True
                continue
            if changes is None:
                fresh = None if verified else self._fresher(snapshot)
                if fresh is None:
                    self.last_version = snapshot.version
                    return pushes, [OutboxEntry(push) for push in pushes]
                snapshot, verified = fresh, True
                continue
            if self._commit(changes, unit, pushes, settle, lane):
                self._remember(self._next)
                return pushes, self._entries(changes, pushes)
            self._cache.pop(user, None)
            snapshot = None
            self.conflicts += 1
            # Randomised backoff: nodes that keep colliding on one user spread out.
            time.sleep(random.random() * min(0.05, 0.0005 * 2 ** number))
        raise StoreConflict(f"{self.store.url}: user {user} changed under every one of "
                            f"{self.max_attempts} attempts of {what}; not applied")

    # --- several events in one round trip -----------------------------------------------------
    def handle_many(self, events: list[Any], *, settles: list[tuple[str, ...]] | None = None,
                    lane: Hashable = None) -> list[Handled]:
        """Apply ``events`` in order, as ``handle`` would one by one, with one round trip to a
        store that batches (a single Redis): every event runs first on its user's copy (the
        next event of that user on the copy the previous one's commit makes), then the
        commits, and the checks of copies not known to be current, go in one pipeline. A
        commit is refused unless its user's state is the copy it ran on (the version, and the
        token of the commit before it in the batch), so a user another writer changed
        meanwhile has that event and its later ones run again, in order, on fresh state;
        their pushes of the refused run are dropped (a refused commit writes nothing, no
        outbox entry either). The results, one per event. An event whose result is
        ``StoreUnavailable`` was not applied or its outcome is unknown: handle the events
        with that result again, in order (the same list again resends the same commits).
        ``settles``: per event, as ``handle``'s ``settle``; ``lane``: as ``handle``'s."""
        settles = settles if settles is not None else [()] * len(events)
        batch = self._pending_batch.pop(lane, None)
        if batch is not None and batch.events == events and batch.settles == settles:
            return self._send_batch(batch, lane)
        if not self._batchable(events, lane):
            return self._handle_each(events, settles, lane)
        batch = self._run_batch(events, settles)
        if batch is None:  # a load failed: nothing was applied
            return self._handle_each(events, settles, lane)
        return self._send_batch(batch, lane)

    def _batchable(self, events: list[Any], lane: Hashable) -> bool:
        # Time-based rules take events one by one: a rerun must see the clock as it was.
        return (len(events) > 1 and bool(getattr(self.store, "batches", False))
                and lane not in self._pending and not self.config.timed and not self.explain
                and all(event.EVENT != "tick" for event in events))

    def _handle_each(self, events: list[Any], settles: list[tuple[str, ...]],
                     lane: Hashable) -> list[Handled]:
        return _in_order(list(zip(events, settles, strict=True)),
                         lambda item: self._handled(item[0], item[1], lane))

    def _handled(self, event: Any, settle: tuple[str, ...], lane: Hashable) -> Handled:
        commits = self.commits
        pushes = self.handle(event, settle=settle, lane=lane)
        return Handled(pushes, self.last_entries, version=self.last_version,
                       committed=self.commits != commits)

    def _copies(self, users: list[str]) -> dict[str, tuple[UserSnapshot, bool]] | None:
        """Each user's copy to run on and whether it is known current: the cached ones, and
        the others loaded in one pipeline (None if that failed: nothing was applied)."""
        heads = {user: (self._cache[user], False) for user in users if user in self._cache}
        missing = [user for user in users if user not in heads]
        if missing:
            try:
                replies = self.store.run_batch(  # type: ignore[attr-defined]
                    [BatchCheck(user, (-1, "")) for user in missing])
            except StoreError:
                return None
            for user, reply in zip(missing, replies, strict=True):
                if not isinstance(reply, UserSnapshot):
                    return None  # (one by one, that user's events get the error)
                heads[user] = (reply, True)
                self._remember(reply)
        return heads

    def _run_batch(self, events: list[Any], settles: list[tuple[str, ...]]) -> _Batch | None:
        users = [event_user(event) for event in events]
        heads = self._copies(list(dict.fromkeys(users)))
        if heads is None:
            return None
        chained: set[str] = set()
        steps: list[_Step] = []
        ops: list[UserChanges | BatchCheck] = []
        for index, (event, user, settle) in enumerate(zip(events, users, settles, strict=True)):
            snapshot, verified = heads[user]
            step = _Step(index, event, user, self.time, snapshot.version, settle)
            steps.append(step)
            try:
                step.pushes, step.changes = self._attempt(event, snapshot, settle, verified,
                                                          settled_apart=True)
            except Exception as exc:  # ImpossibleEvent...: final, unless the copy was stale
                step.error = exc
                if not verified and user not in chained:  # the batch's check says which
                    step.op = len(ops)
                    ops.append(BatchCheck(user, snapshot.identity, ()))
                continue
            if step.changes is not None:
                if user in chained:
                    step.changes.after = snapshot.token
                step.made = self._next
                assert step.made is not None
                heads[user] = (step.made, verified)
                chained.add(user)
            elif (verified or user in chained) and not settle:
                continue  # current if the commit it follows lands (else it runs again)
            step.op = len(ops)
            # An event that only settles outbox entries (a push-result that changed nothing):
            # removed if the copy it ran on is current, no commit (no version bumped).
            ops.append(step.changes or BatchCheck(user, snapshot.identity, settle))
        return _Batch(events, settles, steps, ops, [None] * len(events))

    def _send_batch(self, batch: _Batch, lane: Hashable) -> list[Handled]:
        """The batch's commits and checks in one round trip, then each event's outcome; the
        events of a user whose copy was stale run again, in order, one by one."""
        if self.before_commit is not None:
            for op in batch.ops:
                if isinstance(op, UserChanges):
                    self.before_commit(op)
        try:
            replies: list[Any] = self.store.run_batch(batch.ops)  # type: ignore[attr-defined]
        except StoreUnavailable as exc:
            self._pending_batch[lane] = batch  # outcome unknown: the same events resend these
            return [Handled(error=exc) for _ in batch.events]
        stale: dict[str, UserSnapshot | None] = {}
        made: dict[str, UserSnapshot] = {}
        reruns: list[_Step] = []
        for step in batch.steps:
            if step.user in stale:
                reruns.append(step)
                continue
            reply: Any = True if step.op < 0 else replies[step.op]
            result = self._outcome(step, reply)
            if result is not None:
                batch.results[step.index] = result
                if step.op >= 0 and step.changes is not None and result.error is None:
                    assert step.made is not None
                    made[step.user] = step.made
                elif isinstance(reply, StoreError):
                    stale[step.user] = None  # the store refused it: the rest run again
            else:  # refused (False) or a check found newer state (the snapshot)
                self.conflicts += reply is False
                stale[step.user] = reply or None
                reruns.append(step)
        for user, snapshot in made.items():
            if user not in stale:
                self._remember(snapshot)
        for user, fresh in stale.items():
            self._cache.pop(user, None)
            self._remember(fresh)
        self._rerun(reruns, batch.results, lane)
        return [result or Handled() for result in batch.results]

    def _outcome(self, step: _Step, reply: Any) -> Handled | None:
        """The step's result given its op's reply (True: no op), None if it must run again."""
        if isinstance(reply, StoreError):
            return Handled(error=reply)
        if reply is not True and reply is not None:
            return None  # (an error on a stale copy too: it may not be one on the fresh)
        if step.error is not None:
            return Handled(error=step.error)
        if step.op >= 0 and step.changes is not None:
            self.commits += 1
            return Handled(step.pushes, self._entries(step.changes, step.pushes),
                           version=step.version + 1, committed=True)
        return Handled(step.pushes, [OutboxEntry(push) for push in step.pushes],
                       version=step.version)

    def _rerun(self, steps: list[_Step], results: list[Handled | None], lane: Hashable) -> None:
        """Events whose copy was stale, again one by one on fresh state (in order)."""
        if not steps:
            return
        latest = self.time

        def again(step: _Step) -> Handled:
            self.time = step.clock
            return self._handled(step.event, step.settle, lane)

        for step, result in zip(steps, _in_order(steps, again), strict=True):
            results[step.index] = result
        self.time = max(latest, self.time)

    @staticmethod
    def _entries(changes: UserChanges, pushes: list[Push]) -> list[OutboxEntry]:
        keys: list[str | None] = list(changes.outbox_put) or [None] * len(pushes)
        return [OutboxEntry(push, key) for push, key in zip(pushes, keys, strict=True)]

    # --- the outbox --------------------------------------------------------------------------
    def outbox_pending(self) -> list[OutboxEntry]:
        """What earlier runs decided and never settled, per user in the order decided."""
        entries = []
        for stored in self.store.outbox_pending():
            try:
                push = push_from_row(stored.user, stored.row)
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreCorrupt(f"{self.store.url}: outbox entry {stored.key} of user "
                                   f"{stored.user} is not readable ({type(exc).__name__}: "
                                   f"{exc})") from None
            entries.append(OutboxEntry(push, stored.key, stored.attempts))
        return entries

    def outbox_attempt(self, entry: OutboxEntry) -> None:
        """Count one more send of the entry, in the store first when it is stored there."""
        entry.attempts += 1
        if entry.key is not None:
            self.store.outbox_attempt(entry.push.user, entry.key, entry.attempts)

    def outbox_remove(self, entry: OutboxEntry) -> None:
        if entry.key is not None:
            self.store.outbox_remove(entry.push.user, [entry.key])

    def current_registration(self, key: Any) -> Any:
        """The registration as the store holds it now (None if unknown): another event may
        have changed it since this engine last ran one for that user. (Not ``registration``:
        the model reads that one during an event.)"""
        return self._registration_in(self._load(key[0]), key)

    def current_registrations(self, keys: list[Any]) -> list[Any]:
        """``current_registration`` of each key, on a store that batches in one round trip
        (one "unchanged?" load per user); an entry is the exception when that user's state
        could not be read (StoreUnavailable for all when the round trip failed)."""
        users = list(dict.fromkeys(key[0] for key in keys))
        if not getattr(self.store, "batches", False):
            return [self._current_or_error(key) for key in keys]
        cached = {user: self._cache.get(user) for user in users}
        ops = [BatchCheck(user, (-1, "") if copy is None else copy.identity)
               for user, copy in cached.items()]
        try:
            replies = self.store.run_batch(ops)  # type: ignore[attr-defined]
        except StoreError as exc:
            return [exc for _ in keys]
        snapshots: dict[str, Any] = {}
        for user, reply in zip(users, replies, strict=True):
            if reply is None:  # the cached copy is current
                reply = cached[user]
                self._remember(reply)
            elif isinstance(reply, UserSnapshot):
                self._remember(reply)
            snapshots[user] = reply
        out: list[Any] = []
        for key in keys:
            snapshot = snapshots[key[0]]
            try:
                out.append(snapshot if isinstance(snapshot, Exception)
                           else self._registration_in(snapshot, key))
            except StoreCorrupt as exc:
                out.append(exc)
        return out

    def cached_registration(self, key: Any) -> Any:
        """The registration in this engine's copy of its user, read without a round trip
        (None if unknown there); KeyError when no copy of the user is held. The copy is what
        the store held at the last round trip that read or wrote the user (a commit landed on
        it, a check found it current, or a load)."""
        return self._registration_in(self._cache[key[0]], key)

    def _current_or_error(self, key: Any) -> Any:
        try:
            return self.current_registration(key)
        except StoreError as exc:
            return exc

    def _registration_in(self, snapshot: UserSnapshot, key: Any) -> Any:
        user, reg = key[0], (key[1], key[2])
        row = snapshot.registrations.get(reg)
        if row is None:
            return None
        try:
            return registration_from_row(user, reg, row, snapshot.pushed.get(reg))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreCorrupt(f"{self.store.url}: a stored record of user {user} is not "
                               f"readable ({type(exc).__name__}: {exc})") from None

    def _commit(self, changes: UserChanges, event: Any, pushes: list[Push],
                settle: tuple[str, ...], lane: Hashable) -> bool:
        if self.before_commit is not None:
            self.before_commit(changes)
        try:
            done = self.store.commit(changes)
        except Exception:
            if lane is not UNKEPT:
                self._pending[lane] = _Pending(event, changes, pushes, settle)
            raise
        if done:
            self.commits += 1
            self.last_version = changes.base_version + 1
        return done

    def _fresher(self, snapshot: UserSnapshot) -> UserSnapshot | None:
        """None while ``snapshot`` is what the store holds, else the store's (cached)."""
        fresh = self.store.load(snapshot.user, snapshot.identity)
        if fresh is None:
            self._cache.move_to_end(snapshot.user)
        else:
            self._remember(fresh)
        return fresh

    def _load(self, user: str) -> UserSnapshot:
        cached = self._cache.get(user)
        snapshot = self.store.load(user, None if cached is None else cached.identity)
        if snapshot is None:
            assert cached is not None
            self._cache.move_to_end(user)
            return cached
        self._remember(snapshot)
        return snapshot

    def _remember(self, snapshot: UserSnapshot | None) -> None:
        # Rows are never mutated (records are built from copies), so a cached snapshot stays
        # exactly what the store holds at its (version, token).
        if snapshot is None or self.cache_users < 1:
            return
        self._cache[snapshot.user] = snapshot
        self._cache.move_to_end(snapshot.user)
        if len(self._cache) > self.cache_users:
            self._cache.popitem(last=False)

    # --- storage: records built when the event touches them (looks up, stores or forgets) ------
    # WorldBase reads and writes records only through these (model/world.py): a record the
    # event never touched cannot have changed, so only the touched ones are built from their
    # rows (``_install``) and compared with them again (``_changes``).
    _full_diff = False
    """Build every record at the install and compare every one (the way before: kept for
    tests/store/test_touched.py, which checks both ways commit the same)."""

    def session(self, sid: str) -> SessionRecord | None:
        if sid not in self._touched_sessions:
            self._touched_sessions.add(sid)
            row = self._installed.sessions.get(sid)
            if row is not None and sid not in self.sessions:
                self.sessions[sid] = self._built(session_from_row, sid, row)
        return self.sessions.get(sid)

    def _store_session(self, record: SessionRecord) -> None:
        self._touched_sessions.add(record.sid)
        self.sessions[record.sid] = record

    def _forget_session(self, sid: str) -> None:
        self.session(sid)  # a stored one not built yet is built first (then forgotten)
        del self.sessions[sid]  # (KeyError for one that does not exist, as in WorldBase)

    def _has_registrations(self, user: str) -> bool:
        return bool(self.users.get(user)) or (user == self._installed.user
                                              and bool(self._installed.registrations))

    def registration(self, key: RegKey) -> RegistrationRecord | None:
        regs = self.users.get(key[0])
        if regs is None:
            return None
        reg = (key[1], key[2])
        if reg not in self._touched_regs:
            self._touched_regs.add(reg)
            row = self._installed.registrations.get(reg)
            if row is not None and reg not in regs:
                regs[reg] = self._registration_of(reg, row)
        return regs.get(reg)

    def registrations_of(self, user: str) -> list[RegistrationRecord]:
        regs = self.users.get(user)
        if regs is None:
            return []
        if not self._touched_all:
            self._touched_all = True
            self._in_stored_order(regs, lambda row: True)
            self._touched_regs.update(regs)
        return list(regs.values())

    def _store_registration(self, reg: RegistrationRecord) -> None:
        self._touched_regs.add((reg.jid, reg.node))
        super()._store_registration(reg)

    def rebuild_due(self) -> None:
        # Only a registration whose row has time facts can have a timer running: those are
        # built too (not touched: the due queue reaches them through ``registration``), in
        # the stored order, as the due order of timers due at the same time follows it.
        regs = self.users.get(self._installed.user)
        if regs is not None and not self._touched_all:
            reorder = len(regs) > 1  # (two built already, as the install's expiries do)
            for reg, row in self._installed.registrations.items():
                if reorder or (reg not in regs and has_time_facts(row)):
                    self._in_stored_order(regs, has_time_facts)
                    break
        super().rebuild_due()

    def _in_stored_order(self, regs: dict[RegId, RegistrationRecord],
                         build: Callable[[Row], bool]) -> None:
        """``regs`` (the installed user's) in the order of the stored rows, the new ones
        after them, as building them all at the install would hold them; the rows not built
        yet for which ``build`` says so are built."""
        rows = self._installed.registrations
        ordered = {}
        for reg, row in rows.items():
            rec = regs.get(reg)
            if rec is None and build(row):
                rec = self._registration_of(reg, row)
            if rec is not None:
                ordered[reg] = rec
        ordered.update((reg, rec) for reg, rec in regs.items() if reg not in rows)
        regs.clear()
        regs.update(ordered)

    def _built(self, build: Callable[..., Any], key: Any, row: Row) -> Any:
        """A record of the installed user from its row; StoreCorrupt when it is not readable
        (nothing is written: the attempt stops there)."""
        try:
            return build(self._installed.user, key, row)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StoreCorrupt(f"{self.store.url}: a stored record of user "
                               f"{self._installed.user} is not readable "
                               f"({type(exc).__name__}: {exc})") from None

    def _registration_of(self, reg: RegId, row: Row) -> RegistrationRecord:
        prebuilt = self._installed.pushed
        rec: RegistrationRecord = self._built(
            lambda user, key, row: registration_from_row(user, key, row, prebuilt.get(key)),
            reg, row)
        if reg not in prebuilt:
            prebuilt[reg] = rec.pushed.copy()
        return rec

    def _install(self, snapshot: UserSnapshot) -> None:
        user = snapshot.user
        self._installed = snapshot
        self._touched_sessions, self._touched_regs, self._touched_all = set(), set(), False
        self.sessions, self.users = {}, {user: {}}
        if self._full_diff:
            for sid in snapshot.sessions:
                self.session(sid)
            self.registrations_of(user)
            self._touched_sessions, self._touched_regs, self._touched_all = set(), set(), False
        self._install_facts(snapshot)
        self._user_seq = snapshot.seq
        self.audit_log = []
        for reg in snapshot.expired:
            # The store's clock fired the model's timer: take its transition before the event.
            self.fire_registration((user, *reg), TIMER_EVENT, Ctx(self, Timer()))
        self._install_clock(snapshot)  # the time-based rules' clock and due queue (due.py)

    def _install_facts(self, snapshot: UserSnapshot) -> None:
        """The user's facts as stored; only this user's (installed afresh per event, like the
        sessions and registrations). ``restore_user_facts`` is called for an empty record too:
        it is the model that knows what "no facts" resets."""
        if self.chats or self.calls:  # (new dicts only when there is something to drop)
            self.chats, self.calls = {}, {}
        try:
            self.restore_user_facts(snapshot.user, snapshot.facts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.chats, self.calls = {}, {}
            raise StoreCorrupt(f"{self.store.url}: the facts record of user {snapshot.user} "
                               f"is not readable ({type(exc).__name__}: {exc}); nothing was "
                               "applied") from None

    def _record_changes(self, snapshot: UserSnapshot, changes: UserChanges
                        ) -> tuple[dict[str, Row], dict[RegId, Row]]:
        """The sessions and registrations the event changed, into ``changes``; every
        session's and registration's row after it. Only the records the event touched are
        compared (``_full_diff``: all of them, the way this was done before)."""
        records = self.users.get(snapshot.user, {})
        if self._full_diff:
            sessions, changes.sessions_put = _diff(self.sessions, snapshot.sessions,
                                                   session_row)
            changes.sessions_del = [sid for sid in snapshot.sessions
                                    if sid not in self.sessions]
            regs, changes.registrations_put = _diff(records, snapshot.registrations,
                                                    registration_row)
            return sessions, regs
        sessions, changes.sessions_put, changes.sessions_del = _diff_touched(
            self.sessions, snapshot.sessions, self._touched_sessions, session_row)
        if self._touched_all:  # registrations_of: the event may have changed any of them
            regs, changes.registrations_put = _diff(records, snapshot.registrations,
                                                    registration_row)
        else:
            regs, changes.registrations_put, _ = _diff_touched(
                records, snapshot.registrations, self._touched_regs, registration_row)
        return sessions, regs

    def _changes(self, snapshot: UserSnapshot, pushes: list[Push],
                 settle: tuple[str, ...], verified: bool = True,
                 settled_apart: bool = False) -> UserChanges | None:
        """What the event changed (with the pushes for the outbox), or None (with
        ``settled_apart``, also when it only settles: the caller removes those entries); also
        leaves in ``_next`` the snapshot the commit makes (for the cache)."""
        user = snapshot.user
        changes = UserChanges(user, snapshot.version, "", self._user_seq)
        sessions, regs = self._record_changes(snapshot, changes)
        _registration_deltas(snapshot, changes)
        changes.audit = list(self.audit_log)
        changes.orphan_ttl = 0  # the model's orphan_ttl runs by the events' clock (due.py)
        changes.live_timers = [reg for reg in snapshot.timers
                               if reg in changes.registrations_put]
        changes.registrations_del = list(snapshot.vanished)
        if self.outbox:
            version = snapshot.version + 1
            changes.outbox_put = {outbox_key(version, i): outbox_row(push)
                                  for i, push in enumerate(pushes)}
        changes.outbox_del = list(settle)
        facts = self.user_facts(user)
        if facts != snapshot.facts:
            changes.facts = facts
        else:
            facts = snapshot.facts
        if _writes_nothing(snapshot, changes, but_settles=settled_apart):
            self._next = None
            return None
        if not verified:
            changes.known_registrations = list(snapshot.registrations)
            changes.known_timers = list(snapshot.timers)
        changes.token = new_token()
        # The records are installed afresh for every event: their dedup sets can be handed on
        # (and the prebuilt ones of those not built stay as they are).
        pushed = {**snapshot.pushed,
                  **{reg: rec.pushed for reg, rec in self.users.get(user, {}).items()}}
        self._next = UserSnapshot(user, snapshot.version + 1, changes.seq, sessions, regs,
                                  token=changes.token, pushed=pushed,
                                  timers=_timers_after(snapshot, changes), facts=facts)
        self._commit_clock(snapshot, changes)  # due.py
        return changes
