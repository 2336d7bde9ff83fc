"""A simulated day of traffic: how many pushes each device gets, and how often an app server's
limits would be hit, with ``burst_window`` 0, 1 and 5 s (and fpush's 20 s for reference)
against Prosody's 1 s batching.

The generator (``generate_day``) writes a seeded day of contract v2 events, ``at`` on every line
(seconds since midnight, millisecond resolution). Each user's day is simulated on its own (a
scheduler of client and network actions); the users' streams are then merged by time, so every
event is possible in the state it meets. ``run`` feeds the day to the engine once per setting
(held pushes flushed at the end) and to the Prosody baseline (benchmarks/prosody_batching.py),
and counts pushes per device per hour and app-server limit violations.

Assumptions (also printed with the results; every figure is a per-day mean or probability):

- Diurnal activity: one relative rate per hour of the day (``DIURNAL``), lowest 02-05 h
  (0.02), a morning rise, a working day around 0.8 and an evening peak of 1.0 at 20-21 h. Every
  random process below is a Poisson process at its peak rate thinned by this profile, shifted
  per user by up to +-1 h (not everybody keeps the same hours).
- Devices per user: a phone (55% iOS, 45% Android) that registers push; a tablet for 20% (iOS,
  registers push); a desktop for 60% (no push registration, as Gajim or Dino), bound 08:30-17:30
  (+-30-45 min) and for 30% of them again 20:00-22:30, switching CSI inactive/active every 5-45
  minutes (screen lock, focus).
- Phones and tablets: the app is opened 4 times an hour at peak (tablets 0.6), for 30 s to
  8 min (tablets 2-20 min), and when a conversation starts (60%, after 10 s-3 min) or a call is
  answered. Leaving the app sends CSI inactive. iOS suspends a backgrounded app within 10-60 s:
  the connection is lost and the session hibernates (XEP-0198) with its unacked queue. An
  important stanza reaching a hibernated iOS device wakes it (the push's notification service
  extension) after 2-8 s: it resumes, acks, and hibernates again 15-40 s later. Android keeps its
  connection in the background; a network change (0.7 an hour at peak) hibernates the session
  for 5-90 s, and an important stanza wakes it after 1-4 s.
- Acks: a connected session acks 0.2-1.5 s after a stanza while CSI-active, or after an
  important one while CSI-inactive (unimportant ones wait, as mod_csi_simple holds them); 1% of
  those acks go missing, which is an ack delay after 30 s, then either a late ack or a lost link.
- Offline periods: phones lose the network 0.7 times a day between 07 and 23 h for 15 min-2 h,
  and 15% of phones are switched off 00:30-06:30. Without network a hibernated session times
  out 600 s after its first important stanza (Prosody's smacks_hibernation_time once a push
  went out) and is destroyed; with no live session left, chat messages go to offline storage
  (``message/offline/handle``). An important stanza for a device whose session is gone (and that
  has network) makes it bind, re-enable push and hibernate again: the push woke it.
- Conversations: 1.5 an hour per user at peak, each 1-20 messages (mean 6) from one contact,
  70% within 0.5-4 s of the previous one (a burst) and the rest after 20 s-3 min; 10% are
  several pictures or links at once (3-8 messages 0.05-0.4 s apart); half preceded
  by a composing chat state; 60% plain bodies, 40% OMEMO. The user answers half of them when a
  device is in the foreground: a sent carbon to the user's other sessions and the contact's
  receipt. Messages with a body or OMEMO payload, call proposals and retractions are archived
  (MAM); chat states, receipts and carbons are not.
- Group chats: a room for every three users, with 3-12 of them as members; 25% are busy (6
  discussions an hour at peak, against 0.5), each discussion 2-40 messages (mean 9) from
  members and guests, 80% within 1-10 s of the previous one; 5% of discussions are a flood (a
  bot, or a bridge splitting a paste into lines: 5-20 messages 0.05-0.4 s apart). 10% of
  messages mention a member (XEP-0372 reference to the room nick). Members' chat settings
  (XEP-0492): busy rooms 10% always / 60% on-mention / 30% never, quiet rooms 50/40/10, 15%
  with no setting (the server default, always); a member's own messages come back as the
  room's echo. Members with no live session get the room's messages at their bare JID
  (``message/bare/groupchat``) in half of the rooms (those with offline delivery).
- Calls: 0.3 an hour per user at peak (XEP-0353 propose, archived). 40% ring out (the caller
  retracts after 5-30 s), 35% are answered on the phone after 3-10 s (the phone is in the
  foreground for the call, 1-15 min; an ``<accept/>`` goes to the user's other devices), 25% are
  rejected from the phone (``<reject/>`` to the user's bare JID). A phone without network
  cannot answer: the caller retracts after 30 s.
- Not simulated: push-results (every push is taken as delivered), registrations' errors, users
  disabling push, time zones beyond the +-1 h shift, client reactions to the pushes themselves
  (a device wakes on the stanza, so every setting replays the very same trace).
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import numpy

from .mix import APP_SERVER, DOMAIN  # the benchmark mix's server and app server

HOUR = 3600.0
DAY = 24 * HOUR
CONTACTS = "contacts.example"
MUC = "muc.example.org"

DIURNAL: tuple[float, ...] = (
    0.10, 0.05, 0.02, 0.02, 0.02, 0.05, 0.15, 0.40, 0.65, 0.80, 0.80, 0.80,
    0.85, 0.80, 0.80, 0.80, 0.80, 0.85, 0.90, 0.95, 1.00, 1.00, 0.70, 0.30,
)
"""Relative activity in each hour of the day (peak 1.0): thins every peak rate below."""

Line = dict[str, Any]
RegKey = tuple[str, str, str]


@dataclass(frozen=True)
class DayPlan:
    """The population of one simulated day (``QUICK`` or ``FULL``)."""

    users: int
    hours: float = 24.0


QUICK = DayPlan(users=10)
FULL = DayPlan(users=150)


@dataclass
class Day:
    """The day's contract lines in time order, and every push registration in it."""

    lines: list[Line]
    users: int
    devices: list[RegKey]
    hours: float

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.lines:
            out[line["event"]] = out.get(line["event"], 0) + 1
        return out


def write_day(day: Day, out: TextIO) -> int:
    """The day as a contract trace (JSON Lines); returns how many lines."""
    for line in day.lines:
        out.write(json.dumps(line) + "\n")
    return len(day.lines)


# --- stanzas ----------------------------------------------------------------------------------

_JMI = "urn:xmpp:jingle-message:0"


def _chat(sid: str, frm: str, to: str, n: int, omemo: bool) -> str:
    payload = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='7'/>"
               "<payload>AAAA</payload></encrypted><store xmlns='urn:xmpp:hints'/>" if omemo
               else f"<body>message {n}</body><markable xmlns='urn:xmpp:chat-markers:0'/>")
    return (f"<message xmlns='jabber:client' type='chat' id='{sid}' from='{frm}' to='{to}'>"
            f"{payload}</message>")


def _composing(sid: str, frm: str, to: str) -> str:
    return (f"<message xmlns='jabber:client' type='chat' id='{sid}' from='{frm}' to='{to}'>"
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
            "<no-store xmlns='urn:xmpp:hints'/></message>")


def _receipt(sid: str, frm: str, to: str, of: str) -> str:
    return (f"<message xmlns='jabber:client' id='{sid}' from='{frm}' to='{to}'>"
            f"<received xmlns='urn:xmpp:receipts' id='{of}'/></message>")


def _carbon(sid: str, user: str, source: str, contact: str, n: int) -> str:
    return (f"<message xmlns='jabber:client' id='{sid}' from='{user}' to='{user}'>"
            "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            f"<message xmlns='jabber:client' type='chat' from='{user}/{source}' "
            f"to='{contact}'><body>reply {n}</body></message></forwarded></sent></message>")


def _groupchat(sid: str, room: str, nick: str, to: str, mention: str | None) -> str:
    reference = ("" if mention is None else
                 f"<reference xmlns='urn:xmpp:reference:0' type='mention' begin='0' "
                 f"end='{len(mention)}' uri='xmpp:{room}/{mention}'/>")
    text = f"{mention}: look" if mention else "news"
    return (f"<message xmlns='jabber:client' type='groupchat' id='{sid}' from='{room}/{nick}' "
            f"to='{to}'><body>{text}</body>{reference}</message>")


def _call(sid: str, frm: str, to: str, element: str, call_id: str) -> str:
    inner = ("<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"
             if element == "propose" else "")
    store = "<store xmlns='urn:xmpp:hints'/>" if element in ("propose", "retract") else ""
    return (f"<message xmlns='jabber:client' type='chat' id='{sid}' from='{frm}' to='{to}'>"
            f"<{element} xmlns='{_JMI}' id='{call_id}'>{inner}</{element}>{store}</message>")


@dataclass(frozen=True)
class _Msg:
    """One stanza for a user: its XML, whether a person is woken for it, and how the server
    routes it (``archive``: MAM keeps it; ``offline``: offline storage takes it when no session
    is live; ``room``: a group chat message, ``skip``: the resource that sent it)."""

    id: str
    xml: str
    important: bool
    archive: bool = False
    offline: bool = False
    room: Room | None = None
    skip: str | None = None
    wakes: bool = True


# --- rooms ------------------------------------------------------------------------------------

@dataclass
class Room:
    jid: str
    busy: bool
    offline_delivery: bool
    members: list[int]
    messages: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    """(time, stanza id, sender nick, mentioned nick)."""


def _poisson(rng: random.Random, peak_per_hour: float, shift: float = 0.0,
             start: float = 0.0, end: float = DAY) -> list[float]:
    """Times of a Poisson process at ``peak_per_hour``, thinned by DIURNAL (hours shifted)."""
    out: list[float] = []
    if peak_per_hour <= 0:
        return out
    t = start
    while True:
        t += rng.expovariate(peak_per_hour / HOUR)
        if t >= end:
            return out
        if rng.random() < DIURNAL[int(((t + shift) / HOUR) % 24)]:
            out.append(t)


def _gap(rng: random.Random, rapid: bool, burst: tuple[float, float], burst_share: float,
         pause: tuple[float, float]) -> float:
    """Seconds to the next message of a discussion: rapid-fire (0.05-0.4 s), within a burst,
    or after a pause."""
    if rapid:
        return rng.uniform(0.05, 0.4)
    return rng.uniform(*burst) if rng.random() < burst_share else rng.uniform(*pause)


def _nick(user: int) -> str:
    return f"n{user}"


def _user_jid(user: int) -> str:
    return f"u{user}@{DOMAIN}"


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _rooms(rng: random.Random, users: int, ids: _Ids, end: float) -> list[Room]:
    rooms = []
    for r in range(max(2, users // 3)):
        busy = rng.random() < 0.25
        size = min(users, rng.randint(3, 12))
        room = Room(f"room{r}@{MUC}", busy, rng.random() < 0.5,
                    sorted(rng.sample(range(users), size)))
        for start in _poisson(rng, 6.0 if busy else 0.5, end=end):
            t = start
            flood = rng.random() < 0.05  # a bot, or a bridge splitting a paste into lines
            count = rng.randint(5, 20) if flood else min(40, 2 + int(rng.expovariate(1 / 7)))
            for _ in range(count):
                t += _gap(rng, flood, (1, 10), 0.8, (30, 120))
                if t >= end:
                    break
                sender = (_nick(rng.choice(room.members)) if rng.random() < 0.3
                          else f"guest{rng.randint(1, 9)}")
                mention = _nick(rng.choice(room.members)) if rng.random() < 0.1 else None
                room.messages.append((t, ids("g"), sender, mention))
        rooms.append(room)
    return rooms


# --- one user's day ---------------------------------------------------------------------------

OFF, ON, DELAYED, HIBERNATED = "off", "on", "delayed", "hibernated"
IOS, ANDROID, DESKTOP = "ios", "android", "desktop"
HIBERNATION_TIMEOUT = 600.0  # Prosody's smacks_hibernation_time, once a push went out
ACK_TIMEOUT = 30.0  # smacks_max_ack_delay


@dataclass
class _Device:
    resource: str
    kind: str
    push: bool
    opens_per_hour: float = 0.0
    use: tuple[float, float] = (30.0, 480.0)
    state: str = OFF
    csi: str = "active"
    unacked: list[str] = field(default_factory=list)
    ack_token: int = 0
    ack_pending: bool = False
    active_until: float = 0.0
    hib_epoch: int = 0
    deadline_set: bool = False
    waking: bool = False
    no_network_until: float = -1.0


class _UserDay:
    """One user's devices and traffic, simulated by a scheduler of timed actions."""

    def __init__(self, rng: random.Random, index: int, ids: _Ids, end: float) -> None:
        self.rng = rng
        self.index = index
        self.ids = ids
        self.end = end
        self.user = _user_jid(index)
        self.shift = rng.uniform(-HOUR, HOUR)
        self.lines: list[Line] = []
        self.queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        phone = _Device("phone", IOS if rng.random() < 0.55 else ANDROID, True, 4.0)
        self.devices = [phone]
        if rng.random() < 0.2:
            self.devices.append(_Device("tablet", IOS, True, 0.6, (120.0, 1200.0)))
        if rng.random() < 0.6:
            self.devices.append(_Device("desktop", DESKTOP, False))
        self.phone = phone

    # --- plumbing ---------------------------------------------------------------------------
    def at(self, t: float, action: Callable[..., None], *args: Any) -> None:
        if t < self.end:
            self.seq += 1
            heapq.heappush(self.queue, (t, self.seq, action, args))

    def emit(self, t: float, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "at": round(t, 3), **fields})

    def sid(self, dev: _Device) -> str:
        return f"{self.user}/{dev.resource}"

    def node(self, dev: _Device) -> str:
        return f"{self.user.split('@')[0]}-{dev.resource}"

    def run(self) -> list[Line]:
        while self.queue:
            t, _, action, args = heapq.heappop(self.queue)
            action(t, *args)
        return self.lines

    def registrations(self) -> list[RegKey]:
        return [(self.user, APP_SERVER, self.node(d)) for d in self.devices if d.push]

    def live(self) -> list[_Device]:
        return [d for d in self.devices if d.state != OFF]

    def has_network(self, dev: _Device, t: float) -> bool:
        return t >= dev.no_network_until

    # --- planning ---------------------------------------------------------------------------
    def plan(self, rooms: list[Room]) -> None:
        for dev in self.devices:
            if dev.push:
                self.at(self.rng.uniform(0, 5), self.start_asleep, dev)
                for t in _poisson(self.rng, dev.opens_per_hour, self.shift, end=self.end):
                    self.at(t, self.open, dev, self.rng.uniform(*dev.use))
            else:
                self.plan_desktop(dev)
        if self.phone.kind == ANDROID:
            for t in _poisson(self.rng, 0.7, self.shift, end=self.end):
                self.at(t, self.network_change, self.phone)
        self.plan_offline()
        self.plan_conversations()
        self.plan_calls()
        self.plan_rooms(rooms)

    def plan_desktop(self, dev: _Device) -> None:
        rng = self.rng
        spans = [(8.5 * HOUR + rng.gauss(0, 1800), 17.5 * HOUR + rng.gauss(0, 2700))]
        if rng.random() < 0.3:
            spans.append((20 * HOUR + rng.uniform(0, 1800), 22.5 * HOUR + rng.uniform(0, 1800)))
        for start, stop in spans:
            self.at(start, self.desktop_on, dev)
            self.at(stop, self.close, dev)

    def plan_offline(self) -> None:
        rng = self.rng
        periods = []
        if rng.random() < 0.15:
            periods.append((0.5 * HOUR, 6.5 * HOUR))
        start = 7 * HOUR
        while True:  # 0.7 a day, evenly between 07 and 23 h
            start += rng.expovariate(0.7 / (16 * HOUR))
            if start >= 23 * HOUR:
                break
            periods.append((start, start + rng.uniform(900, 7200)))
        for start, stop in periods:
            self.at(start, self.network_lost, self.phone, stop)

    def plan_conversations(self) -> None:
        rng = self.rng
        for start in _poisson(rng, 1.5, self.shift, end=self.end):
            contact = f"c{rng.randint(1, 40)}@{CONTACTS}/mobile"
            if rng.random() < 0.6:
                self.at(start + rng.uniform(10, 180), self.open, self.phone,
                        rng.uniform(*self.phone.use))
            t = start
            files = rng.random() < 0.1  # several pictures or links sent at once
            count = rng.randint(3, 8) if files else min(20, 1 + int(rng.expovariate(1 / 5)))
            for _ in range(count):
                t += _gap(rng, files, (0.5, 4), 0.7, (20, 180))
                if rng.random() < 0.5:
                    sid = self.ids("s")
                    self.at(t - rng.uniform(1, 3), self.arrive,
                            _Msg(sid, _composing(sid, contact, self.user), False, wakes=False))
                n = self.ids.n
                sid = self.ids("m")
                msg = _Msg(sid, _chat(sid, contact, self.user, n, rng.random() < 0.4), True,
                           archive=True, offline=True)
                self.at(t, self.arrive, msg)
                if rng.random() < 0.5:
                    self.at(t + rng.uniform(5, 40), self.reply, contact, sid)

    def plan_calls(self) -> None:
        rng = self.rng
        for t in _poisson(rng, 0.3, self.shift, end=self.end):
            caller = f"c{rng.randint(1, 40)}@{CONTACTS}/mobile"
            call_id = self.ids("call")
            sid = self.ids("p")
            self.at(t, self.arrive, _Msg(sid, _call(sid, caller, self.user, "propose", call_id),
                                         True, archive=True, offline=True))
            roll = rng.random()
            if roll < 0.4:
                self.at(t + rng.uniform(5, 30), self.retract, caller, call_id)
            else:
                outcome = "accept" if roll < 0.75 else "reject"
                self.at(t + rng.uniform(3, 10), self.answer, caller, call_id, outcome)

    def plan_rooms(self, rooms: list[Room]) -> None:
        rng = self.rng
        for room in rooms:
            if self.index not in room.members:
                continue
            if rng.random() >= 0.15:
                weights = (10, 60, 30) if room.busy else (50, 40, 10)
                notify = rng.choices(("always", "on-mention", "never"), weights)[0]
                self.at(0.0, self.setting, room.jid, notify)
            for t, sid, sender, mention in room.messages:
                xml = _groupchat(sid, room.jid, sender, self.user, mention)
                self.at(t, self.arrive, _Msg(sid, xml, True, room=room,
                                             wakes=mention == _nick(self.index)))

    # --- device actions ---------------------------------------------------------------------
    def setting(self, t: float, chat: str, notify: str) -> None:
        self.emit(t, "chat-settings", user=self.user, chat=chat, notify=notify,
                  nick=_nick(self.index))

    def bind(self, t: float, dev: _Device) -> None:
        self.emit(t, "session-bind", session=self.sid(dev))
        if dev.push:
            self.emit(t, "push-enable", session=self.sid(dev), jid=APP_SERVER,
                      node=self.node(dev), secret="s3cr3t")
        dev.state, dev.csi, dev.unacked, dev.waking = ON, "active", [], False

    def set_csi(self, t: float, dev: _Device, state: str) -> None:
        if dev.state in (ON, DELAYED) and dev.csi != state:
            self.emit(t, "csi-state", session=self.sid(dev), state=state)
            dev.csi = state

    def start_asleep(self, t: float, dev: _Device) -> None:
        """Midnight: the app is in the background and its session hibernated."""
        self.bind(t, dev)
        self.set_csi(t, dev, "inactive")
        self.hibernate(t, dev)

    def desktop_on(self, t: float, dev: _Device) -> None:
        if dev.state == OFF:
            self.bind(t, dev)
            self.at(t + self.rng.uniform(300, 2700), self.toggle_csi, dev)

    def toggle_csi(self, t: float, dev: _Device) -> None:
        if dev.state != OFF:
            self.set_csi(t, dev, "inactive" if dev.csi == "active" else "active")
            self.at(t + self.rng.uniform(300, 2700), self.toggle_csi, dev)

    def close(self, t: float, dev: _Device) -> None:
        if dev.state != OFF:
            self.emit(t, "session-destroyed", session=self.sid(dev))
            dev.state = OFF

    def connect(self, t: float, dev: _Device) -> None:
        """Be connected: resume a hibernated session, or bind a new one."""
        if dev.state == HIBERNATED:
            self.emit(t, "smacks-hibernation-end", session=self.sid(dev))
            dev.state, dev.unacked, dev.waking = ON, [], False
        elif dev.state == OFF:
            self.bind(t, dev)

    def open(self, t: float, dev: _Device, duration: float) -> None:
        if not self.has_network(dev, t):
            return
        self.connect(t, dev)
        self.set_csi(t, dev, "active")
        if t + duration > dev.active_until:
            dev.active_until = t + duration
            self.at(dev.active_until, self.background, dev, dev.active_until)

    def background(self, t: float, dev: _Device, until: float) -> None:
        if dev.active_until != until or dev.state not in (ON, DELAYED):
            return
        self.set_csi(t, dev, "inactive")
        if dev.kind == IOS:
            self.at(t + self.rng.uniform(10, 60), self.suspend, dev)

    def suspend(self, t: float, dev: _Device) -> None:
        if dev.state in (ON, DELAYED) and dev.csi == "inactive" and t >= dev.active_until:
            self.hibernate(t, dev)

    def hibernate(self, t: float, dev: _Device) -> None:
        self.emit(t, "smacks-hibernation-start", session=self.sid(dev), queue=dev.unacked)
        dev.state, dev.unacked, dev.deadline_set = HIBERNATED, [], False
        dev.hib_epoch += 1
        dev.ack_token += 1
        dev.ack_pending = False

    def wake(self, t: float, dev: _Device) -> None:
        """A push reached the device: it connects to fetch, then sleeps again (iOS)."""
        dev.waking = False
        if not self.has_network(dev, t) or dev.state in (ON, DELAYED):
            return
        self.connect(t, dev)
        if dev.kind == IOS:
            self.set_csi(t, dev, "inactive")
            self.at(t + self.rng.uniform(15, 40), self.suspend, dev)
        elif dev.state == ON:
            self.set_csi(t, dev, "inactive")

    def timeout(self, t: float, dev: _Device, epoch: int) -> None:
        if dev.state == HIBERNATED and dev.hib_epoch == epoch:
            self.close(t, dev)

    def network_change(self, t: float, dev: _Device) -> None:
        if dev.state in (ON, DELAYED) and t >= dev.active_until:
            self.hibernate(t, dev)
            self.at(t + self.rng.uniform(5, 90), self.wake, dev)

    def network_lost(self, t: float, dev: _Device, until: float) -> None:
        dev.no_network_until = until
        if dev.state in (ON, DELAYED):
            self.hibernate(t, dev)
        if dev.kind == ANDROID:
            self.at(until, self.wake, dev)

    # --- acks -------------------------------------------------------------------------------
    def queue_to(self, t: float, dev: _Device, msg: _Msg) -> None:
        self.emit(t, "stanza-queued", session=self.sid(dev), stanza=msg.xml)
        if dev.state == HIBERNATED:
            self.hibernated_stanza(t, dev, msg)
            return
        dev.unacked.append(msg.xml)
        if dev.state != ON or dev.ack_pending or (dev.csi != "active" and not msg.important):
            return
        dev.ack_pending = True
        if self.rng.random() < 0.01:
            self.at(t + ACK_TIMEOUT, self.ack_delayed, dev, dev.ack_token)
        else:
            self.at(t + self.rng.uniform(0.2, 1.5), self.ack, dev, dev.ack_token)

    def hibernated_stanza(self, t: float, dev: _Device, msg: _Msg) -> None:
        if not (msg.important and dev.push):
            return
        if not dev.deadline_set:
            dev.deadline_set = True
            self.at(t + HIBERNATION_TIMEOUT, self.timeout, dev, dev.hib_epoch)
        if msg.wakes:
            self.wake_soon(t, dev)

    def wake_soon(self, t: float, dev: _Device) -> None:
        if not dev.waking and self.has_network(dev, t):
            dev.waking = True
            delay = (2, 8) if dev.kind == IOS else (1, 4)
            self.at(t + self.rng.uniform(*delay), self.wake, dev)

    def ack(self, t: float, dev: _Device, token: int) -> None:
        if dev.ack_token == token and dev.state in (ON, DELAYED):
            self.emit(t, "smacks-ack-received", session=self.sid(dev))
            dev.state, dev.unacked, dev.ack_pending = ON, [], False
            dev.ack_token += 1

    def ack_delayed(self, t: float, dev: _Device, token: int) -> None:
        if dev.ack_token != token or dev.state != ON:
            return
        self.emit(t, "smacks-ack-delayed", session=self.sid(dev), queue=dev.unacked)
        dev.state = DELAYED
        if self.rng.random() < 0.5:
            self.at(t + self.rng.uniform(5, 40), self.ack, dev, token)
        else:
            self.at(t + self.rng.uniform(10, 60), self.link_lost, dev, token)

    def link_lost(self, t: float, dev: _Device, token: int) -> None:
        if dev.ack_token == token and dev.state == DELAYED:
            self.hibernate(t, dev)
            self.at(t + self.rng.uniform(5, 90), self.wake, dev)

    # --- traffic ----------------------------------------------------------------------------
    def arrive(self, t: float, msg: _Msg) -> None:
        """The server routes one stanza to the user: archive, sessions, offline, bare JID."""
        targets = [d for d in self.live() if d.resource != msg.skip]
        if msg.archive and targets:
            self.emit(t, "archive-message-added", for_user=self.user, stanza=msg.xml)
        for dev in targets:
            self.queue_to(t, dev, msg)
        if not targets:
            self.unrouted(t, msg)

    def unrouted(self, t: float, msg: _Msg) -> None:
        """No session of the user is live."""
        if msg.room is not None:
            if msg.room.offline_delivery:
                self.emit(t, "message/bare/groupchat", user=self.user, stanza=msg.xml)
        elif msg.offline:
            self.emit(t, "message/offline/handle", user=self.user, stanza=msg.xml)
        if msg.archive:
            self.emit(t, "archive-message-added", for_user=self.user, stanza=msg.xml)
        if msg.important and msg.wakes and msg.skip is None:
            for dev in self.devices:
                if dev.push:
                    self.wake_soon(t, dev)

    def foreground(self) -> _Device | None:
        for dev in self.devices:
            if dev.state == ON and dev.csi == "active":
                return dev
        return None

    def reply(self, t: float, contact: str, of: str) -> None:
        dev = self.foreground()
        if dev is None:
            return
        sid = self.ids("c")
        self.arrive(t, _Msg(sid, _carbon(sid, self.user, dev.resource, contact, self.ids.n),
                            False, skip=dev.resource, wakes=False))
        rid = self.ids("r")
        self.at(t + self.rng.uniform(0.5, 2), self.arrive,
                _Msg(rid, _receipt(rid, contact, self.user, of), False, wakes=False))

    def retract(self, t: float, caller: str, call_id: str) -> None:
        sid = self.ids("x")
        self.arrive(t, _Msg(sid, _call(sid, caller, self.user, "retract", call_id), False,
                            archive=True, offline=True, wakes=False))

    def answer(self, t: float, caller: str, call_id: str, outcome: str) -> None:
        if not self.has_network(self.phone, t):
            self.at(t + 30, self.retract, caller, call_id)
            return
        self.open(t, self.phone, self.rng.uniform(60, 900) if outcome == "accept" else 20)
        sid = self.ids("j")
        xml = _call(sid, f"{self.user}/phone", self.user, outcome, call_id)
        self.arrive(t, _Msg(sid, xml, False, skip="phone", wakes=False))


def generate_day(plan: DayPlan = QUICK, seed: int = 14) -> Day:
    """A day of ``plan.users`` users' traffic, the same for the same seed."""
    rng = random.Random(seed)
    ids = _Ids()
    end = plan.hours * HOUR
    rooms = _rooms(rng, plan.users, ids, end)
    merged: list[tuple[float, int, int, Line]] = []
    devices: list[RegKey] = []
    for index in range(plan.users):
        day = _UserDay(random.Random(f"{seed}:{index}"), index, ids, end)
        day.plan(rooms)
        devices += day.registrations()
        merged += [(line["at"], index, n, line) for n, line in enumerate(day.run())]
    merged.sort(key=lambda item: item[:3])
    return Day([line for *_, line in merged], plan.users, devices, plan.hours)


def lines_of(day: Day) -> Iterable[str]:
    """The day's lines as JSON text, as a trace file holds them (for read_trace or replay)."""
    return (json.dumps(line) for line in day.lines)


# --- running the day through each setting -----------------------------------------------------

BURST_WINDOWS = (0, 1, 5, 20)
"""The engine's settings compared (``Config(burst_window=...)``, seconds): off, the issue's 1
and 5 s, and fpush's own 20 s window for reference."""


@dataclass(frozen=True)
class Limit:
    """An app server's cap: at most ``count`` pushes per device in any ``window`` seconds."""

    name: str
    count: int
    window: float
    source: str


LIMITS = (
    Limit("5 per 1 s", 5, 1.0, "Openfire's push plugin, the app server cap of Monal#354"),
    Limit("1 per 20 s", 1, 20.0, "fpush's per-token window (example config)"),
)

Sent = tuple[RegKey, float]
"""One push as counted: the registration (device) and when it was sent."""


def over_limit(times: list[float], count: int, window: float) -> list[int]:
    """Indexes of one device's pushes (``times`` in order) that arrive when ``count`` pushes
    already went to it in the ``window`` seconds before (``t - t' < window``): the pushes an
    app server allowing ``count`` per ``window`` would refuse, delay or drop. Times are
    sorted, so that is the push ``count`` places back being less than ``window`` ago."""
    return [i for i in range(count, len(times)) if times[i] - times[i - count] < window]


def summarize(sent: list[Sent], devices: list[RegKey], hours: float) -> dict[str, Any]:
    """Pushes per device per hour (mean, p95, max over every device-hour of the day, quiet
    ones included), the mean per hour of the day, and each limit's violations: how many
    pushes were over it, and the share of device-hours with at least one."""
    slots = max(1, math.ceil(hours))

    def slot(at: float) -> int:  # pushes flushed after the last event count in the last hour
        return min(slots - 1, int(at // HOUR))

    per_device: dict[RegKey, list[float]] = {key: [] for key in devices}
    for key, at in sent:
        per_device.setdefault(key, []).append(at)
    grid = []
    for times in per_device.values():
        times.sort()
        row = [0] * slots
        for at in times:
            row[slot(at)] += 1
        grid.append(row)
    limits: dict[str, dict[str, Any]] = {}
    for limit in LIMITS:
        over = hours_hit = devices_hit = 0
        for times in per_device.values():
            indexes = over_limit(times, limit.count, limit.window)
            hit = {slot(times[i]) for i in indexes}
            over, hours_hit, devices_hit = over + len(indexes), hours_hit + len(hit), \
                devices_hit + bool(hit)
        limits[limit.name] = {"violations": over, "device_hours": hours_hit,
                              "device_hours_share": hours_hit / max(1, len(grid) * slots),
                              "devices": devices_hit}
    cells = sorted(n for row in grid for n in row)
    return {
        "pushes": len(sent), "devices": len(grid), "device_hours": len(cells),
        "per_device_hour": {
            "mean": sum(cells) / len(cells) if cells else 0.0,
            "p95": _percentile(cells, 95), "max": cells[-1] if cells else 0,
        },
        "per_device_day_max": max((sum(row) for row in grid), default=0),
        "hourly_mean": [sum(row[h] for row in grid) / max(1, len(grid)) for h in range(slots)],
        "limits": limits,
    }


def _percentile(ordered: list[int], q: float) -> float:
    """The q-th percentile of sorted values, linear between the closest ranks (numpy's
    default)."""
    if not ordered:
        return 0.0
    return float(numpy.percentile(ordered, q))


# --- deciders: the engine per setting, and the Prosody baseline ---------------------------------

ENGINE = "pushrules.runtime.engine.Engine"


def engine_pushes(events: list[Any], burst_window: float) -> list[Sent]:
    """The engine's pushes for the day with ``Config(burst_window=...)``, the held ones
    flushed at the end (each at its due time)."""
    from pushrules.model.config import Config
    from pushrules.runtime import Engine

    engine = Engine(Config(burst_window=burst_window))
    sent: list[Sent] = []
    now = 0.0
    for event in events:
        now = now if event.at is None else event.at
        sent += [((p.user, p.jid, p.node), now if p.at is None else p.at)
                 for p in engine.handle(event)]
    sent += [((p.user, p.jid, p.node), now if p.at is None else p.at) for p in engine.flush()]
    return sent


def prosody_pushes(events: list[Any], chat_settings: bool) -> list[Sent]:
    from .prosody_batching import simulate

    return [(push.key, push.at) for push in simulate(events, chat_settings)]


def run(quick: bool = False, seed: int = 14, progress: Callable[[str], None] | None = None,
        plan: DayPlan | None = None) -> dict[str, Any]:
    """The day through every setting and the baseline, as one JSON-able dict."""
    from time import perf_counter

    from pushrules.runtime.trace import read_trace

    plan = plan or (QUICK if quick else FULL)
    say = progress or (lambda _message: None)
    start = perf_counter()
    say(f"simday: generating {plan.users} users' day (seed {seed})")
    day = generate_day(plan, seed)
    events = [item.event for item in read_trace(lines_of(day))]  # as replay reads it
    prepared = perf_counter() - start
    runs: list[tuple[str, str, Callable[[], list[Sent]]]] = [
        (f"burst_window={w}", "pushrules", partial(engine_pushes, events, w))
        for w in BURST_WINDOWS
    ]
    runs += [("prosody 1 s batch", "baseline", partial(prosody_pushes, events, False)),
             ("prosody 1 s batch + chat settings", "baseline",
              partial(prosody_pushes, events, True))]
    settings: dict[str, dict[str, Any]] = {}
    for name, kind, decide in runs:
        say(f"simday: {name}")
        began = perf_counter()
        sent = decide()
        settings[name] = {"kind": kind, **summarize(sent, day.devices, day.hours),
                          "seconds": perf_counter() - began}
    return {
        "quick": quick, "seed": seed, "users": day.users, "devices": len(day.devices),
        "hours": day.hours, "events": len(day.lines), "event_counts": day.counts(),
        "decider": ENGINE, "settings": settings,
        "limits": [{"name": limit.name, "count": limit.count, "window": limit.window,
                    "source": limit.source} for limit in LIMITS],
        "seconds": {"prepare": prepared, "total": perf_counter() - start},
    }


# --- report -----------------------------------------------------------------------------------

def assumptions() -> str:
    """The generator's assumptions, as the module docstring states them (one source)."""
    doc = __doc__ or ""
    start = doc.index("- Diurnal")
    return doc[start:].strip()


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def text(result: dict[str, Any], plot: str | None = None) -> str:
    """The result as Markdown: the table, the plot's link, how it was made."""
    limits = [limit["name"] for limit in result["limits"]]
    head = ("| setting | pushes | vs burst_window=0 | per device-hour: mean | p95 | max | most "
            "to one device in the day | "
            + " | ".join(f"over {n}: pushes | device-hours" for n in limits) + " |")
    off = result["settings"].get("burst_window=0", {}).get("pushes")
    lines = [
        "# A simulated day of traffic",
        "",
        f"`pushrules bench --simday{' --quick' if result['quick'] else ''} --seed "
        f"{result['seed']}`: {result['users']} users, {result['devices']} push devices, "
        f"{result['events']:,} contract events over {result['hours']:g} h, run in "
        f"{result['seconds']['total']:.0f} s. The pushrules rows are decided by "
        f"{result['decider']} with `Config(burst_window=...)`, the pushes still held at the "
        "end of the day flushed (`Engine.flush`); the Prosody rows are the comparison baseline "
        "(benchmarks/prosody_batching.py: mod_cloud_notify 0.12's 1 s batching as "
        "shared/research/prosody-cloud-notify.md 1.2-1.3 describe it), not a rule.",
        "",
        head,
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(limits),
    ]
    for name, row in result["settings"].items():
        per = row["per_device_hour"]
        cells = [f"{row['limits'][n]['violations']:,} | "
                 f"{row['limits'][n]['device_hours']:,} "
                 f"({_share(row['limits'][n]['device_hours_share'])})" for n in limits]
        label = name if row["kind"] == "pushrules" else f"{name} (baseline)"
        versus = f"{row['pushes'] / off:.2f}x" if off else "n/a"
        lines.append(f"| {label} | {row['pushes']:,} | {versus} | {per['mean']:.2f} | "
                     f"{per['p95']:.1f} | {per['max']:,} | {row['per_device_day_max']:,} | "
                     + " | ".join(cells) + " |")
    counts = sorted(result["event_counts"].items(), key=lambda item: -item[1])
    lines += [
        "",
        "Events: " + ", ".join(f"`{name}` {n:,}" for name, n in counts) + ".",
        "",
        "Device-hours: every push registration for every hour of the day, quiet hours "
        "included. A push is over a limit when the device already got that many pushes in "
        "the window before it (`t - t' < window`); the device-hours column counts the hours "
        "with at least one such push, and their share of all device-hours. Limits: "
        + "; ".join(f"{limit['name']}: {limit['source']}" for limit in result["limits"]) + ".",
    ]
    if plot:
        lines += ["", f"![pushes per device per hour, and limit violations]({plot})"]
    lines += ["", "## Assumptions", "", assumptions(), ""]
    return "\n".join(lines)


def write_plot(result: dict[str, Any], path: str) -> None:
    """Two panels into a PNG: mean pushes per device in each hour of the day per setting, and
    each setting's share of device-hours over each limit."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(12, 4.4), layout="constrained")
    hourly, bars = figure.subplots(1, 2, width_ratios=(3, 2))
    names = list(result["settings"])
    for name in names:
        row = result["settings"][name]
        style = "-" if row["kind"] == "pushrules" else "--"
        hourly.plot(range(len(row["hourly_mean"])), row["hourly_mean"], style, label=name)
    hourly.set(xlabel="hour of the day", ylabel="pushes per device (mean)",
               title=f"Pushes per device per hour ({result['users']} users, seed "
                     f"{result['seed']})", xticks=range(0, int(result["hours"]) + 1, 3))
    hourly.legend(fontsize="small")
    width = 0.8 / max(1, len(result["limits"]))
    for k, limit in enumerate(result["limits"]):
        shares = [100 * result["settings"][n]["limits"][limit["name"]]["device_hours_share"]
                  for n in names]
        positions = [i + (k - (len(result["limits"]) - 1) / 2) * width for i in range(len(names))]
        drawn = bars.bar(positions, shares, width, label=f"over {limit['name']}")
        bars.bar_label(drawn, fmt="%.1f", fontsize="x-small")
    bars.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names],
                    fontsize="x-small", rotation=20)
    bars.set(ylabel="device-hours with a violation (%)", title="App server limits")
    bars.legend(fontsize="small")
    figure.savefig(path, format="png", dpi=100)
