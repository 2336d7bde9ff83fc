"""The bounded world the checker explores, and the environment: which events the server raises.

One user. ``sessions`` resources, of which the first ``push_sessions`` enable push, each to its
own node of one app server (the first may also re-enable the orphans' nodes: it left them).
``orphans`` registrations are left orphaned by a setup prefix (a session that enabled push and
was destroyed) so rules (b) and (c) have a device to wake from the
first event on, and eviction is reachable with a small ``max_devices``. Stanzas m1.. cycle
through an important incoming message, an important outgoing copy (archived for its sender:
rule (b) must not wake the sender) and an unimportant incoming chat state without an id (never
deduplicated, so it also shows that a stanza is pushed once per event and registration).

Environment (what a real server can raise, and when):
- every session event for every session, in any state: the model accepts it or rejects it with
  a declared reason (that is itself a property);
- ``smacks-ack-delayed`` / ``smacks-hibernation-start`` carry the session's smacks queue: the
  stanzas queued to it since it last acked (``smacks-ack-received`` empties it, resumption keeps
  it, a destroy or a new bind starts empty); ``stanza-queued`` adds a stanza not in it yet. The
  queue is kept as a set (pushed in stanza order), and only for sessions that enable push: a
  session that never holds a registration has nothing of its queue pushed, so its queue is
  abstracted to empty (its stanza-queued events are still raised, for any stanza);
- an outgoing stanza (from the user to someone else) only ever reaches the user's archive: it is
  not queued to the user's sessions as it is (carbons wrap it) nor stored offline for the user;
- ``archive-message-added`` any stanza at any time;
- ``message/offline/handle`` only while none of the user's sessions is ``active`` (ASSUMPTION:
  offline storage takes a message only when no available resource took it; rule (c) pushes every
  registration, so without this a registration whose session is active would be pushed);
- ``push-result`` ok / wait / cancel (cancel stands for every counted error type) for every
  registration, including ones never enabled (the model must reject those).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pushrules.generated import events as ge
from pushrules.model.config import Config
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.runtime.trace import event_json

USER = "u@example.org"
FRIEND = "f@example.org"
APP = "push.example.net"
RESULTS = ("ok", "wait", "cancel")

_STANZA_KINDS = (
    # important incoming message
    "<message xmlns='jabber:client' id='{id}' from='f@example.org/pc' to='u@example.org' "
    "type='chat'><body>hi</body></message>",
    # important outgoing message (archived for its sender)
    "<message xmlns='jabber:client' id='{id}' from='u@example.org/r1' to='f@example.org' "
    "type='chat'><body>yo</body></message>",
    # unimportant incoming chat state without an id (never deduplicated; pushed as null)
    "<message xmlns='jabber:client' from='f@example.org/pc{n}' to='u@example.org' "
    "type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The size of the explored world; every field is a `pushrules check` option."""

    sessions: int = 3
    push_sessions: int = 2
    orphans: int = 1
    stanzas: int = 3
    max_errors: int = 2
    max_devices: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"bound {f.name} must not be negative")
        if self.push_sessions > self.sessions:
            raise ValueError("push_sessions cannot exceed sessions")
        if self.max_errors < 1 or self.max_devices < 1:
            raise ValueError("max_errors and max_devices must be at least 1")
        if self.sessions + self.orphans > 9 or self.stanzas > 9:
            raise ValueError("at most 9 sessions+orphans and 9 stanzas")

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def zero_clock() -> float:
    """The clock of every explored world: time is not part of the model's state."""
    return 0.0


class BoundedWorld:
    """Names, stanzas, setup prefix and the event alphabet of one bounded configuration."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.config = Config(max_errors=bounds.max_errors, max_devices=bounds.max_devices)
        self.sids = [f"{USER}/r{i + 1}" for i in range(bounds.sessions)]
        self.old_sids = [f"{USER}/old{k + 1}" for k in range(bounds.orphans)]
        # registration index -> node; orphans first (they were enabled first)
        self.nodes = [f"o{k + 1}" for k in range(bounds.orphans)] + [
            f"n{i + 1}" for i in range(bounds.push_sessions)
        ]
        self.reg_index = {(USER, APP, node): j for j, node in enumerate(self.nodes)}
        self.reg_keys = [(USER, APP, node) for node in self.nodes]
        self.session_index = {sid: i for i, sid in enumerate(self.sids + self.old_sids)}
        self.all_sids = self.sids + self.old_sids
        self.stanza_xml: dict[Stanza, str] = {}
        self.stanzas: list[Stanza] = []
        for n in range(bounds.stanzas):
            xml = _STANZA_KINDS[n % len(_STANZA_KINDS)].format(id=f"m{n + 1}", n=n + 1)
            stanza = parse_stanza(xml)
            self.stanzas.append(stanza)
            self.stanza_xml[stanza] = xml
        self.stanza_index = {s.id: k for k, s in enumerate(self.stanzas)}
        self.incoming = [k for k, s in enumerate(self.stanzas) if s.to_bare == USER]
        self._cache: dict[tuple, Any] = {}

    def node_of(self, session: int) -> str | None:
        """The node a session enables push to (None: it never enables)."""
        if session < self.bounds.push_sessions:
            return f"n{session + 1}"
        return None

    def nodes_of(self, session: int) -> list[str]:
        """Every node a session may enable: its own, and for the first session also the
        orphans' nodes (it is the client that left them, reconnecting and re-enabling its old
        registration; this is also what makes evicting a bound registration reachable)."""
        own = self.node_of(session)
        if own is None:
            return []
        return ([f"o{k + 1}" for k in range(self.bounds.orphans)] if session == 0 else []) + [own]

    def prefix(self) -> list[Any]:
        """Setup events that leave the orphaned registrations: enable, then destroy."""
        out: list[Any] = []
        for k, sid in enumerate(self.old_sids):
            out += [ge.SessionBind(sid), ge.PushEnable(sid, APP, f"o{k + 1}"),
                    ge.SessionDestroyed(sid)]
        return out

    def event(self, key: tuple, queue: tuple[int, ...] = ()) -> Any:
        """The typed contract event for an event key (cached: events are immutable)."""
        cache_key = (key, queue)
        found = self._cache.get(cache_key)
        if found is None:
            found = self._cache[cache_key] = self._build(key, queue)
        return found

    def _build(self, key: tuple, queue: tuple[int, ...]) -> Any:
        kind = key[0]
        if kind == "archive":
            return ge.ArchiveMessageAdded(USER, self.stanzas[key[1]])
        if kind == "offline":
            return ge.MessageOfflineHandle(USER, self.stanzas[key[1]])
        if kind == "result":
            outcome = key[2]
            return ge.PushResult(USER, APP, self.nodes[key[1]], outcome == "ok",
                                 None if outcome == "ok" else outcome)
        sid = self.sids[key[1]]
        if kind == "bind":
            return ge.SessionBind(sid)
        if kind == "enable":
            return ge.PushEnable(sid, APP, key[2])
        if kind == "disable":
            return ge.PushDisable(sid, APP, key[2])
        if kind == "ackd":
            return ge.SmacksAckDelayed(sid, tuple(self.stanzas[k] for k in queue))
        if kind == "ackr":
            return ge.SmacksAckReceived(sid)
        if kind == "hibs":
            return ge.SmacksHibernationStart(sid, tuple(self.stanzas[k] for k in queue))
        if kind == "hibe":
            return ge.SmacksHibernationEnd(sid)
        if kind == "queued":
            return ge.StanzaQueued(sid, self.stanzas[key[2]])
        if kind == "destroy":
            return ge.SessionDestroyed(sid)
        raise ValueError(f"unknown event key {key!r}")

    def alphabet(self) -> list[tuple]:
        """Every event key; which of them the server raises in a state is `raised()`."""
        keys: list[tuple] = []
        for i in range(self.bounds.sessions):
            keys += [("bind", i)]
            for node in self.nodes_of(i):
                keys += [("enable", i, node), ("disable", i, node)]
            if self.node_of(i) is not None:
                keys += [("disable", i, None)]
            keys += [("ackd", i), ("ackr", i), ("hibs", i), ("hibe", i)]
            keys += [("queued", i, k) for k in self.incoming]
            keys += [("destroy", i)]
        keys += [("archive", k) for k in range(self.bounds.stanzas)]
        keys += [("offline", k) for k in self.incoming]
        keys += [("result", j, r) for j in range(len(self.nodes)) for r in RESULTS]
        return keys

    def push_masks(self, pushes: list[Any]) -> list[int]:
        """Per registration, the stanzas (with an id) ``pushes`` delivered to it, as bits."""
        masks = [0] * len(self.nodes)
        for push in pushes:
            j = self.reg_index.get((push.user, push.jid, push.node))
            if j is not None:
                for sid in push.stanzas:
                    if sid is not None:
                        masks[j] |= 1 << self.stanza_index[sid]
        return masks

    def to_json(self, event: Any) -> dict[str, Any]:
        """A typed event as a line of the contract's JSON Lines trace."""
        return event_json(event, self.stanza_xml.__getitem__)
