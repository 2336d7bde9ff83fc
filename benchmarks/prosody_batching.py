"""The comparison baseline: what Prosody 0.12's mod_cloud_notify would push for a contract trace,
with its 1 s batching. A simulation of another server for benchmarks/simday.py, written from
shared/research/prosody-cloud-notify.md (sections 1-2), not a rule of pushrules.

What it follows (research section numbers):
- H6 (1.2): ``smacks-hibernation-start`` walks the unacked queue at once, without batching:
  at most one important and one unimportant push, each for one stanza, to the session's
  registration; the stanzas pushed are marked, so a later hibernation skips them (1.4).
- H8/H9 (1.3): ``smacks-ack-delayed`` (every queued stanza) and ``stanza-queued`` while the
  session is hibernated add the stanza to the session's push queue and start a 1 s timer if
  none runs; when it fires, the queue is walked as above (clones: nothing is marked, nothing
  skipped) and emptied. At most 1 important + 1 unimportant push per batch. Stanzas queued while
  the ack is delayed are not pushed (0.12's smacks fires ack-delayed once, 2.2).
- H7: ``smacks-hibernation-end`` stops the timer; the push queue is kept (quirk Q5), so its
  stanzas go out with the next batch. A timer running when the session is destroyed still fires
  (the session keeps its push identifier).
- H10: ``archive-message-added`` pushes only when the user has a live session and ``for_user``
  is the recipient; a JMI propose (urgent; 0.12's is_urgent knows only jingle-message:0, the
  namespace the simulated day writes) to every registration, anything else to the
  registrations bound to none of the user's live sessions. H4 ``message/offline/handle`` and H5
  ``message/bare/groupchat`` push to every registration. One push per stanza, at once; these
  paths dedup nothing (each is a different stanza object, 1.4).
- Prosody 0.12 has no chat settings and no rule for ``csi-state``. With ``chat_settings=True``
  the XEP-0492 settings of ``chat-settings`` events filter stanzas before they are pushed (never:
  dropped; on-mention: kept when an XEP-0372 reference names the user or chat/nick; the room's
  echo of the user's own message dropped), roughly what mod_cloud_notify_filters adds, so that
  the comparison isolates the batching.
Registrations: ``push-enable`` binds (user, jid, node) to the session (one per session, the
last enable wins); ``push-disable`` removes them. Errors, max devices and ping are left out:
benchmarks/simday.py feeds no push-results.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from pushrules.model.stanza import PROPOSE, Stanza

BATCH_SECONDS = 1.0
"""mod_cloud_notify's batch timer (``awaiting_push_timer``, DEB L491-508)."""

RegKey = tuple[str, str, str]


@dataclass(frozen=True)
class BaselinePush:
    """One push Prosody would send: to a registration, at a time, for one stanza."""

    key: RegKey
    at: float
    stanza: str | None
    important: bool
    path: str


@dataclass
class _Session:
    user: str
    state: str = "active"
    identifier: RegKey | None = None
    push_queue: list[Stanza] = field(default_factory=list)
    timer: bool = False


def _bare(jid: str | None) -> str:
    return "" if jid is None else jid.split("/", 1)[0]


class ProsodyBatching:
    """Feed typed contract events (``handle``), then ``finish``; ``pushes`` is the result."""

    def __init__(self, chat_settings: bool = False) -> None:
        self.chat_settings = chat_settings
        self.sessions: dict[str, _Session] = {}
        self.registrations: dict[str, dict[RegKey, None]] = {}
        self.marks: dict[RegKey, set[str]] = {}
        self.settings: dict[tuple[str, str], tuple[str, str | None]] = {}
        self.timers: list[tuple[float, int, str, _Session]] = []
        self.seq = 0
        self.now = 0.0
        self.pushes: list[BaselinePush] = []

    # --- time -----------------------------------------------------------------------------
    def advance(self, until: float) -> None:
        """Fire every batch timer due at or before ``until``, in time order."""
        while self.timers and self.timers[0][0] <= until:
            due, _, _, session = heapq.heappop(self.timers)
            self.now = due
            self.fire(session)

    def finish(self) -> list[BaselinePush]:
        self.advance(float("inf"))
        return self.pushes

    def fire(self, session: _Session) -> None:
        queue, session.push_queue, session.timer = session.push_queue, [], False
        self.process_queue(session, queue, marked=False)

    def start_timer(self, sid: str, session: _Session) -> None:
        if not session.timer:
            session.timer = True
            self.seq += 1
            heapq.heappush(self.timers, (self.now + BATCH_SECONDS, self.seq, sid, session))

    # --- pushing --------------------------------------------------------------------------
    def push(self, key: RegKey, stanza: Stanza, path: str) -> None:
        self.pushes.append(BaselinePush(key, self.now, stanza.id, stanza.important, path))

    def process_queue(self, session: _Session, queue: tuple[Stanza, ...] | list[Stanza],
                      marked: bool) -> None:
        """process_stanza_queue: at most one important and one unimportant push."""
        key = session.identifier
        if key is None or key not in self.registrations.get(key[0], {}):
            return
        marks = self.marks.setdefault(key, set())
        done = {True: False, False: False}
        for stanza in queue:
            if marked and stanza.id in marks:
                continue
            if done[stanza.important] or not self.allowed(key[0], stanza):
                continue
            self.push(key, stanza, "smacks" if marked else "push")
            done[stanza.important] = True
            if marked and stanza.id is not None:
                marks.add(stanza.id)
            if all(done.values()):
                return

    def allowed(self, user: str, stanza: Stanza) -> bool:
        if not self.chat_settings or stanza.call is not None:
            return True
        chat = stanza.chat or ""
        notify, nick = self.settings.get((user, chat), ("always", None))
        if nick is not None and stanza.type == "groupchat" and stanza.sender == f"{chat}/{nick}":
            return False
        if notify == "never":
            return False
        own = {f"xmpp:{user}"} | ({f"xmpp:{chat}/{nick}"} if nick is not None else set())
        return notify == "always" or bool(own.intersection(stanza.mentions))

    def to_registrations(self, user: str, stanza: Stanza, keys: list[RegKey],
                         path: str) -> None:
        if self.allowed(user, stanza):
            for key in keys:
                self.push(key, stanza, path)

    # --- events ---------------------------------------------------------------------------
    def handle(self, event: Any) -> None:
        at = getattr(event, "at", None)
        if at is not None:
            self.advance(at)
            self.now = at
        handler = getattr(self, "on_" + event.EVENT.replace("-", "_").replace("/", "_"), None)
        if handler is not None:
            handler(event)

    def on_session_bind(self, event: Any) -> None:
        self.sessions[event.session] = _Session(_bare(event.session))

    def on_session_destroyed(self, event: Any) -> None:
        self.sessions.pop(event.session, None)

    def on_push_enable(self, event: Any) -> None:
        session = self.sessions.get(event.session)
        if session is None:
            return
        key = (session.user, event.jid, event.node)
        self.registrations.setdefault(session.user, {})[key] = None
        session.identifier = key

    def on_push_disable(self, event: Any) -> None:
        user = _bare(event.session)
        regs = self.registrations.get(user, {})
        for key in [k for k in regs if k[1] == event.jid and event.node in (None, k[2])]:
            del regs[key]
            for session in self.sessions.values():
                if session.identifier == key:
                    session.identifier = None

    def on_smacks_ack_delayed(self, event: Any) -> None:
        session = self.sessions[event.session]
        session.state = "ack_delayed"
        if session.identifier is not None:
            session.push_queue += event.queue
            self.start_timer(event.session, session)

    def on_smacks_ack_received(self, event: Any) -> None:
        self.sessions[event.session].state = "active"

    def on_smacks_hibernation_start(self, event: Any) -> None:
        session = self.sessions[event.session]
        session.state = "hibernated"
        self.process_queue(session, event.queue, marked=True)

    def on_smacks_hibernation_end(self, event: Any) -> None:
        session = self.sessions[event.session]
        session.state = "active"
        if session.timer:  # stopped; the push queue is kept (Q5)
            session.timer = False
            self.timers = [t for t in self.timers if t[3] is not session]
            heapq.heapify(self.timers)

    def on_stanza_queued(self, event: Any) -> None:
        session = self.sessions[event.session]
        if session.state == "hibernated" and session.identifier is not None:
            session.push_queue.append(event.stanza)
            self.start_timer(event.session, session)

    def live_identifiers(self, user: str) -> set[RegKey]:
        return {s.identifier for s in self.sessions.values()
                if s.user == user and s.identifier is not None}

    def on_archive_message_added(self, event: Any) -> None:
        user, stanza = event.for_user, event.stanza
        if not any(s.user == user for s in self.sessions.values()) or stanza.to_bare != user:
            return
        regs = list(self.registrations.get(user, {}))
        if stanza.call != PROPOSE:
            bound = self.live_identifiers(user)
            regs = [key for key in regs if key not in bound]
        self.to_registrations(user, stanza, regs, "archive")

    def on_message_offline_handle(self, event: Any) -> None:
        self.to_registrations(event.user, event.stanza,
                              list(self.registrations.get(event.user, {})), "offline")

    def on_message_bare_groupchat(self, event: Any) -> None:
        self.to_registrations(event.user, event.stanza,
                              list(self.registrations.get(event.user, {})), "groupchat")

    def on_chat_settings(self, event: Any) -> None:
        self.settings[(event.user, event.chat)] = (event.notify, event.nick)


def simulate(events: list[Any], chat_settings: bool = False) -> list[BaselinePush]:
    """Every push Prosody would send for ``events`` (timers fired at the end)."""
    prosody = ProsodyBatching(chat_settings)
    for event in events:
        prosody.handle(event)
    return prosody.finish()
