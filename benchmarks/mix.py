"""A realistic, reproducible event mix: the same events for every engine.

Users have 1-3 sessions; half of the users enable push on each of their sessions. Every session
goes through all session states (active, ack_delayed, hibernated, offline) once per cycle, with
stanzas queued in each state, archive and offline-storage events for its user, and the app
server's answers to the pushes. Streams of different sessions are interleaved at random, each in
its own order, so the whole mix is a valid trace for the model (no impossible event).

Stanzas come pre-parsed (the embedded API): a few XML shapes are parsed once, and each stanza is
a copy with its own id, sender and recipient. ``Mix.xml`` keeps the XML of every stanza, so the
same events can be written as a contract trace (``write_trace``) for the replay benchmark.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from pushrules.generated.events import (
    ArchiveMessageAdded,
    MessageOfflineHandle,
    PushDisable,
    PushEnable,
    PushResult,
    SessionBind,
    SessionDestroyed,
    SmacksAckDelayed,
    SmacksAckReceived,
    SmacksHibernationEnd,
    SmacksHibernationStart,
    StanzaQueued,
)
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.runtime.trace import event_json

DOMAIN = "example.org"
APP_SERVER = "push.example.net"

# (weight, XML with {id}, {sender}, {to}, {n}): what a user receives, most of it worth a push.
SHAPES: tuple[tuple[int, str], ...] = (
    (50, '<message xmlns="jabber:client" type="chat" id="{id}" from="{sender}" to="{to}">'
         '<body>hello {n}</body></message>'),
    (20, '<message xmlns="jabber:client" type="chat" id="{id}" from="{sender}" to="{to}">'
         '<composing xmlns="http://jabber.org/protocol/chatstates"/></message>'),
    (15, '<message xmlns="jabber:client" type="chat" id="{id}" from="{sender}" to="{to}">'
         '<encrypted xmlns="eu.siacs.conversations.axolotl"><payload>AAAA</payload>'
         '</encrypted></message>'),
    (10, '<message xmlns="jabber:client" id="{id}" from="{to}" to="{to}/phone">'
         '<sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
         '<message xmlns="jabber:client" type="chat" from="{to}/laptop" to="{sender}">'
         '<body>reply {n}</body></message></forwarded></sent></message>'),
    (5, '<message xmlns="jabber:client" type="groupchat" id="{id}" from="room@muc.{domain}/x" '
        'to="{to}"><body>room {n}</body></message>'),
)


@dataclass
class Mix:
    """Typed events in trace order, and the XML of each stanza (by stanza id)."""

    events: list[Any]
    sessions: int
    users: int
    xml: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for event in self.events:
            out[event.EVENT] = out.get(event.EVENT, 0) + 1
        return out


class _Stanzas:
    """Stanzas of the mix's shapes: parsed once per shape, then copied per message."""

    def __init__(self, rng: random.Random, keep_xml: bool) -> None:
        self.rng = rng
        self.keep_xml = keep_xml
        self.xml: dict[str, str] = {}
        self.count = 0
        self.weights = [w for w, _ in SHAPES]
        self.templates = [t for _, t in SHAPES]
        self.parsed = [
            parse_stanza(t.format(id="x", sender="s@x", to="t@x", n=0, domain=DOMAIN))
            for t in self.templates
        ]

    def new(self, to: str) -> Stanza:
        self.count += 1
        n = self.count
        shape = self.rng.choices(range(len(SHAPES)), self.weights)[0]
        sid = f"m{n}"
        sender = f"c{n % 997}@{DOMAIN}/r"
        values = {"id": sid, "sender": sender, "to": to, "n": n, "domain": DOMAIN}
        template = self.parsed[shape]
        if self.keep_xml:
            self.xml[sid] = self.templates[shape].format(**values)
        sent = template.sender  # carbons and groupchat keep their own sender/recipient
        return replace(
            template, id=sid,
            sender=to if sent == "t@x" else sender if sent == "s@x" else sent,
            to=f"{to}/phone" if template.to == "t@x/phone" else to,
            body=None if template.body is None else template.body.replace("0", str(n)),
        )


def _session_cycle(stanzas: _Stanzas, sid: str, user: str, node: str | None, rng: random.Random,
                   last: bool, routine: tuple[int, int]) -> list[Any]:
    """One pass of a session through every state, after some routine traffic while active."""
    out: list[Any] = [SessionBind(sid)]
    if node is not None:
        out.append(PushEnable(sid, APP_SERVER, node, secret="s3cr3t",
                              publish_options={"endpoint": "fcm"}))
    for _ in range(rng.randint(*routine)):
        out += [StanzaQueued(sid, stanzas.new(user)), StanzaQueued(sid, stanzas.new(user)),
                SmacksAckReceived(sid)]
    s1, s2, s3, s4, s5, s6, s7, s8 = (stanzas.new(user) for _ in range(8))
    out += [
        StanzaQueued(sid, s1), StanzaQueued(sid, s2), SmacksAckReceived(sid),
        StanzaQueued(sid, s3), SmacksAckDelayed(sid, (s3,)),
        StanzaQueued(sid, s4), SmacksAckReceived(sid),
        StanzaQueued(sid, s5), SmacksHibernationStart(sid, (s5,)),
        StanzaQueued(sid, s6), ArchiveMessageAdded(user, s6),
    ]
    if node is not None:
        out.append(PushResult(user, APP_SERVER, node, True))
    out += [SmacksHibernationEnd(sid), StanzaQueued(sid, s7)]
    if node is not None and last and rng.random() < 0.1:
        out.append(PushDisable(sid, APP_SERVER, node))
    out += [SessionDestroyed(sid), MessageOfflineHandle(user, s8), ArchiveMessageAdded(user, s8)]
    if node is not None:
        roll = rng.random()
        ok, error = (True, None) if roll < 0.8 else (False, "wait" if roll < 0.9 else "cancel")
        out.append(PushResult(user, APP_SERVER, node, ok, error))
    return out


def generate(users: int, *, seed: int = 5, cycles: int = 2, keep_xml: bool = False,
             first_user: int = 0, push: bool = True, routine: tuple[int, int] = (2, 6)) -> Mix:
    """The mix for ``users`` users (numbered from ``first_user``), interleaved at random.
    Even-numbered users enable push; with ``push=False`` nobody does (the decision mix: every
    event is a machine decision with no push to build). Each session cycle starts with
    ``routine`` (min, max) rounds of two stanzas and an ack while the session is active."""
    rng = random.Random(seed)
    stanzas = _Stanzas(rng, keep_xml)
    timed: list[tuple[float, int, Any]] = []
    order = 0
    sessions = 0
    for u in range(first_user, first_user + users):
        user = f"u{u}@{DOMAIN}"
        with_push = push and u % 2 == 0
        for k in range(rng.randint(1, 3)):
            sessions += 1
            sid = f"{user}/d{k}"
            node = f"n{u}-{k}" if with_push else None
            t = rng.random() * users
            for c in range(cycles):
                for event in _session_cycle(stanzas, sid, user, node, rng, c == cycles - 1,
                                            routine):
                    t += rng.expovariate(1.0)
                    order += 1
                    timed.append((t, order, event))
    timed.sort()
    return Mix([e for _, _, e in timed], sessions, users, stanzas.xml)


def idle_binds(sessions: int, *, first_user: int = 0) -> list[Any]:
    """``session-bind`` for ``sessions`` sessions, two per user: the idle population."""
    return [SessionBind(f"u{first_user + i // 2}@{DOMAIN}/d{i % 2}") for i in range(sessions)]


def write_trace(events: Iterable[Any], xml: dict[str, str], out: TextIO) -> int:
    """Write events as JSON Lines; return how many."""
    n = 0
    for event in events:
        out.write(json.dumps(event_json(event, lambda stanza: xml[stanza.id])) + "\n")
        n += 1
    return n
