"""Options of the rules (the contract's ``--set name=value``) and their defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .events import NOTIFY_SETTINGS


def _option(default: Any, doc: str) -> Any:
    """A Config field with its documentation (a field's docstring is not kept at run time)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class Config:
    """The rule options; each field's ``doc`` is what --help, the README and generated/rules.md
    say about it."""

    max_errors: int = _option(16, "Counted (non-`wait`) errors in a row that disable a "
                                  "registration.")
    max_devices: int = _option(5, "Registrations per user; enabling one more evicts the least "
                                  "recently enabled.")
    include_body: bool = _option(False, "Put the real message body into the push summary.")
    include_sender: bool = _option(False, "Put the sender's JID into the push summary.")
    important_body: str = _option("New Message!", "Placeholder body that marks a push as "
                                                  "important when include_body is off.")
    dedup_window: int = _option(4096, "Stanza ids remembered per registration for "
                                      "deduplication (oldest forgotten first).")
    orphan_ttl: int = _option(0, "Seconds a registration may stay bound to no live session "
                                 "before it is disabled with the reason expired (0: never); "
                                 "the clock is the events' `at` (v2; whole seconds, as a store's "
                                 "key TTL takes them).")
    final_timeout_counts: bool = _option(True, "A push whose every send timed out (no answer "
                                               "at all) counts as an error (push-result with "
                                               "no error type); off: given up like a wait.")

    groupchat_default: str = _option("always", "Chat setting of a group chat the user has no "
                                               "setting for: always, on-mention or never.")
    burst_window: float = _option(0.0, "Seconds after a push to a registration during which "
                                       "further pushes to it are held, then sent as one when "
                                       "the window ends (0: off; urgent pushes never held).")
    retry_after: float = _option(0.0, "Seconds after a disable for counted errors before the "
                                      "next stanza is pushed to it once as a probe (0: never).")

    @classmethod
    def option_docs(cls) -> list[tuple[str, object, str]]:
        """(name, default, meaning) of every option, in order."""
        defaults = cls()
        return [(f.name, getattr(defaults, f.name), f.metadata["doc"]) for f in fields(cls)]

    def with_settings(self, settings: dict[str, str]) -> Config:
        """Apply ``name=value`` strings; raise ValueError naming the bad option or value."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in settings.items():
            if name not in known:
                raise ValueError(f"unknown option {name!r} (known: {', '.join(sorted(known))})")
            kind = type(getattr(self, name))
            changes[name] = _parse(name, raw, kind)
        new = replace(self, **changes)
        if new.max_errors < 1 or new.max_devices < 1 or new.dedup_window < 1:
            raise ValueError("max_errors, max_devices and dedup_window must be at least 1")
        if new.groupchat_default not in NOTIFY_SETTINGS:
            raise ValueError(f"option groupchat_default: {new.groupchat_default!r} is not one "
                             f"of {', '.join(NOTIFY_SETTINGS)}")
        for name in TIME_OPTIONS:
            if getattr(new, name) < 0:
                raise ValueError(f"option {name} must not be negative (seconds; 0: off), got "
                                 f"{getattr(new, name)!r}")
        return new

    @property
    def timed(self) -> bool:
        """Some time-based rule is on (a world must then run its clock's due queue)."""
        return bool(self.burst_window or self.orphan_ttl or self.retry_after)

    @classmethod
    def options_help(cls) -> str:
        """Every option and its default (for --help): ``max_errors (16), max_devices (5), ...``."""
        defaults = cls()
        return ", ".join(f"{f.name} ({getattr(defaults, f.name)!r})" for f in fields(cls))


TIME_OPTIONS = ("burst_window", "orphan_ttl", "retry_after")
"""The time-based rules' options (contract v2): seconds, 0 is off."""


def _parse(name: str, raw: str, kind: type) -> object:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {name}: {raw!r} is not a boolean (true/false)")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"option {name}: {raw!r} is not an integer") from None
    if kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"option {name}: {raw!r} is not a number of seconds") from None
        if not math.isfinite(value):
            raise ValueError(f"option {name}: {raw!r} is not a finite number of seconds")
        # Whole seconds stay an int, so a due time computed from an integer `at` is printed
        # as the trace wrote its times (18, not 18.0).
        return int(value) if value.is_integer() else value
    return raw
