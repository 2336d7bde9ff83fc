"""Hypothesis strategies for well-formed traces over a small world: bob with three sessions and
carol with one, two push nodes (and a second push service), a stanza pool that reuses ids (dedup)
and has group chats, echoes, calls, mentions, carbons and chat states. Events may be impossible
in the state they meet: that is part of what the differential tests compare."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import strategies as st

BOB, CAROL = "bob@example.org", "carol@example.org"
SESSIONS = (f"{BOB}/phone", f"{BOB}/desktop", f"{BOB}/tablet", f"{CAROL}/pc")
USERS = (BOB, BOB, CAROL)
PUSH_JIDS = ("push.example.net", "push.example.net", "push.other.net")
NODES = ("n1", "n2")
ROOM = "room@muc.example.org"
NICK = "bobby"
CHATS = ("alice@example.org", ROOM)
ERROR_TYPES = ("wait", "cancel", "auth", "modify", "continue", None, "missing")
JMI = "urn:xmpp:jingle-message:0"

SENDERS = ("alice@example.org/pc", f"{ROOM}/alice", f"{ROOM}/{NICK}", f"{BOB}/desktop", None)
TYPES = ("chat", "groupchat", "normal", None, "headline")
IDS = ("m1", "m2", "m3", "m4", "m5", None)
CALL_IDS = ("c1", "c2")

V1_PAYLOADS = (
    "<body>hi</body>",
    "<body>  </body>",
    "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    "<subject>topic</subject>",
    "<encrypted xmlns='urn:xmpp:omemo:2'><payload>cA==</payload></encrypted>",
    "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message "
    "xmlns='jabber:client' from='bob@example.org/desktop' to='alice@example.org'>"
    "<body>out</body></message></forwarded></sent>",
    "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message "
    "xmlns='jabber:client' from='alice@example.org/pc' to='bob@example.org/desktop'>"
    "<body>in</body></message></forwarded></received>",
)
MENTION_TARGETS = (f"xmpp:{BOB}", f"xmpp:{ROOM}/{NICK}", "xmpp:alice@example.org",
                   f"xmpp:{BOB}/phone")
REPLY_TARGETS = (BOB, f"{BOB}/phone", f"{ROOM}/{NICK}", "alice@example.org", f"{ROOM}/alice")


def call_payload(kind: str, call_id: str) -> str:
    return f"<{kind} xmlns='{JMI}' id='{call_id}'/>"


def v2_payloads() -> st.SearchStrategy[str]:
    calls = st.builds(call_payload, st.sampled_from(("propose", "retract", "reject")),
                      st.sampled_from(CALL_IDS))
    mention = st.builds(lambda uri: f"<body>hey</body><reference xmlns='urn:xmpp:reference:0' "
                        f"type='mention' uri='{uri}' begin='0' end='3'/>",
                        st.sampled_from(MENTION_TARGETS))
    reply = st.builds(lambda to: f"<reply xmlns='urn:xmpp:reply:0' to='{to}' id='x'/>"
                      "<body>re</body>", st.sampled_from(REPLY_TARGETS))
    nested = st.just("<body>x</body><x xmlns='urn:example:wrap'><reference "
                     f"xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{BOB}'/>"
                     f"<propose xmlns='{JMI}' id='c1'/></x>")
    return st.one_of(st.sampled_from(V1_PAYLOADS), calls, mention, reply, nested)


def message(mid: str | None, sender: str | None, to: str, type_: str | None,
            payload: str) -> str:
    attrs = "".join(f" {k}='{v}'" for k, v in (("id", mid), ("from", sender), ("to", to),
                                                ("type", type_)) if v is not None)
    return f"<message xmlns='jabber:client'{attrs}>{payload}</message>"


def stanzas(v2: bool) -> st.SearchStrategy[str]:
    payload = v2_payloads() if v2 else st.sampled_from(V1_PAYLOADS)
    msgs = st.builds(message, st.sampled_from(IDS), st.sampled_from(SENDERS),
                     st.sampled_from((BOB, BOB, f"{BOB}/phone", "alice@example.org")),
                     st.sampled_from(TYPES), payload)
    presence = st.builds(lambda mid: f"<presence xmlns='jabber:client' id='{mid}' "
                         "from='alice@example.org/pc'/>", st.sampled_from(("p1", "p2")))
    return st.one_of(msgs, msgs, msgs, presence)


def unique_ids(queue: list[str]) -> list[str]:
    """The queue without a second stanza carrying an id already in it."""
    seen: set[str] = set()
    kept = []
    for xml in queue:
        head = xml[:xml.index(">")]  # the stanza's own start tag
        start = head.find(" id='")
        ident = head[start + 5:head.index("'", start + 5)] if start >= 0 else None
        if ident is None or ident not in seen:
            kept.append(xml)
        if ident is not None:
            seen.add(ident)
    return kept


def session_events(v2: bool) -> st.SearchStrategy[dict[str, Any]]:
    session = st.sampled_from(SESSIONS)
    # Ids unique within a queue: the engine and the oracle differ on a queue holding two
    # stanzas with one id (test_known_disagreements.py).
    queue = st.lists(stanzas(v2), max_size=3).map(unique_ids)
    simple = st.sampled_from(("session-bind", "smacks-ack-received",
                              "smacks-hibernation-end", "session-destroyed"))
    return st.one_of(
        st.builds(lambda e, s: {"event": e, "session": s}, simple, session),
        st.builds(lambda e, s, q: {"event": e, "session": s, "queue": q},
                  st.sampled_from(("smacks-ack-delayed", "smacks-hibernation-start")),
                  session, queue),
        st.builds(lambda s, x: {"event": "stanza-queued", "session": s, "stanza": x},
                  session, stanzas(v2)),
    )


def registration_events() -> st.SearchStrategy[dict[str, Any]]:
    session = st.sampled_from(SESSIONS)
    jid, node = st.sampled_from(PUSH_JIDS), st.sampled_from(NODES)
    return st.one_of(
        st.builds(lambda s, j, n: {"event": "push-enable", "session": s, "jid": j, "node": n,
                                   "secret": "s3cret"}, session, jid, node),
        st.builds(lambda s, j, n: {"event": "push-disable", "session": s, "jid": j,
                                   **({} if n is None else {"node": n})},
                  session, jid, st.one_of(st.none(), node)),
        st.builds(push_result, st.sampled_from(USERS), jid, node, st.booleans(),
                  st.sampled_from(ERROR_TYPES)),
    )


def push_result(user: str, jid: str, node: str, ok: bool, error: str | None) -> dict[str, Any]:
    event = {"event": "push-result", "user": user, "jid": jid, "node": node, "ok": ok}
    if not ok and error != "missing":
        event["error_type"] = error
    return event


def user_stanza_events(v2: bool) -> st.SearchStrategy[dict[str, Any]]:
    names = ["message/offline/handle"] + (["message/bare/groupchat"] * 2 if v2 else [])
    user = st.sampled_from(USERS)
    return st.one_of(
        st.builds(lambda u, x: {"event": "archive-message-added", "for_user": u, "stanza": x},
                  user, stanzas(v2)),
        st.builds(lambda e, u, x: {"event": e, "user": u, "stanza": x},
                  st.sampled_from(names), user, stanzas(v2)),
    )


def v2_only_events() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda s, v: {"event": "csi-state", "session": s, "state": v},
                  st.sampled_from(SESSIONS), st.sampled_from(("active", "inactive"))),
        st.builds(chat_settings, st.sampled_from(USERS), st.sampled_from(CHATS),
                  st.sampled_from(("always", "on-mention", "never")),
                  st.sampled_from((NICK, None, "other"))),
        st.builds(lambda u, j, n: {"event": "push-remote-disable", "user": u, "jid": j,
                                   "node": n}, st.sampled_from(USERS),
                  st.sampled_from(PUSH_JIDS), st.sampled_from(NODES)),
        st.just({"event": "tick"}),
    )


def chat_settings(user: str, chat: str, notify: str, nick: str | None) -> dict[str, Any]:
    event = {"event": "chat-settings", "user": user, "chat": chat, "notify": notify}
    if nick is not None:
        event["nick"] = nick
    return event


@cache  # built once: strategies are drawn from once per event
def events(v2: bool) -> st.SearchStrategy[dict[str, Any]]:
    parts = [session_events(v2), session_events(v2), registration_events(),
             user_stanza_events(v2)]
    if v2:
        parts.append(v2_only_events())
    return st.one_of(*parts)


def with_times(items: list[dict[str, Any]], steps: list[float | None]) -> list[dict[str, Any]]:
    """Give events increasing `at`s (a step of None: no `at` on that event); a tick always has
    one."""
    now: float = 0
    timed = []
    for event, step in zip(items, steps, strict=True):
        if step is None and event["event"] != "tick":
            timed.append(event)
            continue
        now += step or 0
        timed.append({**event, "at": now})
    return timed


# Session events the generator expects to be possible from each state (it steers most events
# into possible ones so that traces reach deep states; the oracle and the engine decide).
POSSIBLE_FROM = {
    "session-bind": ("offline",),
    "smacks-ack-delayed": ("active",),
    "smacks-ack-received": ("active", "ack_delayed"),
    "smacks-hibernation-start": ("active", "ack_delayed"),
    "smacks-hibernation-end": ("hibernated",),
    "session-destroyed": ("active", "ack_delayed", "hibernated"),
    "stanza-queued": ("active", "ack_delayed", "hibernated"),
    "push-enable": ("active", "ack_delayed"),
    "push-disable": ("active", "ack_delayed"),
    "csi-state": ("active", "ack_delayed"),
}
AFTER = {"session-bind": "active", "smacks-ack-delayed": "ack_delayed",
         "smacks-ack-received": "active", "smacks-hibernation-start": "hibernated",
         "smacks-hibernation-end": "active", "session-destroyed": "offline"}


def steer(event: dict[str, Any], states: dict[str, str], keep_impossible: bool
          ) -> dict[str, Any] | None:
    """The event if it looks possible (or is kept as an impossible one), else None; tracks
    the sessions' states."""
    allowed = POSSIBLE_FROM.get(event["event"])
    if allowed is None:
        return event
    state = states.get(event["session"], "offline")
    if state not in allowed:
        return event if keep_impossible else None
    states[event["session"]] = AFTER.get(event["event"], state)
    return event


@st.composite
def event_lists(draw: st.DrawFn, v2: bool, max_size: int) -> list[dict[str, Any]]:
    """Mostly possible events: a session event impossible in the state the generator tracks is
    kept one time in ten, else replaced by binding that session."""
    states: dict[str, str] = {}
    size = draw(st.integers(min_value=1, max_value=max_size))
    items = []
    for session, node in ((SESSIONS[0], NODES[0]), (SESSIONS[1], NODES[1])):
        if draw(st.integers(0, 3)):  # most traces start with devices that enabled push
            states[session] = "active"
            items += [{"event": "session-bind", "session": session},
                      {"event": "push-enable", "session": session, "jid": PUSH_JIDS[0],
                       "node": node, "secret": "s3cret"}]
    for _ in range(size):
        event = draw(events(v2))
        chosen = steer(event, states, draw(st.integers(0, 9)) == 0)
        if chosen is None:
            chosen = {"event": "session-bind", "session": event["session"]}
            states[event["session"]] = "active"
        items.append(chosen)
    return items


@st.composite
def traces(draw: st.DrawFn, v2: bool = False, timed: bool = False, max_size: int = 30) -> str:
    """A trace as JSON Lines text."""
    items = draw(event_lists(v2, max_size))
    if v2 and not timed:
        items = [e for e in items if e["event"] != "tick"] or [
            {"event": "session-bind", "session": SESSIONS[0]}]
    if timed:
        step = st.one_of(st.none(), st.sampled_from((0, 0.5, 1, 1, 2, 3, 5)))
        items = with_times(items, draw(st.lists(step, min_size=len(items),
                                                 max_size=len(items))))
    return "".join(json.dumps(e) + "\n" for e in items)


def v1_options() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={
        "max_errors": st.sampled_from(("1", "2", "16")),
        "max_devices": st.sampled_from(("1", "2", "5")),
    })


def v2_options(timed: bool) -> st.SearchStrategy[dict[str, str]]:
    optional = {
        "max_errors": st.sampled_from(("1", "2", "16")),
        "max_devices": st.sampled_from(("1", "2", "5")),
        "groupchat_default": st.sampled_from(("always", "on-mention", "never")),
    }
    if timed:
        optional |= {
            "burst_window": st.sampled_from(("0", "1", "2", "5")),
            "orphan_ttl": st.sampled_from(("0", "3", "10")),
            "retry_after": st.sampled_from(("0", "2", "5")),
        }
    return st.fixed_dictionaries({}, optional=optional)


# --- time-heavy traces (issue 14): bob's two devices, answers from the app server for them,
# and times on every event, so that held pushes, expiries and retry probes happen often. A small
# fixed stanza pool keeps generation fast (the v2 stanza kinds are the other strategies').

TIME_STANZAS = tuple(
    [message(f"m{n}", "alice@example.org/pc", BOB, "chat", "<body>hi</body>") for n in range(1, 6)]
    + [message("m6", "alice@example.org/pc", BOB, "chat",
               "<composing xmlns='http://jabber.org/protocol/chatstates'/>"),
       message(None, "alice@example.org/pc", BOB, "chat", "<body>no id</body>"),
       message("g1", f"{ROOM}/alice", BOB, "groupchat", "<body>all</body>"),
       message("o1", f"{BOB}/desktop", "alice@example.org", "chat", "<body>out</body>"),
       message("p1", "alice@example.org/pc", BOB, "chat", call_payload("propose", "c1")),
       message("r1", "alice@example.org/pc", BOB, "chat", call_payload("retract", "c1"))])


def time_heavy_events() -> st.SearchStrategy[dict[str, Any]]:
    node = st.sampled_from(NODES)
    session = st.sampled_from(SESSIONS[:3])
    xml = st.sampled_from(TIME_STANZAS)
    answer = st.builds(push_result, st.just(BOB), st.just(PUSH_JIDS[0]), node,
                       st.sampled_from((True, False, False)),
                       st.sampled_from(("cancel", "wait", "auth", None, "missing")))
    to_bob = st.builds(lambda e, x: {"event": e, "user": BOB, "stanza": x},
                       st.sampled_from(("message/offline/handle", "message/offline/handle",
                                        "message/bare/groupchat", "archive-message-added")),
                       xml).map(lambda e: e if e["event"] != "archive-message-added" else
                                {"event": e["event"], "for_user": BOB, "stanza": e["stanza"]})
    simple = st.builds(lambda e, s: {"event": e, "session": s},
                       st.sampled_from(("session-bind", "smacks-ack-received",
                                        "smacks-hibernation-end", "session-destroyed")), session)
    queues = st.builds(lambda e, s, q: {"event": e, "session": s, "queue": q},
                       st.sampled_from(("smacks-ack-delayed", "smacks-hibernation-start")),
                       session, st.lists(xml, max_size=2).map(unique_ids))
    queued = st.builds(lambda s, x: {"event": "stanza-queued", "session": s, "stanza": x},
                       session, xml)
    enable = st.builds(lambda s, n: {"event": "push-enable", "session": s,
                                     "jid": PUSH_JIDS[0], "node": n, "secret": "s3cret"},
                       session, node)
    remote = st.builds(lambda n: {"event": "push-remote-disable", "user": BOB,
                                  "jid": PUSH_JIDS[0], "node": n}, node)
    rare = st.one_of(
        st.one_of(remote, simple, simple),
        st.builds(lambda s, n: {"event": "push-disable", "session": s, "jid": PUSH_JIDS[0],
                                "node": n}, session, node),
        st.builds(lambda s, v: {"event": "csi-state", "session": s, "state": v}, session,
                  st.sampled_from(("active", "inactive"))))
    return st.one_of(simple, queues, queued, queued, answer, answer, answer, to_bob, to_bob,
                     to_bob, enable, rare, st.just({"event": "tick"}))


@st.composite
def time_heavy_traces(draw: st.DrawFn, max_size: int = 30) -> str:
    """A trace whose every event carries `at` (steps up to 10 s), mostly possible events."""
    states: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    for session, node in ((SESSIONS[0], NODES[0]), (SESSIONS[1], NODES[1])):
        states[session] = "active"
        items += [{"event": "session-bind", "session": session},
                  {"event": "push-enable", "session": session, "jid": PUSH_JIDS[0],
                   "node": node, "secret": "s3cret"}]
    for _ in range(draw(st.integers(min_value=1, max_value=max_size))):
        event = draw(time_heavy_events())
        chosen = steer(event, states, draw(st.integers(0, 19)) == 0)
        if chosen is None:
            chosen = {"event": "session-bind", "session": event["session"]}
            states[event["session"]] = "active"
        items.append(chosen)
    step = st.sampled_from((0, 0, 0.5, 1, 1, 2, 3, 5, 10))
    items = with_times(items, draw(st.lists(step, min_size=len(items), max_size=len(items))))
    return "".join(json.dumps(e) + "\n" for e in items)


def time_options() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({
        "max_errors": st.sampled_from(("1", "1", "2")),
        "burst_window": st.sampled_from(("0", "1", "2", "5")),
        "orphan_ttl": st.sampled_from(("0", "3", "10")),
        "retry_after": st.sampled_from(("0", "2", "5", "5")),
    }, optional={"max_devices": st.sampled_from(("1", "2", "5")),
                 "groupchat_default": st.sampled_from(("always", "on-mention", "never"))})
