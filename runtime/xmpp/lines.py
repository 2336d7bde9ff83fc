"""Input lines for the event loop without a thread handoff per line.

The sidecar read stdin in a thread and handed every line to the loop with
``run_coroutine_threadsafe`` (a future, a lock and a wake-up per line: ~20% of its CPU in the
profile). ``input_lines`` reads a pipe, socket or terminal on the loop itself
(``connect_read_pipe``), and a regular file (which epoll cannot watch) directly, a batch at a
time. Either way it gives the loop a turn at least every ``turn`` seconds (1 ms): a backlog of
buffered input must not starve the publishes that the lines already decided (a turn every 64
lines was measured to hold pushes back for seconds on a store at ~1k events/s).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from typing import BinaryIO

# The longest line, and half of what the pipe reader buffers ahead before it stops reading
# (StreamReader pauses at 2 x limit): backpressure reaches the writer at ~2 MiB, not 32.
LINE_LIMIT = 1024 * 1024
TURN = 0.001


def _watchable(stream: BinaryIO) -> bool:
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):  # no file descriptor (e.g. BytesIO)
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode)
                                                          and os.isatty(stream.fileno()))


async def input_lines(stream: BinaryIO, *, limit: int = LINE_LIMIT,
                      turn: float = TURN) -> AsyncIterator[bytes]:
    """Every line of ``stream`` (with its newline; the last may lack one) until its end. A line
    longer than ``limit`` raises ValueError (on a pipe; a file's lines are not limited)."""
    clock = time.monotonic
    if not _watchable(stream):
        last = clock()
        for line in stream:
            yield line
            if clock() - last >= turn:
                await asyncio.sleep(0)
                last = clock()
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), stream)
    try:
        last = clock()
        while line := await reader.readline():
            yield line
            if clock() - last >= turn:
                await asyncio.sleep(0)
                last = clock()
    finally:
        transport.close()
