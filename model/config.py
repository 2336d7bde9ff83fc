"""Options of the rules (the contract's ``--set name=value``) and their defaults."""

from __future__ import annotations

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
                                 "today a store that keeps the clock (Redis) fires it.")
    final_timeout_counts: bool = _option(True, "A push whose every send timed out (no answer "
                                               "at all) counts as an error (push-result with "
                                               "no error type); off: given up like a wait.")

    groupchat_default: str = _option("always", "Chat setting of a group chat the user has no "
                                               "setting for: always, on-mention or never.")

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
        if new.orphan_ttl < 0:
            raise ValueError("orphan_ttl must not be negative (0: never expire)")
        return new

    @classmethod
    def options_help(cls) -> str:
        """Every option and its default (for --help): ``max_errors (16), max_devices (5), ...``."""
        defaults = cls()
        return ", ".join(f"{f.name} ({getattr(defaults, f.name)!r})" for f in fields(cls))


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
    return raw
