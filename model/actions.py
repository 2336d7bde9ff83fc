"""Named actions: the effects transitions run. Which action runs when is decided by the machines
(session.py, registration.py), never here; an action only carries it out, reaching other
machines by firing their events through the world."""

from __future__ import annotations

from collections.abc import Callable

from .chats import is_echo, setting_blocks
from .context import Ctx
from .records import Push, RegistrationRecord, last_important
from .rules import URGENT_RULES
from .stanza import PROPOSE, Stanza

CALL_RULES = frozenset({"e/call", "e/call-end"})
"""Rules that ignore chat settings (not the echo rule)."""

Action = Callable[[Ctx], None]
ACTIONS: dict[str, Action] = {}
ACTION_DOCS: dict[str, str] = {}
ACTION_FIRES: dict[str, tuple[str, ...]] = {}
"""The registration events each action fires (the writes from one machine into the other):
declared so the diagrams can name the contract event behind every registration edge; a test
checks that actions fire nothing else."""

ENABLED_STATES = frozenset({"bound", "orphaned"})
"""Registration states that count towards max_devices and can be disabled or evicted."""


def action(doc: str, fires: tuple[str, ...] = ()) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        ACTIONS[fn.__name__] = fn
        ACTION_DOCS[fn.__name__] = doc
        ACTION_FIRES[fn.__name__] = fires
        return fn

    return register


# --- session machine -------------------------------------------------------------------------

@action("enable the registration (user, jid, node), bind it here, unbind the one this session "
        "held before, evict beyond max_devices", fires=("enable", "unbind", "evict"))
def bind_registration(ctx: Ctx) -> None:
    world, session, event = ctx.world, ctx.session, ctx.event
    assert session is not None
    key = (session.user, event.jid, event.node)
    previous = session.binding
    world.fire_registration(key, "enable", ctx)
    session.binding = key
    if previous is not None and previous != key:
        world.fire_registration(previous, "unbind", ctx)
    enabled = [r for r in world.registrations_of(session.user) if r.state in ENABLED_STATES]
    excess = len(enabled) - world.config.max_devices
    if excess > 0:
        for reg in sorted(enabled, key=lambda r: r.seq)[:excess]:
            world.fire_registration(reg.key, "evict", ctx)


@action("disable the user's registrations with that jid (and node, when given)",
        fires=("disable",))
def remove_registrations(ctx: Ctx) -> None:
    world, session, event = ctx.world, ctx.session, ctx.event
    assert session is not None
    matches = [
        r.key for r in world.registrations_of(session.user)
        if r.state in ENABLED_STATES and r.jid == event.jid
        and (event.node is None or r.node == event.node)
    ]
    if not matches:
        ctx.note("no enabled registration matches: nothing removed")
    for key in matches:
        world.fire_registration(key, "disable", ctx)


@action("push the unacked queue to the bound registration", fires=("push_session",))
def push_queue(ctx: Ctx) -> None:
    _push_bound(ctx, tuple(ctx.event.queue))


@action("push this stanza to the bound registration", fires=("push_session",))
def push_stanza(ctx: Ctx) -> None:
    _push_bound(ctx, (ctx.event.stanza,))


def _push_bound(ctx: Ctx, stanzas: tuple[Stanza, ...]) -> None:
    session = ctx.session
    assert session is not None and session.binding is not None
    ctx.stanzas = stanzas
    ctx.world.fire_registration(session.binding, "push_session", ctx)


@action("leave the bound registration stored, bound to no live session", fires=("unbind",))
def orphan_registration(ctx: Ctx) -> None:
    session = ctx.session
    assert session is not None and session.binding is not None
    key, session.binding = session.binding, None
    ctx.world.fire_registration(key, "unbind", ctx)


# --- registration machine --------------------------------------------------------------------

@action("store jid, node and publish-options; bind to the enabling session, taking it from "
        "any other session; most recently enabled")
def store_registration(ctx: Ctx) -> None:
    reg, session, event, world = ctx.reg, ctx.session, ctx.event, ctx.world
    assert reg is not None and session is not None
    options = dict(getattr(event, "publish_options", None) or {})
    if getattr(event, "secret", None) is not None:
        options["secret"] = event.secret
    reg.options = options
    reg.seq = world.next_seq()
    reg.reason = None
    reg.disabled_at = None
    if reg.session is not None and reg.session != session.sid:
        other = world.session(reg.session)
        if other is not None and other.binding == reg.key:
            other.binding = None
            ctx.note(f"registration moved from session {reg.session}")
    reg.session = session.sid


@action("reset the counted errors to 0")
def reset_errors(ctx: Ctx) -> None:
    ctx.reg.errors = 0  # type: ignore[union-attr]


@action("count one error")
def count_error(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    reg.errors += 1
    ctx.note(f"{reg.jid} {reg.node}: {reg.errors} counted error(s) in a row "
             f"(max_errors={ctx.world.config.max_errors})")


@action("forget the session this registration was bound to")
def release_session(ctx: Ctx) -> None:
    ctx.reg.session = None  # type: ignore[union-attr]


@action("record the client's disable (reason, time); unbind its session")
def disable_by_client(ctx: Ctx) -> None:
    _disable(ctx, "disable", "disabled by the client")


@action("record the disable after max_errors counted errors (reason, time); unbind its session")
def disable_for_errors(ctx: Ctx) -> None:
    assert ctx.reg is not None
    error_type = ctx.event.error_type or "none"
    reason = f"max_errors: {ctx.reg.errors} counted errors in a row, last {error_type}"
    _disable(ctx, "disable", reason)


@action("record the eviction beyond max_devices (reason, time); unbind its session")
def evict_registration(ctx: Ctx) -> None:
    _disable(ctx, "evict", f"evicted: more than max_devices={ctx.world.config.max_devices}")


@action("record the expiry after orphan_ttl seconds bound to no live session (reason expired, "
        "time)")
def disable_for_expiry(ctx: Ctx) -> None:
    _disable(ctx, "expire", f"expired: bound to no live session for orphan_ttl="
                            f"{ctx.world.config.orphan_ttl} s")


def _disable(ctx: Ctx, what: str, reason: str) -> None:
    reg, world = ctx.reg, ctx.world
    assert reg is not None
    if reg.session is not None:
        session = world.session(reg.session)
        if session is not None and session.binding == reg.key:
            session.binding = None
        reg.session = None
    reg.reason = reason
    reg.disabled_at = world.now()
    reg.pushed.clear()
    world.forget_calls_of(reg)
    world.audit(reg, what, reason)
    ctx.note(f"{reg.jid} {reg.node}: {reason}")


@action("push the stanzas not yet pushed to this registration (dedup by stanza id) that the "
        "user's chat settings and the echo rule let through; remember the calls proposed")
def send_push(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    stanzas = ctx.stanzas
    if not stanzas:
        ctx.note(f"{reg.jid} {reg.node}: the queue is empty, nothing to push")
        return
    pushed = reg.pushed
    fresh = []
    ids = []
    seen: set[str] = set()  # ids of this push: a queue holding one id twice pushes it once
    held_back = False
    for stanza in stanzas:
        sid = stanza.id
        if sid is not None and (sid in pushed or sid in seen):
            continue
        if _held_back(ctx, reg, stanza):
            held_back = True  # not pushed because of a setting: not marked as pushed either
            continue
        if sid is not None:
            seen.add(sid)
        fresh.append(stanza)
        ids.append(sid)
    if not fresh:
        if not held_back:
            ctx.note(f"{reg.jid} {reg.node}: every stanza was already pushed to it (dedup)")
        return
    _emit(ctx, reg, fresh, ids)


def _held_back(ctx: Ctx, reg: RegistrationRecord, stanza: Stanza) -> bool:
    """The echo rule and the chat setting (v2, model/chats.py); says why in --explain."""
    chat = stanza.chat
    world = ctx.world
    setting = None if chat is None else world.chat_setting(reg.user, chat)
    if is_echo(stanza, setting):
        ctx.note(f"{reg.jid} {reg.node}: {stanza.id} is the room's echo of {reg.user}'s own "
                 f"message (from {stanza.sender}): never pushed [chat/echo]")
        return True
    if ctx.rule in CALL_RULES:
        return False  # calls ignore chat settings
    why = setting_blocks(stanza, reg.user, setting, world.config.groupchat_default)
    if why is None:
        return False
    ctx.note(f"{reg.jid} {reg.node}: {stanza.id} from {chat} not pushed: {why} [chat/settings]")
    return True


def _emit(ctx: Ctx, reg: RegistrationRecord, fresh: list[Stanza], ids: list[str | None]) -> None:
    pushed = reg.pushed
    for sid in ids:
        if sid is not None:
            pushed[sid] = None
    world = ctx.world
    window = world.config.dedup_window
    while len(pushed) > window:
        del pushed[next(iter(pushed))]
    for stanza in fresh:
        if stanza.call == PROPOSE and stanza.call_id is not None:
            world.add_call_target(reg, stanza.call_id)  # rule e/call-end goes there
    loud = last_important(fresh)
    world.emit(Push(
        reg.user, reg.jid, reg.node, ctx.rule, tuple(ids), loud is not None,
        (loud or fresh[-1]).sender, None if loud is None else loud.body, reg.options,
        ctx.rule in URGENT_RULES, world.push_time(),
    ))


@action("record the client state (XEP-0352) the session indicated")
def set_csi(ctx: Ctx) -> None:
    session = ctx.session
    assert session is not None
    session.csi = ctx.event.state


@action("record the push service's revocation (reason remote, time); unbind its session")
def disable_remotely(ctx: Ctx) -> None:
    _disable(ctx, "disable", "remote: the push service revoked the node (XEP-0357 section 8)")


def describe(reg: RegistrationRecord) -> str:
    return f"{reg.jid} {reg.node}"
