"""Named guards. Each is a pure predicate over the context; transitions refer to them by name."""

from __future__ import annotations

from collections.abc import Callable

from .context import Ctx
from .events import TRANSIENT_ERROR
from .records import CSI_ACTIVE, PROBE_READY, PROBE_SENT
from .stanza import CALL_END

Guard = Callable[[Ctx], bool]
GUARDS: dict[str, Guard] = {}
GUARD_DOCS: dict[str, str] = {}


def guard(doc: str) -> Callable[[Guard], Guard]:
    def register(fn: Guard) -> Guard:
        GUARDS[fn.__name__] = fn
        GUARD_DOCS[fn.__name__] = doc
        return fn

    return register


@guard("a push registration is bound to this session")
def bound(ctx: Ctx) -> bool:
    return ctx.session.binding is not None  # type: ignore[union-attr]


@guard("the app server answered with a result")
def result_ok(ctx: Ctx) -> bool:
    return bool(ctx.event.ok)


@guard("the app server answered with a `wait` error (transient, never counted)")
def result_wait(ctx: Ctx) -> bool:
    return not ctx.event.ok and ctx.event.error_type == TRANSIENT_ERROR


@guard("the app server answered with an error other than `wait` (counted)")
def counted_error(ctx: Ctx) -> bool:
    return not ctx.event.ok and ctx.event.error_type != TRANSIENT_ERROR


@guard("one more counted error stays below max_errors")
def below_max_errors(ctx: Ctx) -> bool:
    return ctx.reg.errors + 1 < ctx.world.config.max_errors  # type: ignore[union-attr]


@guard("the archived stanza is addressed to the archive owner (not an outgoing copy)")
def addressed_to_user(ctx: Ctx) -> bool:
    return ctx.stanzas[0].to_bare == ctx.reg.user  # type: ignore[union-attr]


# --- v2: calls (rule e) ------------------------------------------------------------------------

@guard("the registration is bound to a session that is active and CSI-active: the open app "
       "rings the call itself")
def ringing_app(ctx: Ctx) -> bool:
    sid = ctx.reg.session  # type: ignore[union-attr]
    session = None if sid is None else ctx.world.session(sid)
    return session is not None and session.state == "active" and session.csi == CSI_ACTIVE


@guard("the stanza was queued to the session this registration is bound to, which is "
       "ack-delayed or hibernated: it is in the smacks queue rule (a) pushes")
def in_pushed_queue(ctx: Ctx) -> bool:
    sid = ctx.reg.session  # type: ignore[union-attr]
    if sid is None or getattr(ctx.event, "session", None) != sid:
        return False
    session = ctx.world.session(sid)
    return session is not None and session.state in ("ack_delayed", "hibernated")


@guard("the stanza is an archived copy not addressed to the archive owner (outgoing)")
def outgoing_copy(ctx: Ctx) -> bool:
    return ctx.event.EVENT == "archive-message-added" \
        and ctx.stanzas[0].to_bare != ctx.reg.user  # type: ignore[union-attr]


@guard("the proposal of this call was pushed to this registration")
def call_pushed_here(ctx: Ctx) -> bool:
    reg, call_id = ctx.reg, ctx.stanzas[0].call_id
    assert reg is not None
    return call_id is not None and (reg.jid, reg.node) in ctx.world.call_targets(reg.user,
                                                                                call_id)


@guard("the stanza ends a call (XEP-0353 retract or reject): rule e decides where it goes")
def ends_call(ctx: Ctx) -> bool:
    return ctx.event.stanza.call == CALL_END  # type: ignore[no-any-return]


# --- v2: time-based rules (retry_after) --------------------------------------------------------

@guard("retry_after has passed since the disable for counted errors: the next stanza is a probe")
def probe_ready(ctx: Ctx) -> bool:
    return ctx.reg.probe == PROBE_READY  # type: ignore[union-attr]


@guard("a probe was sent: its push-result decides (success enables it again)")
def probe_sent(ctx: Ctx) -> bool:
    return ctx.reg.probe == PROBE_SENT  # type: ignore[union-attr]


@guard("disabled for counted errors and retried (waiting, ready to probe or probe sent)")
def probing(ctx: Ctx) -> bool:
    return ctx.reg.probe is not None  # type: ignore[union-attr]


TIME_GUARDS = frozenset({"probe_ready", "probe_sent", "probing"})
"""Guards only the time-based rules make matter (retry_after)."""

V2_GUARDS = frozenset({"ringing_app", "in_pushed_queue", "outgoing_copy", "call_pushed_here",
                       "ends_call"}) | TIME_GUARDS
"""Guards only version-2 stanzas or events can make matter (calls, time): a bound without v2
events cannot tell a mutant that drops one from the model."""
