"""Outcome lines on stdout without a write and a flush per push.

``json.dumps`` and ``flush()`` per outcome ran on the event loop for every push. ``OutcomeWriter``
keeps the lines of one loop iteration and writes and flushes them together at its end (a
``call_soon``): a reader still sees every outcome within the same iteration it was decided, and
``close()`` writes whatever is left. The JSON is the same: a reader cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TextIO

_encode = json.JSONEncoder().encode  # what json.dumps(obj) uses with default arguments


class OutcomeWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lines: list[str] = []
        self._scheduled = False

    def write(self, record: dict[str, Any]) -> None:
        """Queue one JSON line (``record``: an outcome's ``to_json()``)."""
        self._lines.append(_encode(record))
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()
                return
            self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    close = flush
