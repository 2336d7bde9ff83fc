"""Progress of a long run on stderr: states so far, rate, and an ETA when the total is known.

An explorer calls ``Progress.update`` once per batch of states (compiled.py: per 32k-state
chunk), which prints at most every ``interval`` seconds, so reporting costs nothing measurable.
On a terminal one line is rewritten in place; elsewhere (``--progress`` into a file or a pipe)
each report is a line of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Throttled progress lines on ``stream``: ``update(done, total=None, detail="")``."""

    def __init__(self, stream: TextIO, what: str = "states", *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.what = what
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.25 if self.tty else 2.0)
        self.clock = clock
        self.started = clock()
        self._last = self.started
        self._shown = False

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write(self.line(done, total, detail, now - self.started))

    def line(self, done: int, total: int | None, detail: str, elapsed: float) -> str:
        """One report: ``done`` so far, their rate, and with a known ``total`` the share
        done and the time left at the rate so far."""
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{done:,} {self.what}" + (f" of {total:,}" if total else "")]
        if detail:
            parts.append(detail)
        parts.append(f"{rate:,.0f} {self.what}/s")
        if total and rate > 0:
            left = max(total - done, 0) / rate
            parts.append(f"{100 * done / total:.0f}%, ETA {_duration(left)}")
        parts.append(f"{_duration(elapsed)} so far")
        return ", ".join(parts)

    def close(self) -> None:
        """End the line rewritten in place (nothing to do elsewhere)."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
