"""Named actions: the effects transitions run. Which action runs when is decided by the machines
(session.py, registration.py), never here; an action only carries it out, reaching other
machines by firing their events through the world."""

from __future__ import annotations

from collections.abc import Callable

from .chats import is_echo, setting_blocks
from .context import Ctx
from .records import (
    PROBE_READY,
    PROBE_SENT,
    PROBE_WAITING,
    Held,
    Push,
    RegistrationRecord,
    last_important,
)
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


@action("disable the user's registrations with that jid (and node, when given), and end the "
        "retrying of those disabled for counted errors",
        fires=("disable",))
def remove_registrations(ctx: Ctx) -> None:
    world, session, event = ctx.world, ctx.session, ctx.event
    assert session is not None
    matches = [
        r.key for r in world.registrations_of(session.user)
        if (r.state in ENABLED_STATES or r.probe is not None) and r.jid == event.jid
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
    reg.expire_at = None  # bound to a live session: its orphan TTL stops
    if reg.state not in ENABLED_STATES:
        _start_afresh(ctx, reg)
    holder = reg.session or reg.probe_session
    if holder is not None and holder != session.sid:
        other = world.session(holder)
        if other is not None and other.binding == reg.key:
            other.binding = None
            ctx.note(f"registration moved from session {holder}")
    reg.probe_session = None
    reg.session = session.sid


def _start_afresh(ctx: Ctx, reg: RegistrationRecord) -> None:
    """Enabled anew (after a disable, eviction or expiry): no calls, an empty burst window, no
    retry, and no dedup memory (a registration disabled to be retried kept it)."""
    reg.last_sent = None
    reg.probe = None
    reg.retry_at = None
    reg.pushed.clear()
    ctx.world.forget_calls_of(reg)


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


@action("forget the session this registration was bound to; its orphan TTL starts")
def release_session(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    reg.session = None
    _start_orphan_ttl(ctx, reg)


def _start_orphan_ttl(ctx: Ctx, reg: RegistrationRecord) -> None:
    world = ctx.world
    ttl = world.config.orphan_ttl
    if ttl:
        reg.expire_at = world.time + ttl
        world.schedule(reg, "expire")
        ctx.note(f"{reg.jid} {reg.node}: bound to no live session: expires at {reg.expire_at} "
                 f"unless enabled again (orphan_ttl={ttl}) [reg/expire]")


@action("record the client's disable (reason, time); unbind its session")
def disable_by_client(ctx: Ctx) -> None:
    _disable(ctx, "disable", "disabled by the client")


@action("record the disable after max_errors counted errors (reason, time); unbind its session, "
        "or with retry_after keep it for rule a's probes and start the wait")
def disable_for_errors(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    error_type = ctx.event.error_type or "none"
    reason = f"max_errors: {reg.errors} counted errors in a row, last {error_type}"
    retried = ctx.world.config.retry_after > 0
    _disable(ctx, "disable", reason, retried=retried)
    if retried:
        _wait_to_retry(ctx, reg)


def _wait_to_retry(ctx: Ctx, reg: RegistrationRecord) -> None:
    world = ctx.world
    reg.probe = PROBE_WAITING
    reg.retry_at = world.time + world.config.retry_after
    world.schedule(reg, "retry")
    ctx.note(f"{reg.jid} {reg.node}: retried at {reg.retry_at} (retry_after="
             f"{world.config.retry_after}) [reg/retry]")


@action("record the eviction beyond max_devices (reason, time); unbind its session")
def evict_registration(ctx: Ctx) -> None:
    _disable(ctx, "evict", f"evicted: more than max_devices={ctx.world.config.max_devices}")


@action("record the expiry after orphan_ttl seconds bound to no live session (reason expired, "
        "time)")
def disable_for_expiry(ctx: Ctx) -> None:
    _disable(ctx, "expire", f"expired: bound to no live session for orphan_ttl="
                            f"{ctx.world.config.orphan_ttl} s")


def _disable(ctx: Ctx, what: str, reason: str, retried: bool = False) -> None:
    """Disabled: its held pushes are discarded, its orphan TTL stops. ``retried`` (a disable
    for counted errors with retry_after on): the session it was bound to stays bound to it, and
    its dedup memory and calls stay, for the probes; otherwise they go now."""
    reg, world = ctx.reg, ctx.world
    assert reg is not None
    _discard_held(ctx, reg)
    reg.expire_at = None
    if retried:
        reg.probe_session, reg.session = reg.session or reg.probe_session, None
    else:
        _release_bound_session(ctx, reg)
        reg.pushed.clear()
        world.forget_calls_of(reg)
    reg.reason = reason
    reg.disabled_at = world.now()
    world.audit(reg, what, reason)
    ctx.note(f"{reg.jid} {reg.node}: {reason}")


def _release_bound_session(ctx: Ctx, reg: RegistrationRecord) -> None:
    """The session bound to it (or, while it is retried, the one it was bound to) holds it no
    more."""
    sid = reg.session or reg.probe_session
    if sid is not None:
        session = ctx.world.session(sid)
        if session is not None and session.binding == reg.key:
            session.binding = None
    reg.session = reg.probe_session = None


def _discard_held(ctx: Ctx, reg: RegistrationRecord) -> None:
    """Held pushes of a registration disabled before they come due are never pushed: their
    stanzas are not marked as pushed."""
    if not reg.held:
        return
    for held in reg.held:
        reg.pushed.pop(held.stanza.id or "", None)
    ctx.note(f"{reg.jid} {reg.node}: held {', '.join(str(h.stanza.id) for h in reg.held)} "
             f"discarded [burst/hold]")
    reg.held = ()
    reg.hold_until = None


@action("push the stanzas not yet pushed to this registration (dedup by stanza id) that the "
        "user's chat settings and the echo rule let through; remember the calls proposed; "
        "within burst_window of the last push sent to it (not urgent): hold them instead")
def send_push(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    fresh = _fresh(ctx, reg)
    if not fresh:
        return
    world = ctx.world
    window = world.config.burst_window
    if window and ctx.rule not in URGENT_RULES:
        last = reg.last_sent
        if last is not None and world.time < last + window:  # a push exactly at its end goes
            _hold(ctx, reg, fresh, last + window)
            return
    _emit(ctx, reg, fresh, ctx.rule)


def _fresh(ctx: Ctx, reg: RegistrationRecord) -> list[Stanza]:
    """The context's stanzas not yet pushed (or held) to the registration that the user's chat
    settings and the echo rule let through, in order, each id once; says why when none."""
    stanzas = ctx.stanzas
    if not stanzas:
        ctx.note(f"{reg.jid} {reg.node}: the queue is empty, nothing to push")
        return []
    pushed = reg.pushed
    fresh = []
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
    if not fresh and not held_back:
        ctx.note(f"{reg.jid} {reg.node}: every stanza was already pushed to it (dedup)")
    return fresh


def _hold(ctx: Ctx, reg: RegistrationRecord, fresh: list[Stanza], due: float) -> None:
    """burst_window: held until the window since the last push sent ends; dedup covers a held
    stanza (it is not held twice)."""
    for stanza in fresh:
        if stanza.id is not None:
            reg.pushed[stanza.id] = None
    reg.held += tuple(Held(stanza, ctx.rule) for stanza in fresh)
    if reg.hold_until is None:
        reg.hold_until = due
        ctx.world.schedule(reg, "flush")
    ctx.note(f"{reg.jid} {reg.node}: {', '.join(str(s.id) for s in fresh)} held until "
             f"{reg.hold_until}: a push went to it at {reg.last_sent}, within burst_window="
             f"{ctx.world.config.burst_window} [burst/hold]")


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


def _emit(ctx: Ctx, reg: RegistrationRecord, fresh: list[Stanza], rule: str) -> None:
    """Send one push for ``fresh`` by ``rule``: mark its stanzas pushed, remember the calls it
    proposed, and (burst_window) start the registration's window."""
    pushed = reg.pushed
    ids = tuple(stanza.id for stanza in fresh)
    for sid in ids:
        if sid is not None:
            pushed[sid] = None
    world = ctx.world
    while len(pushed) > world.config.dedup_window:
        del pushed[next(iter(pushed))]
    for stanza in fresh:
        if stanza.call == PROPOSE and stanza.call_id is not None:
            world.add_call_target(reg, stanza.call_id)  # rule e/call-end goes there
    window = world.config.burst_window
    if window:
        reg.last_sent = world.time  # every push sent counts for the window, urgent ones too
        if reg.held:  # an urgent push while others are held: their window starts again
            reg.hold_until = world.time + window
            world.schedule(reg, "flush")
            ctx.note(f"{reg.jid} {reg.node}: the held stanzas now come due at "
                     f"{reg.hold_until} [burst/hold]")
    loud = last_important(fresh)
    world.emit(Push(
        reg.user, reg.jid, reg.node, rule, ids, loud is not None,
        (loud or fresh[-1]).sender, None if loud is None else loud.body, reg.options,
        rule in URGENT_RULES, world.push_time(),
    ))


@action("burst_window: the window ended: send the held stanzas as one push, each only if the "
        "rules would still push it now (rule a: its session is not active; rule b: bound to "
        "no live session); a dropped one is not marked as pushed")
def send_held(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    held, reg.held, reg.hold_until = reg.held, (), None
    sent = []
    for each in held:
        why = _no_longer_pushed(ctx, reg, each.rule)
        if why is None:
            sent.append(each)
            continue
        reg.pushed.pop(each.stanza.id or "", None)
        ctx.note(f"{reg.jid} {reg.node}: held {each.stanza.id} dropped when due: {why} "
                 f"[burst/flush]")
    if sent:
        ctx.note(f"{reg.jid} {reg.node}: held {', '.join(str(h.stanza.id) for h in sent)} "
                 f"sent as one push [burst/flush]")
        _emit(ctx, reg, [h.stanza for h in sent], sent[0].rule)


def _no_longer_pushed(ctx: Ctx, reg: RegistrationRecord, rule: str) -> str | None:
    """Why the rules would not push a held stanza of ``rule`` now (None: they would)."""
    sid = reg.session
    if rule.startswith("a/") and sid is not None:
        session = ctx.world.session(sid)
        if session is not None and session.state == "active":
            return f"its session {sid} is active again (rule a)"
    if rule == "b/archive" and sid is not None:
        return f"bound to the live session {sid} (rule b)"
    return None


# --- v2: retrying a registration disabled for counted errors (retry_after) ---------------------

@action("retry_after has passed: the next stanza the rules would push to it is a probe")
def ready_to_probe(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    reg.probe, reg.retry_at = PROBE_READY, None
    ctx.note(f"{reg.jid} {reg.node}: ready to probe (retry_after="
             f"{ctx.world.config.retry_after}) [reg/retry]")


@action("push the first stanza the rules would push to it, were it enabled, once, as a probe "
        "(never held); nothing more until its push-result")
def send_probe(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    fresh = _fresh(ctx, reg)
    if not fresh:
        return
    reg.probe = PROBE_SENT
    ctx.note(f"{reg.jid} {reg.node}: {fresh[0].id} pushed as a probe [reg/probe]")
    _emit(ctx, reg, fresh[:1], ctx.rule)


@action("a wait error for the probe: still probing (the next stanza is again a probe)")
def probe_again(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    reg.probe = PROBE_READY
    ctx.note(f"{reg.jid} {reg.node}: wait: the next stanza is again a probe [reg/retry]")


@action("a counted error for the probe: disabled again (bound to no session now, so no probe by "
        "rule a), the wait starts over")
def retry_later(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    _release_bound_session(ctx, reg)
    reg.reason = f"probe failed: {ctx.event.error_type or 'none'}"
    reg.disabled_at = ctx.world.now()
    ctx.world.audit(reg, "disable", reg.reason)
    _wait_to_retry(ctx, reg)


@action("the probe succeeded: enabled again, bound to no session (its orphan TTL starts), no "
        "errors, no calls, an empty burst window, dedup memory kept, most recently enabled "
        "(evict beyond max_devices)", fires=("evict",))
def enable_after_probe(ctx: Ctx) -> None:
    reg, world = ctx.reg, ctx.world
    assert reg is not None
    _release_bound_session(ctx, reg)
    reg.probe = reg.retry_at = None
    reg.errors = 0
    reg.reason = reg.disabled_at = reg.last_sent = None
    reg.seq = world.next_seq()
    world.forget_calls_of(reg)
    world.audit(reg, "enable", "the probe succeeded")
    ctx.note(f"{reg.jid} {reg.node}: the probe succeeded: enabled again [reg/retry]")
    _start_orphan_ttl(ctx, reg)
    enabled = [r for r in world.registrations_of(reg.user)
               if r.state in ENABLED_STATES and r is not reg]
    excess = len(enabled) + 1 - world.config.max_devices
    if excess > 0:
        for other in sorted(enabled, key=lambda r: r.seq)[:excess]:
            world.fire_registration(other.key, "evict", ctx)


@action("the session it was bound to is gone or holds another registration: no probe by rule a")
def release_probe_session(ctx: Ctx) -> None:
    reg = ctx.reg
    assert reg is not None
    reg.probe_session = None


@action("the push service revoked the node while it was retried: probing ends (reason remote)")
def end_probing(ctx: Ctx) -> None:
    _end_probing(ctx, "remote: the push service revoked the node (XEP-0357 section 8)")


@action("the client disabled it while it was retried: probing ends (reason client)")
def end_probing_by_client(ctx: Ctx) -> None:
    _end_probing(ctx, "disabled by the client")


def _end_probing(ctx: Ctx, reason: str) -> None:
    """No longer retried: as any other disable, no session, dedup memory or calls are kept."""
    reg = ctx.reg
    assert reg is not None
    reg.probe = reg.retry_at = None
    _release_bound_session(ctx, reg)
    reg.pushed.clear()
    ctx.world.forget_calls_of(reg)
    reg.reason = reason
    ctx.world.audit(reg, "disable", reason)
    ctx.note(f"{reg.jid} {reg.node}: {reason}: no longer retried [reg/retry]")


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
