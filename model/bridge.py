"""Expose the named guards and actions as python-statemachine callbacks.

psm resolves callback names on the machine; each one here takes the ``ctx`` keyword that the
reference world passes with every event, so psm and the generated runtime run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .actions import ACTIONS
from .guards import GUARDS


def _method(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    def callback(self: Any, ctx: Any) -> Any:
        return fn(ctx)

    callback.__name__ = fn.__name__
    return callback


Callbacks: type = type(
    "Callbacks", (), {name: _method(fn) for name, fn in {**GUARDS, **ACTIONS}.items()}
)
