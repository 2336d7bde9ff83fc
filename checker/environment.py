"""The environment and the checker's ghost fields: one definition for both explorers.

The environment is what a real server raises when (bounded.py's docstring gives the reasons):
which events are raised in a state, and how the smacks queues it keeps for the sessions change.
The ghost fields are the checker's own record of each registration (parts.GhostPart), kept from
the pushes and push-results it saw, and ``recency``, the enabled registrations by their last
enable as the checker saw it. explore.py applies these to named tuples, compiled.py to the
fields of a packed state; both read only what the functions below read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .parts import ENABLED, RegistrationPart

QUEUE_EVENTS = ("ackd", "hibs")
"""Event kinds that carry the session's smacks queue."""
EMPTIES_QUEUE = ("bind", "ackr", "destroy")
"""Session event kinds after which the session's smacks queue is empty."""
FAN_OUT = ("archive", "offline", "result", "expire", "groupchat", "settings", "remote",
           "flush", "retry", "window")
"""Event kinds that are not session events (they carry no session index)."""
TIMERS = ("expire", "flush", "retry", "window")
"""Event kinds of the clock (``Bounds.expiry``: expire; ``Bounds.time``: all): (kind,
registration)."""
CLOCK_FIELD = {"flush": "hold", "expire": "expire", "retry": "retry", "window": "window"}
"""Clock event kind -> the registration's time fact (checker/parts.py) that says its due time
is ahead: the clock reaches it only then (as the world's ``run_due`` skips a stale entry)."""


Key = tuple[Any, ...]
"""An event key (kind, ...), a smacks queue (stanza indexes) or a recency (registrations)."""


def is_session_event(kind: str) -> bool:
    return kind not in FAN_OUT


def raised(key: Key, queue: Callable[[], Key], sessions: Sequence[Any]) -> bool:
    """Whether the server raises ``key`` in a state whose session ``key[1]`` has the smacks
    queue ``queue()`` (a stanza-queued event adds a stanza not in it yet), and whose sessions
    are ``sessions``: ``message/offline/handle`` only while none of them is active. push-result
    is gated by the ghost part: see ``result_raised``."""
    kind = key[0]
    if kind == "queued":
        return key[2] not in queue()
    if kind == "offline":
        return not any(sessions[i].state == "active" for i in range(len(sessions)))
    return True


def timer_raised(registration_state: str) -> bool:
    """``expire`` is raised for a registration only while it is orphaned: a store's orphan TTL
    runs from the moment it is bound to no live session and fires only if it still is."""
    return registration_state == "orphaned"


def clock_raised(kind: str, reg: Any) -> bool:
    """A time world: the clock reaches registration ``reg``'s due time of ``kind`` only while
    it is ahead; the end of a burst window with stanzas held is their flush (the held stanzas
    come due exactly when the window ends), so ``window`` only while nothing is held."""
    if kind == "window":
        return bool(reg.window) and not reg.hold
    return bool(reg[_PART_INDEX[CLOCK_FIELD[kind]]])


def result_needs_pending(registration_state: str) -> bool:
    """A push-result for a stored registration is raised only while a push to it is pending
    (ghost ``pending``); one for a registration never stored is raised any time (the model
    must reject it)."""
    return registration_state != "absent"


def result_raised(registration_state: str, pending: Callable[[], int]) -> bool:
    return not result_needs_pending(registration_state) or bool(pending())


def queue_after(key: Key, tracked: bool, queue: Callable[[], Key]) -> Key | None:
    """The smacks queue of the event's own session after the event (None: unchanged): a
    bind, an ack or a destroy empties it, stanza-queued adds its stanza (queues are tracked
    only for sessions that enable push)."""
    kind = key[0]
    if not tracked or not is_session_event(kind):
        return None
    if kind in EMPTIES_QUEUE:
        return ()
    if kind == "queued":
        return tuple(sorted((*queue(), key[2])))
    return None


def ghost_writes(ghost: Any, enabled_after: bool, mask: int, outcome: str | None,
                 marks: dict[str, int] | None = None, kept: bool = False) -> dict[str, int]:
    """The ghost fields of one registration that change ({name: value}): ``mask`` holds the
    stanzas this event pushed to it, ``outcome`` the push-result's outcome when the event is
    its push-result, ``marks`` the marks the event sets or clears (``mark_writes``). A push
    makes a push-result pending, the push-result answers it; a registration not enabled after
    the event starts afresh (its marks stay until it is enabled again); the count of counted
    errors in a row follows the contract (ok resets it, wait leaves it, any other error adds
    one). The stanzas added to ``delivered`` come as ``DELIVERED_ADD`` (``apply_delivered``
    turns it into the new set where the whole set is at hand). ``kept``: a registration the
    contract retries keeps its dedup memory, so its ``delivered`` stays (and grows by its
    probes)."""
    out: dict[str, int] = dict(marks or {})
    if mask:
        out["pending"] = 1
    if outcome is not None:
        out["pending"] = 0
    if not enabled_after:
        out["errors"] = 0
        if kept:
            if mask:
                out[DELIVERED_ADD] = mask
        else:
            out["delivered"] = 0
        return out
    if mask:
        out[DELIVERED_ADD] = mask  # delivered |= mask: applied without reading the others
    if outcome is not None and outcome != "wait":
        out["errors"] = 0 if outcome == "ok" else ghost.errors + 1
    return out


_PART_INDEX = {name: k for k, name in enumerate(RegistrationPart._fields)}

DELIVERED_ADD = "delivered+"
"""A ghost write: stanzas (bits) added to ``delivered``."""


def apply_delivered(ghost: Any, changes: dict[str, int]) -> dict[str, int]:
    """``changes`` (from ghost_writes) with the stanzas added to ``delivered`` folded into
    the new value of ``delivered``."""
    added = changes.pop(DELIVERED_ADD, 0)
    if added:
        changes["delivered"] = ghost.delivered | added
    return changes


def ghost_touched(key: tuple[Any, ...], changed_regs: Sequence[int], masks: Sequence[int],
                  enabled_index: int | None = None) -> list[int]:
    """The registrations whose ghost fields an event may change: those it changed, those it
    pushed, the one its push-result or timer names and (with expiry) the one it enables (the
    others keep theirs: a registration not enabled already has empty ghost fields)."""
    touched = {*changed_regs, *(j for j, m in enumerate(masks) if m)}
    if key[0] in ("result", *TIMERS) or key[0] in MARKS:
        touched.add(key[1])
    if enabled_index is not None:
        touched.add(enabled_index)
    return sorted(touched)


MARKS = {"expire": "expired", "remote": "remote"}
"""Event kind (kind, registration) -> the ghost mark it sets on its registration; a push-enable
that enables the registration clears it."""


def mark_writes(key: tuple[Any, ...], j: int, enabled_index: int | None, bounds: Any, rang: bool,
                enabled_after: bool) -> dict[str, int]:
    """Registration j's marks after the taken event ``key`` ({name: value}; kept only in the
    worlds that raise their events: ``expired`` with expiry, ``remote`` and ``rang`` in v2):
    ``expired``/``remote`` set by its expire / push-remote-disable and cleared by the
    push-enable that enables it again; ``rang`` set by a push of the call's proposal (``rang``
    true) and cleared when it is no longer enabled."""
    out: dict[str, int] = {}
    kept = {"expired": bounds.expiry, "remote": bounds.v2}
    mark = MARKS.get(key[0])
    if mark is not None and key[1] == j and kept[mark]:
        out[mark] = 1
    if enabled_index == j:
        out.update((name, 0) for name, on in kept.items() if on)
    if bounds.v2:
        if rang:
            out["rang"] = 1
        if not enabled_after:
            out["rang"] = 0
    return out


def result_outcome(key: tuple[Any, ...], j: int) -> str | None:
    """The outcome of the push-result ``key`` for registration j (None: not its result)."""
    return key[2] if key[0] == "result" and key[1] == j else None


def recency_after(key: Key, recency: Callable[[], Key], enabled_index: int | None,
                  enabled_after: Callable[[int], bool], same_enabled: bool
                  ) -> tuple[Any, ...] | None:
    """The recency after the event (None: unchanged): an enable (or, with time, a successful
    probe: ``enabled_index`` on a push-result) makes its registration the most recent;
    registrations no longer enabled leave it."""
    if key[0] != "enable" and same_enabled:
        return None
    order = recency()
    if enabled_index is not None:
        order = (*(x for x in order if x != enabled_index), enabled_index)
    return tuple(x for x in order if enabled_after(x))


def enabled_changed(j: int, pre_regs: Sequence[Any], post_regs: Sequence[Any]) -> bool:
    return (pre_regs[j].state in ENABLED) != (post_regs[j].state in ENABLED)


def session_ghost_writes(key: tuple[Any, ...], changed_s: Sequence[int], post_sessions: Any
                         ) -> dict[int, int]:
    """v2: the sessions whose CSI record changes after the taken event ({session: csi}): a
    csi-state sets it, a bind makes it active (every session starts CSI-active); one that
    goes offline is active again (as a session never bound)."""
    out: dict[int, int] = {}
    kind = key[0]
    if kind == "csi":
        out[key[1]] = int(key[2] == "active")
    elif kind == "bind":
        out[key[1]] = 1
    for i in changed_s:
        if post_sessions[i].state == "offline":
            out[i] = 1
    return out


def setting_after(key: tuple[Any, ...]) -> int | None:
    """v2: the checker's record of the room setting after the event (None: unchanged): a
    chat-settings event replaces the whole setting (1 + its index in CHAT_SETTINGS)."""
    return key[1] + 1 if key[0] == "settings" else None


def time_ghost_writes(key: tuple[Any, ...], j: int, ghost: Any, pushed: bool,
                      enabled_before: bool, enabled_after: bool, matched: bool
                      ) -> dict[str, int]:
    """A time world: registration j's ghost ``window``, ``retried`` and ``probe_ok`` after the
    taken event (the contract's words, events.md "Time-based rules", as the checker reads the
    events; never the model's records):

    - ``window``: every push sent opens it (urgent ones too); the clock passing its end (the
      window event, or the flush of what was held) closes it, and a flush that sends opens it
      again; a registration enabled anew starts with an empty window;
    - ``retried``: set when a push-result disables it for counted errors; kept through a failed
      probe; cleared when it is enabled, disabled by the client (``matched``: a push-disable
      naming it) or remotely (the contract retries none of those);
    - ``probe_ok``: set when its retry comes due, and again when its probe is answered with
      ``wait`` (still probing); cleared by the probe (a push while it is not enabled) and
      whenever ``retried`` is."""
    kind, own = key[0], len(key) > 1 and key[1] == j
    out: dict[str, int] = {}
    if own and kind in ("window", "flush"):
        out["window"] = 0
    if pushed:
        out["window"] = 1
    if enabled_after and not enabled_before:
        out["window"] = 0
    outcome = key[2] if own and kind == "result" else None
    if outcome is not None and outcome not in ("ok", "wait") and enabled_before \
            and not enabled_after:
        out["retried"] = 1
    if own and kind == "retry":
        out["probe_ok"] = 1
    if outcome == "wait" and not enabled_before and ghost.retried:
        out["probe_ok"] = 1
    if pushed and not enabled_before:
        out["probe_ok"] = 0
    if enabled_after or matched or (own and kind == "remote"):
        out["retried"] = out["probe_ok"] = 0
    return out
