"""Random but reproducible event sequences, and how to compare engines' outcomes and state."""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable
from typing import Any

from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.model.stanza import parse_stanza
from pushrules.model.world import ImpossibleEvent, WorldBase
from pushrules.runtime.store.base import Store, registration_row, session_row

CONFIG = Config(max_errors=3, max_devices=3, dedup_window=8)
USERS = ("bob@example.org", "ann@example.org")
BOB = "bob@example.org"
PUSH = "push.example.net"
ERROR_TYPES = (None, "wait", "cancel", "auth")


class Clock:
    """Time moves only when the test says so: both engines see the same times."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def stanza(sid: str | None, to: str, body: str | None = "hi"):
    ident = "" if sid is None else f" id='{sid}'"
    inner = "" if body is None else f"<body>{body}</body>"
    return parse_stanza(f"<message xmlns='jabber:client'{ident} from='eve@example.org/x' "
                        f"to='{to}' type='chat'>{inner}</message>")


def random_events(seed: int, count: int, users: tuple[str, ...] = ("bob@example.org",),
                  nodes: int = 5) -> list[Any]:
    rnd = random.Random(seed)
    ev = EV

    def msg(user: str):
        ident = rnd.choice([None, *(f"m{i}" for i in range(12))])
        to = user if rnd.random() < 0.8 else "eve@example.org"
        return stanza(ident, to, rnd.choice(["hi", None]))

    out: list[Any] = []
    for _ in range(count):
        user = rnd.choice(users)
        session = f"{user}/r{rnd.randrange(3)}"
        jid, node = "push.example.net", f"n{rnd.randrange(nodes)}"
        kind = rnd.choices(
            ["session-bind", "push-enable", "push-disable", "smacks-ack-delayed",
             "smacks-ack-received", "smacks-hibernation-start", "smacks-hibernation-end",
             "stanza-queued", "session-destroyed", "archive-message-added",
             "message/offline/handle", "push-result"],
            weights=[4, 4, 1, 2, 2, 2, 2, 3, 2, 3, 3, 5])[0]
        cls = ev[kind]
        if kind == "push-enable":
            out.append(cls(session, jid, node, secret=f"s3cret-{node}"))
        elif kind == "push-disable":
            out.append(cls(session, jid, rnd.choice([node, None])))
        elif kind in ("smacks-ack-delayed", "smacks-hibernation-start"):
            out.append(cls(session, tuple(msg(user) for _ in range(rnd.randrange(3)))))
        elif kind == "stanza-queued":
            out.append(cls(session, msg(user)))
        elif kind in ("archive-message-added", "message/offline/handle"):
            out.append(cls(user, msg(user)))
        elif kind == "push-result":
            ok = rnd.random() < 0.3
            out.append(cls(user, jid, node, ok, None if ok else rnd.choice(ERROR_TYPES)))
        else:
            out.append(cls(session))
    return out


def outcome(engine: WorldBase, event: Any) -> Any:
    try:
        return [push.to_json() for push in engine.handle(event)]
    except ImpossibleEvent as exc:
        return f"impossible: {exc}"


def _normalised(regs: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    # Enable order is per user in a store and global in the plain engine: compare ranks.
    order = {key: rank for rank, key in enumerate(sorted(regs, key=lambda k: regs[k]["seq"]))}
    return {key: {**row, "seq": order[key]} for key, row in regs.items()}


def engine_state(engine: WorldBase, user: str) -> dict[str, Any]:
    sessions = {sid: session_row(rec) for sid, rec in engine.sessions.items()
                if rec.user == user}
    regs = {key: registration_row(rec) for key, rec in engine.users.get(user, {}).items()}
    audit = [(a.time, a.jid, a.node, a.action, a.reason) for a in engine.audit_log
             if a.user == user]
    return {"sessions": sessions, "registrations": _normalised(regs), "audit": audit,
            "facts": engine.user_facts(user)}


def store_state(store: Store, user: str) -> dict[str, Any]:
    snap = store.load(user)
    audit = [(a.time, a.jid, a.node, a.action, a.reason) for a in store.audit_trail(user)]
    return {"sessions": snap.sessions, "registrations": _normalised(snap.registrations),
            "audit": audit, "facts": snap.facts}


def race_processes(target: Callable[..., None], args: list[tuple[Any, ...]],
                   timeout: float = 180) -> list[Any]:
    """Fork one process per ``args`` running ``target(*args, start, results)``, release them
    together (``start``), and return what each put on ``results``; each must exit 0."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*each, start, results)) for each in args]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return outcomes


def setup_orphans(engine: Any, nodes: range, user: str = BOB) -> None:
    """bob (or ``user``) enables each node from its own session, then every session ends: all
    orphaned."""
    for n in nodes:
        session = f"{user}/s{n}"
        engine.handle(EV["session-bind"](session))
        engine.handle(EV["push-enable"](session, PUSH, f"n{n}", secret="hunter2"))
        engine.handle(EV["session-destroyed"](session))


def race_events(node: int, count: int, user: str = BOB) -> list[Any]:
    """One node's share: shared stanza ids (both nodes see the same messages), counted errors,
    and its own session going through hibernation."""
    session = f"{user}/node{node}"
    events: list[Any] = [EV["session-bind"](session),
                         EV["push-enable"](session, PUSH, f"live{node}", secret="x")]
    for i in range(count):
        kind = i % 6
        if kind == 0:
            events.append(EV["message/offline/handle"](user, stanza(f"m{i // 2}", user)))
        elif kind == 1:
            events.append(EV["archive-message-added"](user, stanza(f"a{i // 3}", user)))
        elif kind == 2:
            events.append(EV["push-result"](user, PUSH, f"n{i % 3}", False, "cancel"))
        elif kind == 3:
            events.append(EV["smacks-hibernation-start"](session, (stanza(f"q{i}", user),)))
        elif kind == 4:
            events.append(EV["stanza-queued"](session, stanza(f"m{i // 2}", user)))
        else:
            events.append(EV["smacks-hibernation-end"](session))
    return events
