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
  registration, including ones never enabled (the model must reject those);
- with ``expiry`` (``pushrules check --expiry``), the model's timer event ``expire`` for every
  orphaned registration, at any time: its ``orphan_ttl`` elapsing is abstracted to "some time
  passes", so every interleaving of expiries and contract events is explored (a real store's
  clock fires it only for a registration that is still orphaned, as here);
- with ``time`` (``pushrules check --time``), the clock's events for every registration whose
  due time is ahead, at any time: a held push comes due (``flush``), an expiry or a retry comes
  due, a burst window ends with nothing held (``window``); time passes only as these
  (checker/PROPERTIES.md, "Time", says why that is sound).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from pushrules.generated import events as ge
from pushrules.model.config import Config
from pushrules.model.context import Ctx
from pushrules.model.records import Push
from pushrules.model.registration import TIMER_EVENTS
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.model.world import WorldBase
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

ROOM = "room@muc.example.org"
NICK = "me"
"""The user's nickname in ROOM, as the chat settings the checker raises give it."""
CALL_ID = "c1"
"""The incoming call's id: the one call whose targets the state keeps (world.calls)."""
OWN_CALL_ID = "c2"
"""The id of the user's own outgoing call (archived only: nothing rings for it)."""

_V2_STANZAS = (
    # a groupchat message from the occupant ROOM/NICK: the room's echo of the user's own
    # message while the user's setting gives NICK, a plain message from another occupant
    # otherwise (no nick: no echo)
    ("g1", f"<message xmlns='jabber:client' id='g1' from='{ROOM}/{NICK}' to='{USER}' "
           "type='groupchat'><body>mine</body></message>"),
    # a groupchat message mentioning the user (XEP-0372 reference to its bare JID)
    ("g2", f"<message xmlns='jabber:client' id='g2' from='{ROOM}/alice' to='{USER}' "
           "type='groupchat'><body>u?</body><reference xmlns='urn:xmpp:reference:0' "
           f"type='mention' uri='xmpp:{USER}' begin='0' end='1'/></message>"),
    # an incoming call proposal (XEP-0353) and its retraction
    ("p1", f"<message xmlns='jabber:client' id='p1' from='{FRIEND}/pc' to='{USER}' "
           f"type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='{CALL_ID}'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
           "</message>"),
    ("r1", f"<message xmlns='jabber:client' id='r1' from='{FRIEND}/pc' to='{USER}' "
           f"type='chat'><retract xmlns='urn:xmpp:jingle-message:0' id='{CALL_ID}'/>"
           "</message>"),
    # without an id (never deduplicated, so a second push in one event shows): a groupchat
    # message from another occupant, and a call's proposal (only with Bounds.idless_call) and
    # retraction, archived or stored offline only (the smacks queues keep those with an id)
    ("g0", f"<message xmlns='jabber:client' from='{ROOM}/bob' to='{USER}' "
           "type='groupchat'><body>hey</body></message>"),
    ("p0", f"<message xmlns='jabber:client' from='{FRIEND}/pc' to='{USER}' "
           f"type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='{CALL_ID}'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
           "</message>"),
    ("r0", f"<message xmlns='jabber:client' from='{FRIEND}/pc' to='{USER}' "
           f"type='chat'><retract xmlns='urn:xmpp:jingle-message:0' id='{CALL_ID}'/>"
           "</message>"),
    # outgoing copies, archived for the user only: the user rejecting the call from one of
    # its devices, and the user's own call to the friend (another call id)
    ("x1", f"<message xmlns='jabber:client' id='x1' from='{USER}/r1' to='{FRIEND}' "
           f"type='chat'><reject xmlns='urn:xmpp:jingle-message:0' id='{CALL_ID}'/>"
           "</message>"),
    ("y1", f"<message xmlns='jabber:client' id='y1' from='{USER}/r1' to='{FRIEND}' "
           f"type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='{OWN_CALL_ID}'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
           "</message>"),
)
"""The stanzas a v2 world adds (``Bounds.v2``) after the v1 ones."""


@dataclass(frozen=True, slots=True)
class StanzaFacts:
    """What the checker knows of one of its stanzas because it wrote the XML: the contract's
    reading, independent of the model's classification (model/stanza.py, model/chats.py)."""

    chat: str
    """The bare JID of its ``from`` (chat settings go by it)."""
    groupchat: bool = False
    mentions_user: bool = False
    """An XEP-0372 mention (or XEP-0461 reply) of the user: on-mention lets it through."""
    nick: str | None = None
    """The sender's nickname in the room (a groupchat message)."""
    call: str | None = None
    """"propose" or "end" (XEP-0353 retract or reject)."""
    outgoing: bool = False
    """Sent by the user (an archived copy): rule e rings nothing for it."""
    queued: bool = True
    """Incoming and not a groupchat: also queued to the sessions (else archived and stored
    offline only)."""


_V2_FACTS = {
    "g1": StanzaFacts(ROOM, groupchat=True, nick=NICK),
    "g2": StanzaFacts(ROOM, groupchat=True, mentions_user=True, nick="alice"),
    "p1": StanzaFacts(FRIEND, call="propose"),
    "r1": StanzaFacts(FRIEND, call="end"),
    "g0": StanzaFacts(ROOM, groupchat=True, nick="bob"),
    "p0": StanzaFacts(FRIEND, call="propose", queued=False),
    "r0": StanzaFacts(FRIEND, call="end", queued=False),
    "x1": StanzaFacts(USER, call="end", outgoing=True),
    "y1": StanzaFacts(USER, call="propose", outgoing=True),
}

CHAT_SETTINGS = (("always", NICK), ("on-mention", None), ("never", NICK), ("always", None))
"""The chat-settings events of a v2 world, for ROOM: (notify, nick). With NICK, g1 is the
room's echo of the user's own message (never pushed, whatever the setting); without, it is a
plain message that does not mention the user (on-mention keeps it back, always lets it
through). A setting replaces the whole previous one, nick included."""
CSI_STATES = ("active", "inactive")


@dataclass(frozen=True, slots=True)
class Bounds:
    """The size of the explored world; every field is a `pushrules check` option."""

    sessions: int = 3
    push_sessions: int = 2
    orphans: int = 1
    stanzas: int = 3
    max_errors: int = 2
    max_devices: int = 2
    expiry: bool = False
    """Also raise the model's timer event ``expire`` for orphaned registrations (off: the
    figures of the contract events alone)."""
    v2: bool = False
    """Also the contract's version-2 events (group chats, calls, CSI, chat settings, remote
    disable): off, the version-1 world alone."""
    idless_call: bool = False
    """v2: also a call proposal without an id (p0), archived and stored offline: a second way
    into the call's targets, which doubles the v2 bound's states. Only the v2 mutants'
    escalation bound has it (a duplicated push of a proposal shows only without an id)."""
    time: bool = False
    """The time-based rules (``pushrules check --time``): burst_window, orphan_ttl and
    retry_after on, and the clock's events (a held push, an expiry, a retry coming due; a
    burst window ending) raised at any time for a registration whose due time is ahead
    (checker/PROPERTIES.md, "Time"). Implies ``expiry``. Stanzas without an id are left out
    (one is held again by every event within a window: a bounded world cannot hold that):
    the v1 stanzas skip m3, m6, ...; with ``v2``, TIME_V2_STANZAS."""

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
        if self.time:
            object.__setattr__(self, "expiry", True)  # the orphan TTL is one of the rules

    def describe(self) -> str:
        """The bounds as ``name=value``; a flag only when it is on."""
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                         if f.name not in FLAGS or getattr(self, f.name))


FLAGS = ("expiry", "v2", "idless_call", "time")
"""Bounds that are on/off options rather than sizes."""

V2_BOUNDS = Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=0, max_errors=2,
                   max_devices=2, v2=True)
"""The default bound of ``pushrules check --v2``: one session that enables push (its CSI,
smacks queue and registration n1) and an orphaned registration o1, both enabled together;
no version-1 stanza (the v1 default bound checks those rules and takes every v1 row), the
v2 stanzas (g1, g2, p1, r1, x1, y1) and events. Every v2 row is taken here."""
V2_MUTANT_BOUNDS = dataclasses.replace(V2_BOUNDS, max_devices=1)
"""The bound v2 mutants run at: every v2 row is taken, in a few seconds (one device at a
time)."""
V2_ESCALATION = dataclasses.replace(V2_MUTANT_BOUNDS, idless_call=True)
"""Survivors of the v2 mutant bound are explored again here: with the id-less proposal p0."""

TIME_V2_STANZAS = ("g2", "p1", "r1", "x1", "y1")
"""The v2 stanzas of a v2 time world: a mention in the room, the call's proposal and its
retraction, the user's own reject and call (the probe rows of rules d and e); those without an
id are left out (held again by every event within a window: unbounded)."""

TIME_BOUNDS = Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=3, max_errors=1,
                     max_devices=2, time=True)
"""The default bound of ``pushrules check --time``: one session that enables push (n1) and an
orphaned registration o1, three v1 stanzas with an id (m1 and m4 incoming, so the second can
be held, and m2 outgoing),
``max_errors=1`` (one counted error disables, so a retry is near) and the clock's events.
Every row of the time-based rules on version-1 events is taken here; ``--time --v2``
(TIME_V2_BOUNDS) takes those on version-2 events."""
TIME_V2_BOUNDS = dataclasses.replace(TIME_BOUNDS, stanzas=0, max_devices=1, v2=True)
"""The default bound of ``pushrules check --time --v2``: the same sessions and registrations
with the v2 stanzas that reach the time rows (TIME_V2_STANZAS) and no v1 stanza, one device
at a time. Every row of the time-based rules on version-2 events is taken here."""
TIME_MUTANT_BOUNDS = TIME_BOUNDS
"""The bounds the time mutants run at: the time bounds themselves."""
TIME_V2_MUTANT_BOUNDS = TIME_V2_BOUNDS

TIMER_TTL = 1
"""The ``orphan_ttl`` of a world with expiry: any positive value (the model's option that
turns expiry on); the explored time is abstract, so its value changes nothing else."""
TIME_OPTIONS = {"burst_window": 1, "orphan_ttl": TIMER_TTL, "retry_after": 1}
"""The time options of a time world: any positive values. The explored clock never reads
them: every due time is ahead or reached, in any order (the counterexample's trace chooses
values that realize its order: checker/timing.py)."""
CLOCK_KINDS = ("flush", "expire", "retry", "window")
"""The clock's event kinds, (kind, registration): the model's timer events (flush shown
``held-push-due``, expire, retry shown ``retry-due``) and the end of a burst window with
nothing held (the model keeps no timer for it: time passing past ``last_sent +
burst_window`` is what its ``send_push`` compares)."""


@dataclass(frozen=True, slots=True)
class TimerEvent:
    """The clock reaching a registration's due time (model/registration.py TIMER_EVENTS, or
    ``window``: its burst window ends with nothing held): not a contract event, so a timer
    event is taken through ``fire_registration`` (as the world's ``run_due`` takes it) and a
    counterexample shows it as a ``tick`` to that time (checker/timing.py) or a comment."""

    user: str
    jid: str
    node: str
    EVENT: str = "expire"
    at: None = None  # no event time of its own: the clock is the explored step's

    def comment(self) -> str:
        option = TIMER_EVENTS.get(self.EVENT, "burst_window")
        return (f"# timer: {self.EVENT} {self.user} {self.jid} {self.node} "
                f"({option} elapsed; not a contract event: replay cannot raise it)")


def take(world: WorldBase, event: Any) -> list[Push]:
    """Apply one explored event to ``world``: a contract event through ``handle``, a timer
    event through the model's ``fire_registration``. The pushes decided."""
    if not isinstance(event, TimerEvent):
        return world.handle(event)
    pushes: list[Push] = []
    world._pushes = pushes  # what emit() appends to, as handle() sets it
    key = (event.user, event.jid, event.node)
    notes: list[str] | None = [] if world.explain else None
    if event.EVENT in ("window", "flush"):
        # The clock passes last_sent + burst_window (a flush comes due exactly then): the
        # model's send_push then finds the window closed, which a record of the abstract
        # clock tells by last_sent None (the flush's own push opens the next window).
        reg = world.registration(key)
        assert reg is not None
        reg.last_sent = None
    if event.EVENT != "window":
        world.fire_registration(key, event.EVENT, Ctx(world, event, notes=notes))
    world.last_notes = notes or []
    return pushes


V2_FAN_OUT = ("groupchat", "settings", "remote")
"""Version-2 event kinds that name no session."""


def _contract_event(name: str, **values: Any) -> Any:
    """A contract event by its contract name (the version-2 classes come with the model)."""
    return ge.EVENT_CLASSES[name](**values)


def zero_clock() -> float:
    """The clock of every explored world: time is not part of the model's state."""
    return 0.0


def _world_stanzas(bounds: Bounds) -> list[tuple[str, StanzaFacts | None]]:
    """The XML of the world's stanzas, in order, with their facts (None: a v1 stanza's, read
    from its addressing): m1.. cycling through the v1 kinds, then the v2 stanzas."""
    kinds: list[int] = list(range(bounds.stanzas))
    if bounds.time:  # no stanza without an id (m3, m6, ...): see Bounds.time
        kinds = [n for n in range(3 * bounds.stanzas) if n % 3 != 2][:bounds.stanzas]
    out: list[tuple[str, StanzaFacts | None]] = [
        (_STANZA_KINDS[n % len(_STANZA_KINDS)].format(id=f"m{n + 1}", n=n + 1), None)
        for n in kinds]
    for sid, xml in _V2_STANZAS if bounds.v2 else ():
        if bounds.time and sid not in TIME_V2_STANZAS:
            continue
        if sid != "p0" or bounds.idless_call:
            out.append((xml, _V2_FACTS[sid]))
    return out


def world_config(bounds: Bounds) -> Config:
    """The rule options of a bounded world: its sizes, and the time options it turns on."""
    times: dict[str, Any] = dict(TIME_OPTIONS) if bounds.time else {
        "orphan_ttl": TIMER_TTL if bounds.expiry else 0}
    return Config(max_errors=bounds.max_errors, max_devices=bounds.max_devices, **times)


class BoundedWorld:
    """Names, stanzas, setup prefix and the event alphabet of one bounded configuration."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.config = world_config(bounds)
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
        self.facts: list[StanzaFacts] = []
        for xml, facts in _world_stanzas(bounds):
            stanza = parse_stanza(xml)
            self.stanzas.append(stanza)
            self.stanza_xml[stanza] = xml
            self.facts.append(facts or (StanzaFacts(FRIEND) if stanza.to_bare == USER
                                        else StanzaFacts(USER, outgoing=True)))
        self.stanza_index = {s.id: k for k, s in enumerate(self.stanzas)}
        self.facts_of = dict(zip(self.stanzas, self.facts, strict=True))
        # queued to a session, stored offline: incoming, not groupchat (those come bare)
        self.offline = [k for k, s in enumerate(self.stanzas)
                        if s.to_bare == USER and not self.facts[k].groupchat]
        self.incoming = [k for k in self.offline if self.facts[k].queued]
        """The stanzas queued to the sessions (the smacks queues hold these)."""
        self.groupchats = [k for k, f in enumerate(self.facts) if f.groupchat]
        self.proposals = {s.id for s, f in zip(self.stanzas, self.facts, strict=True)
                          if f.call == "propose" and not f.outgoing and s.id is not None}
        """The ids of the stanzas that propose the incoming call (p0 has none)."""
        self.marks_kept = bounds.expiry or bounds.v2
        """Whether the checker keeps marks that a push-enable clears (ghost ``expired``,
        ``remote``)."""
        self._cache: dict[tuple[Any, ...], Any] = {}

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

    def event(self, key: tuple[Any, ...], queue: tuple[int, ...] = ()) -> Any:
        """The typed contract event for an event key (cached: events are immutable)."""
        cache_key = (key, queue)
        found = self._cache.get(cache_key)
        if found is None:
            found = self._cache[cache_key] = self._build(key, queue)
        return found

    def _build(self, key: tuple[Any, ...], queue: tuple[int, ...]) -> Any:
        kind = key[0]
        if kind == "archive":
            return ge.ArchiveMessageAdded(USER, self.stanzas[key[1]])
        if kind == "offline":
            return ge.MessageOfflineHandle(USER, self.stanzas[key[1]])
        if kind in CLOCK_KINDS:
            return TimerEvent(USER, APP, self.nodes[key[1]], kind)
        if kind in V2_FAN_OUT:
            return self._build_v2(key)
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
        if kind == "csi":
            return _contract_event("csi-state", session=sid, state=key[2])
        raise ValueError(f"unknown event key {key!r}")

    def _build_v2(self, key: tuple[Any, ...]) -> Any:
        """A version-2 event that names no session (the model's event classes, by name)."""
        kind = key[0]
        if kind == "groupchat":
            return _contract_event("message/bare/groupchat", user=USER,
                                   stanza=self.stanzas[key[1]])
        if kind == "settings":
            notify, nick = CHAT_SETTINGS[key[1]]
            return _contract_event("chat-settings", user=USER, chat=ROOM, notify=notify,
                                   nick=nick)
        return _contract_event("push-remote-disable", user=USER, jid=APP,
                               node=self.nodes[key[1]])

    def alphabet(self) -> list[tuple[Any, ...]]:
        """Every event key; which of them the server raises in a state is `raised()`."""
        keys: list[tuple[Any, ...]] = []
        for i in range(self.bounds.sessions):
            keys += [("bind", i)]
            for node in self.nodes_of(i):
                keys += [("enable", i, node), ("disable", i, node)]
            if self.node_of(i) is not None:
                keys += [("disable", i, None)]
            keys += [("ackd", i), ("ackr", i), ("hibs", i), ("hibe", i)]
            keys += [("queued", i, k) for k in self.incoming]
            keys += [("destroy", i)]
        keys += [("archive", k) for k in range(len(self.stanzas)) if k not in self.groupchats]
        keys += [("offline", k) for k in self.offline]
        keys += [("result", j, r) for j in range(len(self.nodes)) for r in RESULTS]
        if self.bounds.expiry:
            keys += [("expire", j) for j in range(len(self.nodes))]
        if self.bounds.time:
            keys += [(kind, j) for kind in CLOCK_KINDS if kind != "expire"
                     for j in range(len(self.nodes))]
        if self.bounds.v2:
            keys += self._v2_alphabet()
        return keys

    def _v2_alphabet(self) -> list[tuple[Any, ...]]:
        """The version-2 events: CSI for the sessions that enable push (a session holding no
        registration has no push its CSI could change), every groupchat stanza to the bare
        JID, every chat setting for the room, a remote disable of every registration."""
        keys: list[tuple[Any, ...]] = []
        if not self.bounds.time:  # a time world: no CSI or setting (no time row needs one)
            keys += [("csi", i, state) for i in range(self.bounds.push_sessions)
                     for state in CSI_STATES]
        keys += [("groupchat", k) for k in self.groupchats]
        if not self.bounds.time:
            keys += [("settings", n) for n in range(len(CHAT_SETTINGS))]
        keys += [("remote", j) for j in range(len(self.nodes))]
        return keys

    def rung(self, pushes: list[Any], stanzas: tuple[Stanza, ...]) -> list[bool]:
        """Per registration, whether ``pushes`` (decided on an event with ``stanzas``) pushed
        it the incoming call's proposal: one with an id by its id, the one without (p0) when
        the push covers a stanza without an id and the event brought p0 (p0 comes alone:
        it is never queued)."""
        out = [False] * len(self.nodes)
        idless = any(s.id is None and self.facts_of[s].call == "propose"
                     and not self.facts_of[s].outgoing for s in stanzas)
        for push in pushes:
            j = self.reg_index.get((push.user, push.jid, push.node))
            if j is not None and any(sid in self.proposals if sid is not None else idless
                                     for sid in push.stanzas):
                out[j] = True
        return out

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
        if isinstance(event, TimerEvent):
            return {"event": event.EVENT, "user": event.user, "jid": event.jid,
                    "node": event.node}
        return event_json(event, self.stanza_xml.__getitem__)

    def trace_line(self, event: Any) -> str:
        """One line of a counterexample: the event's JSON, or a comment for a timer event."""
        if isinstance(event, TimerEvent):
            return event.comment()
        return json.dumps(self.to_json(event))
