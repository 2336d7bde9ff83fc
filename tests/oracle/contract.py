"""An independent reading of the server-event contract (shared/spec/events.md, versions 1 and 2).

Written from the contract text, business_rules.markdown and the README's "Design decisions"
only, never from model/ or runtime/, so that a differential test against the engine checks the
engine against the words rather than against itself. Plain dictionaries and dataclasses, one
method per event; every choice the contract leaves open is marked READING.

    oracle = Oracle({"burst_window": 2})
    pushes = oracle.feed({"event": "session-bind", "session": "bob@example.org/phone"})
    pushes += oracle.finish()      # end of input: held pushes flushed

`feed` returns the pushes (output JSON objects) decided for one event, including the held
pushes that came due before it. An event that is impossible in the current state changes
nothing; its reason is in `oracle.rejected` (None after a possible event).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .reading import Msg, bare, read_stanza

LIVE = ("active", "ack_delayed", "hibernated")
NOT_RETRIED = ("client", "evicted", "expired", "remote")

Push = dict[str, Any]
Entry = tuple[Msg, str]  # a stanza and the rule pushing it


class Impossible(Exception):
    """The event is well-formed but impossible in the current state."""


class ContractError(ValueError):
    """The event is malformed (the oracle checks only what it needs: `at`)."""


@dataclass
class Session:
    state: str = "active"
    csi: str = "active"


@dataclass
class Registration:
    user: str
    jid: str
    node: str
    enabled_seq: int
    session: str | None = None  # the live session it is bound to
    enabled: bool = True
    reason: str | None = None
    errors: int = 0
    pushed: set[str] = field(default_factory=set)  # dedup memory (held stanzas included)
    last_sent: float | None = None  # burst window
    held: list[Entry] = field(default_factory=list)
    held_seq: int = 0
    orphan_since: float | None = None
    probe: str | None = None  # None, 'waiting', 'ready', 'in_flight' (retry_after)
    disabled_at: float = 0.0
    probe_session: str | None = None  # the session bound when error-disabled

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user, self.jid, self.node)


@dataclass(frozen=True)
class Options:
    max_errors: int = 16
    max_devices: int = 5
    groupchat_default: str = "always"
    burst_window: float = 0
    orphan_ttl: float = 0
    retry_after: float = 0
    version: int = 2  # 1: the version-1 contract (no rule e, no v2 events)

    @classmethod
    def parse(cls, settings: dict[str, Any] | None) -> Options:
        values: dict[str, Any] = {}
        for name, raw in (settings or {}).items():
            if name == "groupchat_default":
                values[name] = str(raw)
            elif name in ("max_errors", "max_devices", "version"):
                values[name] = int(raw)
            elif name in ("burst_window", "orphan_ttl", "retry_after"):
                values[name] = _number(raw)
        return cls(**values)


def _number(raw: Any) -> float:
    value = float(raw)
    return int(value) if value == int(value) else value


class Oracle:
    """The contract as an interpreter: feed events, get pushes."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.opt = Options.parse(options)
        self.sessions: dict[str, Session] = {}
        self.regs: dict[tuple[str, str, str], Registration] = {}
        self.known: set[tuple[str, str, str]] = set()
        self.settings: dict[tuple[str, str], tuple[str, str | None]] = {}
        self.calls: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
        self.now: float = 0
        self.timed = False
        self.seq = 0
        self.out: list[Push] = []
        self.rejected: str | None = None

    # --- driving -------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[Push]:
        self.out, self.rejected = [], None
        name = event["event"]
        at = event.get("at", self.now)
        if at < self.now:
            raise ContractError(f"'at' {at} is earlier than {self.now}")
        if "at" in event:
            self.timed = True
        self.advance(at)
        self.now = at
        handler = self.handlers().get(name)
        if handler is None or (self.opt.version == 1 and name in V2_EVENTS):
            raise ContractError(f"unknown event {name!r}")
        try:
            handler(event)
        except Impossible as exc:
            self.rejected = str(exc)
        return self.out

    def finish(self) -> list[Push]:
        """End of input: each held push is sent at its due time against the final state."""
        self.out = []
        for reg in sorted(self.holding(), key=lambda r: (self.due(r), r.held_seq)):
            self.now = self.due(reg)
            self.flush(reg)
        return self.out

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "session-bind": self.on_bind, "push-enable": self.on_enable,
            "push-disable": self.on_disable, "smacks-ack-delayed": self.on_ack_delayed,
            "smacks-ack-received": self.on_ack_received,
            "smacks-hibernation-start": self.on_hibernation_start,
            "smacks-hibernation-end": self.on_hibernation_end,
            "stanza-queued": self.on_queued, "session-destroyed": self.on_destroyed,
            "archive-message-added": self.on_archive, "message/offline/handle": self.on_offline,
            "push-result": self.on_result, "message/bare/groupchat": self.on_groupchat,
            "csi-state": self.on_csi, "chat-settings": self.on_chat_settings,
            "push-remote-disable": self.on_remote_disable, "tick": lambda _e: None,
        }

    # --- time ----------------------------------------------------------------------------
    def holding(self) -> list[Registration]:
        return [r for r in self.regs.values() if r.held]

    def due(self, reg: Registration) -> float:
        assert reg.last_sent is not None
        return reg.last_sent + self.opt.burst_window

    def timers(self) -> Iterator[tuple[float, int, int, Registration]]:
        """(due time, kind, order, registration): held pushes (kind 0) before expiries (1)
        at the same time; retries (2) only make a disabled registration ready to probe."""
        for reg in self.regs.values():
            if reg.held:
                yield self.due(reg), 0, reg.held_seq, reg
            if self.opt.orphan_ttl and reg.enabled and reg.orphan_since is not None:
                yield reg.orphan_since + self.opt.orphan_ttl, 1, reg.enabled_seq, reg
            if reg.probe == "waiting":
                yield reg.disabled_at + self.opt.retry_after, 2, reg.enabled_seq, reg

    def advance(self, until: float) -> None:
        while True:
            pending = [t for t in self.timers() if t[0] <= until]
            if not pending:
                return
            when, kind, _, reg = min(pending, key=lambda t: t[:3])
            self.now = when
            if kind == 0:
                self.flush(reg)
            elif kind == 1:
                self.disable(reg, "expired")
            else:
                reg.probe = "ready"

    def flush(self, reg: Registration) -> None:
        """Send a registration's held stanzas that the rules would still push now."""
        held, reg.held = reg.held, []
        keep = []
        for msg, rule in held:
            if self.still_pushable(reg, rule):
                keep.append((msg, rule))
            elif msg.id is not None:  # dropped when due: never pushed, so not marked
                reg.pushed.discard(msg.id)
        if keep:
            self.send(reg, keep)

    def still_pushable(self, reg: Registration, rule: str) -> bool:
        if rule.startswith("a/"):
            return reg.session is None or self.sessions[reg.session].state != "active"
        if rule == "b/archive":
            return reg.session is None
        return True

    # --- pushing -------------------------------------------------------------------------
    def send(self, reg: Registration, entries: list[Entry], urgent: bool = False) -> None:
        push: Push = {"user": reg.user, "jid": reg.jid, "node": reg.node, "rule": entries[0][1],
                      "stanzas": [m.id for m, _ in entries],
                      "important": any(m.important for m, _ in entries)}
        if urgent:
            push["urgent"] = True
        if self.timed:
            push["at"] = self.now
        self.out.append(push)
        reg.last_sent = self.now
        for msg, _ in entries:
            if msg.id is not None:
                reg.pushed.add(msg.id)
            if msg.call == "propose" and msg.call_id is not None:
                self.calls.setdefault((reg.user, msg.call_id), set()).add(reg.key)

    def deliver(self, reg: Registration, entries: list[Entry], urgent: bool = False) -> None:
        """Apply settings and dedup, then send, hold or probe."""
        chosen = self.fresh(reg, [e for e in entries if self.allowed(reg.user, *e)])
        if not chosen:
            return
        if not reg.enabled:  # a registration ready to probe: one stanza, never held
            reg.probe = "in_flight"
            self.send(reg, chosen[:1], urgent)
            return
        if urgent or not self.in_window(reg):
            self.send(reg, chosen, urgent)
            return
        if not reg.held:
            self.seq += 1
            reg.held_seq = self.seq
        reg.held.extend(chosen)
        reg.pushed.update(m.id for m, _ in chosen if m.id is not None)

    def in_window(self, reg: Registration) -> bool:
        window = self.opt.burst_window
        return bool(window) and reg.last_sent is not None and self.now < reg.last_sent + window

    @staticmethod
    def fresh(reg: Registration, entries: Iterable[Entry]) -> list[Entry]:
        """Dedup by stanza id against what the registration had and within this push."""
        seen = set(reg.pushed)
        chosen = []
        for msg, rule in entries:
            if msg.id is not None and msg.id in seen:
                continue
            if msg.id is not None:
                seen.add(msg.id)
            chosen.append((msg, rule))
        return chosen

    def allowed(self, user: str, msg: Msg, rule: str) -> bool:
        """Chat settings and the echo rule (calls ignore settings, not the echo rule)."""
        chat = msg.chat
        notify, nick = self.settings.get((user, chat or ""), (None, None))
        if msg.type == "groupchat" and nick is not None and msg.sender == f"{chat}/{nick}":
            return False
        if rule.startswith("e/"):
            return True
        if notify is None:
            notify = self.opt.groupchat_default if msg.type == "groupchat" else "always"
        if notify == "never":
            return False
        return notify == "always" or self.mentions(user, msg, chat, nick)

    @staticmethod
    def mentions(user: str, msg: Msg, chat: str | None, nick: str | None) -> bool:
        own = {user} | ({f"{chat}/{nick}"} if nick is not None else set())
        if any(uri.startswith("xmpp:") and uri[5:] in own for uri in msg.mention_uris):
            return True
        return any(to in own or (to.startswith(user + "/") and len(to) > len(user) + 1)
                   for to in msg.reply_tos)

    def pushable(self, user: str, eligible: Callable[[Registration], bool]) -> list[Registration]:
        """The user's registrations that may be pushed (enabled, or ready to probe) and pass
        the path's own condition."""
        return [r for r in self.regs.values() if r.user == user
                and (r.enabled or r.probe == "ready") and eligible(r)]

    # --- sessions ------------------------------------------------------------------------
    def live(self, session: str, *states: str) -> Session:
        record = self.sessions.get(session)
        if record is None:
            raise Impossible(f"no live session {session}")
        if states and record.state not in states:
            raise Impossible(f"session {session} is {record.state}")
        return record

    def on_bind(self, e: dict[str, Any]) -> None:
        if e["session"] in self.sessions:
            raise Impossible(f"session {e['session']} is already live")
        self.sessions[e["session"]] = Session()

    def on_destroyed(self, e: dict[str, Any]) -> None:
        self.live(e["session"])
        del self.sessions[e["session"]]
        for reg in self.regs.values():
            if reg.session == e["session"]:
                reg.session, reg.orphan_since = None, self.now
            if reg.probe_session == e["session"]:
                reg.probe_session = None

    def on_ack_delayed(self, e: dict[str, Any]) -> None:
        self.live(e["session"], "active").state = "ack_delayed"
        self.push_queue(e["session"], e["queue"], "a/ack-delayed")

    def on_ack_received(self, e: dict[str, Any]) -> None:
        self.live(e["session"], "active", "ack_delayed").state = "active"

    def on_hibernation_start(self, e: dict[str, Any]) -> None:
        self.live(e["session"], "active", "ack_delayed").state = "hibernated"
        self.push_queue(e["session"], e["queue"], "a/hibernation-start")

    def on_hibernation_end(self, e: dict[str, Any]) -> None:
        self.live(e["session"], "hibernated").state = "active"

    def on_csi(self, e: dict[str, Any]) -> None:
        self.live(e["session"], "active", "ack_delayed").csi = e["state"]

    def bound_to(self, session: str) -> Callable[[Registration], bool]:
        """Rule a's registrations: bound to the session, or probing for it (READING of
        'were it enabled': still bound to the session it had when disabled)."""
        return lambda r: (r.session == session) if r.enabled else (r.probe_session == session)

    def push_queue(self, session: str, queue: list[str], rule: str) -> None:
        entries = [(read_stanza(xml), rule) for xml in queue]
        for reg in self.pushable(bare(session) or "", self.bound_to(session)):
            self.deliver(reg, entries)

    def on_queued(self, e: dict[str, Any]) -> None:
        session = self.live(e["session"])
        msg = read_stanza(e["stanza"])
        user = bare(e["session"]) or ""
        queued = session.state in ("ack_delayed", "hibernated")
        # READING (issue 13): "a propose inside a smacks queue is pushed by rule a like any
        # queued stanza" and "every version-1 trace replays unchanged" (examples/s8-importance:
        # a propose queued to a hibernated phone is a/queued): a propose queued to an
        # ack-delayed or hibernated session is rule a for that session's registration, and
        # rule e for the user's other ones. A call's end is always rule e (only where the
        # propose went).
        in_queue = self.bound_to(e["session"]) if queued and msg.call == "propose" else None
        if self.call_rule(user, msg, skip=in_queue):
            if in_queue is None:
                return
        if queued:
            for reg in self.pushable(user, self.bound_to(e["session"])):
                self.deliver(reg, [(msg, "a/queued")])

    # --- stanzas for a user --------------------------------------------------------------
    def call_rule(self, user: str, msg: Msg,
                  skip: Callable[[Registration], bool] | None = None) -> bool:
        """Rule e on the four events that bring a stanza; True when it decided. ``skip``:
        registrations rule a pushes the propose to instead (see on_queued)."""
        if self.opt.version == 1 or msg.call is None:
            return False
        if msg.call == "propose":
            for reg in self.pushable(user, lambda r: not self.ringing_app(r)
                                     and not (skip is not None and skip(r))):
                self.deliver(reg, [(msg, "e/call")], urgent=True)
            return True
        targets = self.calls.get((user, msg.call_id or ""), set())
        for reg in self.pushable(user, lambda r: r.key in targets):
            self.deliver(reg, [(msg, "e/call-end")])
        return True

    def ringing_app(self, reg: Registration) -> bool:
        """Bound to a session that is active and CSI-active: the open app rings itself."""
        session = self.sessions.get(reg.session or "")
        return session is not None and session.state == "active" and session.csi == "active"

    def on_archive(self, e: dict[str, Any]) -> None:
        msg = read_stanza(e["stanza"])
        user = e["for_user"]
        if msg.to_bare != user:  # README: for_user must be the recipient
            return
        if not self.call_rule(user, msg):
            for reg in self.pushable(user, lambda r: r.session is None):
                self.deliver(reg, [(msg, "b/archive")])

    def on_offline(self, e: dict[str, Any]) -> None:
        self.to_every(e["user"], read_stanza(e["stanza"]), "c/offline")

    def on_groupchat(self, e: dict[str, Any]) -> None:
        self.to_every(e["user"], read_stanza(e["stanza"]), "d/groupchat")

    def to_every(self, user: str, msg: Msg, rule: str) -> None:
        if not self.call_rule(user, msg):
            for reg in self.pushable(user, lambda r: True):
                self.deliver(reg, [(msg, rule)])

    def on_chat_settings(self, e: dict[str, Any]) -> None:
        self.settings[(e["user"], e["chat"])] = (e["notify"], e.get("nick"))

    # --- registrations -------------------------------------------------------------------
    def on_enable(self, e: dict[str, Any]) -> None:
        # READING (v1, kept in v2 by issue 13): `<enable/>` needs a connected session. The v2
        # text's "an enable from a session that is not live" (orphan_ttl) would make a v1
        # warning disappear, and every version-1 trace must replay unchanged.
        self.live(e["session"], "active", "ack_delayed")
        user = bare(e["session"]) or ""
        key = (user, e["jid"], e["node"])
        reg = self.regs.get(key)
        if reg is None or not reg.enabled:
            reg = self.fresh_registration(key)
        self.seq += 1
        reg.enabled_seq = self.seq
        live = e["session"] in self.sessions
        if live:
            self.unbind_session(e["session"], keep=reg)
        reg.session = e["session"] if live else None
        reg.orphan_since = None if live else self.now
        self.known.add(key)
        self.evict_beyond_max(user, keep=reg)

    def unbind_session(self, session: str, keep: Registration) -> None:
        """business_rules.markdown: a session holds one push_identifier, so enabling another
        registration unbinds the one it held (READING: that one is orphaned from now)."""
        for other in self.regs.values():
            if other.session == session and other is not keep:
                other.session, other.orphan_since = None, self.now

    def fresh_registration(self, key: tuple[str, str, str]) -> Registration:
        """Created, or enabled anew after a disable: no errors, dedup, calls or window."""
        old = self.regs.get(key)
        if old is not None:
            self.drop_held(old)
        self.regs[key] = reg = Registration(*key, enabled_seq=0)
        self.forget_calls(key)
        return reg

    def forget_calls(self, key: tuple[str, str, str]) -> None:
        for targets in self.calls.values():
            targets.discard(key)

    def evict_beyond_max(self, user: str, keep: Registration) -> None:
        enabled = [r for r in self.regs.values() if r.user == user and r.enabled]
        while len(enabled) > self.opt.max_devices:
            oldest = min((r for r in enabled if r is not keep), key=lambda r: r.enabled_seq)
            self.disable(oldest, "evicted")
            enabled.remove(oldest)

    def on_disable(self, e: dict[str, Any]) -> None:
        # READING: `<disable/>` needs a connected session (a hibernated one has no link).
        self.live(e["session"], "active", "ack_delayed")
        user = bare(e["session"]) or ""
        node = e.get("node")
        for key in [k for k in self.regs if k[0] == user and k[1] == e["jid"]
                    and (node is None or k[2] == node)]:
            self.drop_held(self.regs.pop(key))

    def drop_held(self, reg: Registration) -> None:
        """Held pushes of a registration disabled or removed are discarded, never pushed."""
        for msg, _ in reg.held:
            if msg.id is not None:
                reg.pushed.discard(msg.id)
        reg.held = []

    def disable(self, reg: Registration, reason: str) -> None:
        self.drop_held(reg)
        counted = reason not in NOT_RETRIED  # disabled for counted errors
        reg.probe_session = reg.session if counted else None
        reg.enabled, reg.reason, reg.session, reg.orphan_since = False, reason, None, None
        reg.probe = "waiting" if counted and self.opt.retry_after else None
        reg.disabled_at = self.now

    def on_result(self, e: dict[str, Any]) -> None:
        key = (e["user"], e["jid"], e["node"])
        if key not in self.known:
            raise Impossible(f"no such registration {key}")
        reg = self.regs.get(key)
        if reg is None:
            return  # a late answer for a removed registration
        error = None if e["ok"] else (e.get("error_type") or "error")
        if reg.enabled:
            self.count_result(reg, error)
        elif reg.probe == "in_flight":
            self.probe_result(reg, error)

    def count_result(self, reg: Registration, error: str | None) -> None:
        if error is None:
            reg.errors = 0
        elif error != "wait":
            reg.errors += 1
            if reg.errors >= self.opt.max_errors:
                self.disable(reg, error)

    def probe_result(self, reg: Registration, error: str | None) -> None:
        if error == "wait":
            reg.probe = "ready"
        elif error is not None:
            self.disable(reg, error)
        else:
            reg.enabled, reg.reason, reg.errors, reg.probe = True, None, 0, None
            reg.session, reg.orphan_since, reg.last_sent = None, self.now, None
            self.forget_calls(reg.key)
            self.seq += 1
            reg.enabled_seq = self.seq
            self.evict_beyond_max(reg.user, keep=reg)

    def on_remote_disable(self, e: dict[str, Any]) -> None:
        reg = self.regs.get((e["user"], e["jid"], e["node"]))
        if reg is None:
            return
        if reg.enabled:
            self.disable(reg, "remote")
        elif reg.probe is not None:
            reg.probe, reg.reason = None, "remote"


V2_EVENTS = ("message/bare/groupchat", "csi-state", "chat-settings", "push-remote-disable", "tick")


def replay(events: Iterable[dict[str, Any]], options: dict[str, Any] | None = None,
           ) -> tuple[list[Push], list[int]]:
    """All pushes of a trace (held ones flushed at the end) and the indexes (0-based) of the
    events rejected as impossible."""
    oracle = Oracle(options)
    pushes: list[Push] = []
    rejected: list[int] = []
    for index, event in enumerate(events):
        pushes += oracle.feed(event)
        if oracle.rejected is not None:
            rejected.append(index)
    return pushes + oracle.finish(), rejected
