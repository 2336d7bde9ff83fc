"""The parts of an explored state, by name: what a session, a registration and the checker's
ghost fields of a registration hold. explore.py keeps them as these named tuples; compiled.py
reads the same names from a packed state (packed.py's views), so properties and the
environment (environment.py) read ``reg.owner``, never ``reg[1]``.

The order of each tuple's fields is also the order of the packed layout's fields."""

from __future__ import annotations

from typing import NamedTuple

ENABLED = ("bound", "orphaned")
"""Registration states that receive pushes."""
LIVE = ("active", "ack_delayed", "hibernated")
"""Session states of a live session (one that can hold a registration)."""


class SessionPart(NamedTuple):
    """A session: its machine state and the registration it holds (an index, or -1)."""

    state: str
    binding: int
    csi: str = "active"
    """v2: its XEP-0352 client state (the model's; a constant outside a v2 world)."""


class RegistrationPart(NamedTuple):
    """A registration: its machine state, the session that owns it (an index, or -1), its
    counted errors and the stanzas pushed to it (its dedup set, one bit per stanza)."""

    state: str
    owner: int
    errors: int
    pushed: int
    calls: int = 0
    """v2: the calls whose proposal was pushed to it (the model's; one bit per call id)."""
    # The time-based rules' facts of the record (model/records.py), kept only at the time
    # bound (``Bounds.time``; constants otherwise). Times are abstracted to whether each due
    # time is still ahead (checker/PROPERTIES.md, "Time"): the clock is the step's own.
    probe: str | None = None
    """retry_after: the model's probe state (None, waiting, ready, sent)."""
    probe_owner: int = -1
    """retry_after: the session it was bound to when disabled (``probe_session``), or -1."""
    window: int = 0
    """burst_window: 1 while the window since the last push sent is open (``last_sent``)."""
    held: tuple[tuple[int, str], ...] = ()
    """burst_window: the stanzas held for it (stanza index, rule), in order."""
    hold: int = 0
    """burst_window: 1 while a flush is due (``hold_until`` set)."""
    expire: int = 0
    """orphan_ttl: 1 while its expiry is due (``expire_at`` set)."""
    retry: int = 0
    """retry_after: 1 while its retry is due (``retry_at`` set)."""


class GhostPart(NamedTuple):
    """The checker's own record of a registration, kept from the pushes and push-results it
    saw: the stanzas delivered since it was last enabled anew (bits), the counted errors in a
    row as the contract defines them, whether a push to it awaits its push-result, and
    whether it expired (took ``expire``) since it was last enabled (kept only with
    ``Bounds.expiry``; a constant 0 otherwise)."""

    delivered: int = 0
    errors: int = 0
    pending: int = 0
    expired: int = 0
    rang: int = 0
    """v2: the call's proposal was pushed to it since it was last enabled anew."""
    remote: int = 0
    """v2: push-remote-disable took it since it was last enabled."""
    window: int = 0
    """time: a push went to it and the clock has not passed the burst window since (the
    checker's own record, from the pushes and clock events it saw)."""
    probe_ok: int = 0
    """time: a probe may go to it: its retry came due (or a wait answered its probe) since it
    was disabled for counted errors or its probe failed, and no probe went since."""
    retried: int = 0
    """time: disabled by max_errors counted errors (or a failed probe) and not enabled,
    disabled by the client or remotely since: the contract retries it."""

    def delivered_has(self, index: int) -> bool:
        """Stanza ``index`` (its bit in ``delivered``) was delivered."""
        return bool((self.delivered >> index) & 1)


class SessionGhostPart(NamedTuple):
    """v2: the checker's own record of a session: its CSI state as the events gave it (1:
    active; bind makes it active; a constant 1 outside a v2 world)."""

    csi: int = 1


ABSENT_SESSION = SessionPart("offline", -1, "active")
"""A session not stored (never bound, or ended)."""
ABSENT_REGISTRATION = RegistrationPart("absent", -1, 0, 0, 0)
"""A registration not stored."""
NO_GHOST = GhostPart()
NO_SESSION_GHOST = SessionGhostPart(1)
