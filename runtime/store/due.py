"""The time-based rules (contract v2) over a store: the user's clock kept, due work across users.

A store keeps the model's time facts in the registration rows (``RegistrationRecord.time_row``)
and a due index: per user, when the first of its timers (held push, expiry, retry) comes due,
written in the same commit as the rows (``UserChanges.due``). ``StoredEngine.run_due(until)``
takes the users the index names, earliest first, and runs each one's due work as its own atomic
commit (the pushes go to the outbox like an event's), so a held push of user X comes due when the
clock passes it even if no event of X arrives, and after a restart too.

The world's clock is kept per user in the user's facts record (``"clock": [time, timed]``):
written the first time the user's events are timed and with every commit the user makes anyway
(never a commit of its own), so after a restart the user's pushes still carry ``at`` and an
event without ``at`` happens no earlier than the user's last recorded time. The engine's clock
is the latest of what it saw in this run and the installed user's.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushrules.model.records import Push
from pushrules.runtime.engine import Engine

from .base import Store, UserChanges, UserSnapshot, new_token, rows_due

if TYPE_CHECKING:
    from .engine import OutboxEntry

Attempt = Callable[[UserSnapshot, bool], tuple[list[Push], UserChanges | None]]
"""One run of a user's event or due work on a snapshot (verified or not): its pushes and
what it changed (None: nothing to commit)."""
UNKEPT: Hashable = object()
"""The lane of a run whose commit is never retried by its caller (due work: found again in
the store): nothing is kept for it when the commit's outcome is unknown."""
DUE_READ = 1 << 30
"""Entries of the due index read at once (every user due by then)."""

CLOCK = "clock"
"""The key of the user's clock in the facts record (the model's restore ignores it)."""


@dataclass(frozen=True, slots=True)
class DueWork:
    """What ``run_due`` commits for one user (in place of an event, for a retried commit)."""

    user: str
    until: float
    EVENT = "due"


class StoredTime(Engine):
    """The time parts of ``StoredEngine`` (a base of it; everything else is in engine.py)."""

    _stored_clock: list[Any] | None = None
    _next: UserSnapshot | None = None  # (StoredEngine's: the snapshot the commit makes)

    # --- hooks called by StoredEngine ----------------------------------------------------------
    def _install_clock(self, snapshot: UserSnapshot) -> None:
        """After a user's records are installed: its clock, and its timers in the due queue."""
        clock = snapshot.facts.get(CLOCK)
        self._stored_clock = clock if isinstance(clock, list) and len(clock) == 2 else None
        if self._stored_clock is not None:
            at, timed = self._stored_clock
            if at > self.time:
                self.time = at
            if timed:
                self.timed = True
        self.rebuild_due()

    def advance_time(self, at: float | None) -> None:
        """With a time rule on, the installed user's clock never goes back: an earlier ``at``
        happens at the user's clock. (Live: an event stamped ``now`` before the user's records
        were loaded, after a restart on a host whose clock is behind the server's that timed
        them; the sidecar's clock then follows, runtime/xmpp/clock.py.)"""
        clock = self._stored_clock
        if at is not None and clock is not None and at < clock[0] and self.config.timed:
            at = clock[0]
        super().advance_time(at)

    def user_facts(self, user: str) -> dict[str, Any]:
        facts = super().user_facts(user)
        clock = self._stored_clock
        if self.timed and not (clock and clock[1]):
            clock = [self.time, True]  # the user's first timed commit: written now
        if clock is not None:
            facts[CLOCK] = clock
        return facts

    def _commit_clock(self, snapshot: UserSnapshot, changes: UserChanges) -> None:
        """A commit is made: the user's clock goes with it, and its due time when it moved."""
        nxt = self._next
        assert nxt is not None
        if self.timed:
            facts = snapshot.facts if changes.facts is None else changes.facts
            clock = [self.time, True]
            if facts.get(CLOCK) != clock:
                changes.facts = nxt.facts = {**facts, CLOCK: clock}
        due = rows_due(nxt.registrations.values())
        if due != rows_due(snapshot.registrations.values()) or (
                self._in_due and self._index_due != due):
            changes.due_set, changes.due = True, due
            if due is not None and (self._hint is None or due < self._hint):
                self._hint = due

    _hint: float | None = None

    def due_hint(self) -> float | None:
        """The earliest due time this engine committed since the last call (the sidecar's
        timer: no store read per event), then forgotten."""
        hint, self._hint = self._hint, None
        return hint

    _in_due = False
    _index_due: float | None = None
    """While run_due works on a user: the due time the index named (repaired if it is off)."""

    # --- due work across users -----------------------------------------------------------------
    def next_due(self) -> float | None:
        """When the first timer of any user in the store comes due (None: none runs)."""
        return self.store.due_next()

    def run_due(self, until: float) -> list[Push]:
        """The clock passes ``until``: every user's timers due by then fire, in time order
        (each user's due work at one time is one atomic commit; its pushes are in the outbox,
        ``last_entries`` names them). Their pushes, each with its due time."""
        pushes: list[Push] = []
        entries: list[OutboxEntry] = []
        self.timed = True
        # One read of the index (not one per user): a user whose work leaves a timer due by
        # ``until`` goes back into the queue at that time, so the order across users holds.
        queue = self.store.due_users(until, DUE_READ)
        heapq.heapify(queue)
        while queue:
            when, user = heapq.heappop(queue)
            # Up to the next other user's due time: pushes across users in time order.
            limit = min(until, queue[0][0]) if queue else until
            got, got_entries, after = self._user_due(user, when, limit, flush=False)
            pushes += got
            entries += got_entries
            if after is not None and after != when and after <= until:
                heapq.heappush(queue, (after, user))
        if until > self.time:
            self.time = until
        self.last_entries = entries
        return pushes

    def flush_held(self) -> list[Push]:
        """End of input (replay): every user's held pushes are sent at their due time,
        checked against the state then; no expiry or retry is simulated (the clock stays)."""
        pushes: list[Push] = []
        entries: list[OutboxEntry] = []
        for when, user in self.store.due_users(math.inf, DUE_READ):
            got, got_entries, _ = self._user_due(user, when, self.time, flush=True)
            pushes += got
            entries += got_entries
        self.last_entries = entries
        return pushes

    def tick(self, event: Any) -> list[Push]:
        """The contract's ``tick``: time passes for every user."""
        return self.run_due(event.at)

    def _index_repair(self, snapshot: UserSnapshot, when: float) -> UserChanges | None:
        """Nothing was due after all: the index entry is off (e.g. rows of an older version);
        a commit of the index alone puts it right, so it is not asked again."""
        due = rows_due(snapshot.registrations.values())
        if due == when:
            return None
        self._next = None
        self._cache.pop(snapshot.user, None)
        return UserChanges(snapshot.user, snapshot.version, new_token(), snapshot.seq,
                           due_set=True, due=due)

    def _user_due(self, user: str, when: float, limit: float, *, flush: bool
                  ) -> tuple[list[Push], list[OutboxEntry], float | None]:
        """Fire one user's timers due by ``limit`` (or, ``flush``, its held pushes) and
        commit that (StoredEngine's attempts: retried on fresh state when another writer got
        there first). Its pushes, their entries, and when its next timer comes due after."""
        now = self.time
        after: list[float | None] = [when]

        def attempt(snapshot: UserSnapshot, verified: bool) -> tuple[list[Push],
                                                                     UserChanges | None]:
            self._install(snapshot)
            self._in_due, self._index_due = True, when
            try:
                pushes = Engine.flush_held(self) if flush else Engine.run_due(self, limit)
                self.time = max(now, self.time)  # fired at their due times; the clock stays
                changes = self._changes(snapshot, pushes, (), True)
            finally:
                self._in_due = False
            if changes is None:
                changes = self._index_repair(snapshot, when)
            if changes is not None:
                after[0] = changes.due if changes.due_set else rows_due(
                    snapshot.registrations.values())
            return pushes, changes

        pushes, entries = self._run_user(user, DueWork(user, limit), attempt, cached=False,
                                         what="its due work")
        return pushes, entries, after[0]

    # --- what StoredEngine provides (engine.py) -------------------------------------------------
    store: Store
    _cache: OrderedDict[str, UserSnapshot]

    def _install(self, snapshot: UserSnapshot) -> None:
        raise NotImplementedError

    def _changes(self, snapshot: UserSnapshot, pushes: list[Push], settle: tuple[str, ...],
                 verified: bool = True) -> UserChanges | None:
        raise NotImplementedError

    def _run_user(self, user: str, unit: Any, attempt: Attempt, *,
                  settle: tuple[str, ...] = (), cached: bool = True, what: str = "",
                  lane: Hashable = UNKEPT) -> tuple[list[Push], list[OutboxEntry]]:
        raise NotImplementedError
