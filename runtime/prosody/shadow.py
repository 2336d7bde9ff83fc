"""Shadow mode: pushrules decides on the same events while mod_cloud_notify keeps sending, and
every stanza where the two differ is logged, so an operator can compare before switching.

Both sides are keyed by (user, app server, node, stanza id). mod_cloud_notify pushes up to a
second after the event (its batch timer) and pushrules as soon as it decides, so each key waits
``window`` seconds for the other side before it is judged. Stanzas without an id cannot be
compared and are counted apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pushrules.model.records import Push

log = logging.getLogger("pushrules.shadow")

Key = tuple[str, str, str, str]


@dataclass
class _Seen:
    since: float
    rule: str | None = None
    important: bool | None = None
    sent: int = 0
    sent_important: bool | None = None


class ShadowLog:
    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 report: Callable[[str], None] | None = None) -> None:
        self.window = window
        self.clock = clock
        self.report = report or (lambda text: log.warning("%s", text))
        self.same = 0
        self.differs = 0
        self.without_id = 0
        self._seen: dict[Key, _Seen] = {}

    def decided(self, push: Push) -> None:
        for stanza in push.stanzas:
            if stanza is None:
                self.without_id += 1
                continue
            seen = self._entry((push.user, push.jid, push.node, stanza))
            seen.rule = seen.rule or push.rule
            seen.important = bool(seen.important) or push.important

    def observed(self, message: dict[str, Any]) -> None:
        """One push mod_cloud_notify sent (the module's ``observed`` line)."""
        stanza = message.get("stanza")
        if not isinstance(stanza, str):
            self.without_id += 1
            return
        key = (str(message.get("user")), str(message.get("jid")), str(message.get("node") or ""),
               stanza)
        seen = self._entry(key)
        seen.sent += 1
        seen.sent_important = bool(seen.sent_important) or message.get("important") is True

    def sweep(self, everything: bool = False) -> None:
        """Judge every key whose window is over (all of them with ``everything``)."""
        now = self.clock()
        for key, seen in list(self._seen.items()):
            if everything or now - seen.since >= self.window:
                del self._seen[key]
                self._judge(key, seen)

    def flush(self) -> None:
        self.sweep(everything=True)
        if self.same or self.differs or self.without_id:
            log.info("shadow: %d stanza pushes agree, %d differ, %d without id not compared",
                     self.same, self.differs, self.without_id)

    def _entry(self, key: Key) -> _Seen:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(since=self.clock())
        return seen

    def _judge(self, key: Key, seen: _Seen) -> None:
        user, jid, node, stanza = key
        where = f"stanza {stanza} for {user} to {jid} node {node}"
        if seen.rule is not None and seen.sent == 0:
            text = (f"pushrules pushes it ({seen.rule}, {_importance(seen.important)}); "
                    "mod_cloud_notify did not")
        elif seen.rule is None:
            text = (f"mod_cloud_notify pushed it {_times(seen.sent)} "
                    f"({_importance(seen.sent_important)}); pushrules does not")
        elif seen.sent > 1:
            text = (f"mod_cloud_notify pushed it {_times(seen.sent)}; pushrules once "
                    f"({seen.rule})")
        elif seen.important != seen.sent_important:
            text = (f"pushrules pushes it {_importance(seen.important)} ({seen.rule}); "
                    f"mod_cloud_notify {_importance(seen.sent_important)}")
        else:
            self.same += 1
            return
        self.differs += 1
        self.report(f"shadow: differs: {where}: {text}")


def _importance(important: bool | None) -> str:
    return "important" if important else "unimportant"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
