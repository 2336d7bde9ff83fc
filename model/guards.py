"""Named guards. Each is a pure predicate over the context; transitions refer to them by name."""

from __future__ import annotations

from collections.abc import Callable

from .context import Ctx
from .events import TRANSIENT_ERROR

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
