"""Input lines on the loop (runtime/xmpp/lines.py): a real pipe, a regular file, /dev/null;
every line in order, and the loop gets turns while a backlog is read."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from pushrules.runtime.xmpp.lines import input_lines

LINES = [f'{{"event": "session-bind", "session": "u{i}@x/r"}}\n'.encode() for i in range(500)]


async def collect(stream, **kwargs) -> list[bytes]:
    return [line async for line in input_lines(stream, **kwargs)]


def test_a_pipe_written_by_another_thread():
    read_fd, write_fd = os.pipe()

    def writer():
        with os.fdopen(write_fd, "wb") as out:
            for line in LINES:
                out.write(line)
            out.write(b"last line without newline")

    threading.Thread(target=writer).start()
    with os.fdopen(read_fd, "rb") as stream:
        got = asyncio.run(collect(stream))
    assert got == [*LINES, b"last line without newline"]


def test_a_regular_file_and_dev_null(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(LINES))
    with path.open("rb") as stream:
        assert asyncio.run(collect(stream)) == LINES
    with open(os.devnull, "rb") as stream:
        assert asyncio.run(collect(stream)) == []


@pytest.mark.parametrize("kind", ["pipe", "file"])
def test_a_backlog_gives_the_loop_turns(tmp_path, kind):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(LINES))

    async def main(stream) -> list[int]:
        turns = 0
        seen: list[int] = []

        async def other_task():
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        async for _line in input_lines(stream, turn=0.0005):
            seen.append(turns)
            time.sleep(0.0002)  # applying a line takes a while
        task.cancel()
        return seen

    if kind == "file":
        with path.open("rb") as stream:
            seen = asyncio.run(main(stream))
    else:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"".join(LINES[:100]))  # all buffered before reading starts
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as stream:
            seen = asyncio.run(main(stream))
    # other work ran between batches, not only when the input was exhausted
    assert len(set(seen)) >= len(seen) // 5


def test_a_line_over_the_limit_on_a_pipe_is_an_error():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"x" * 5000 + b"\n")
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream, pytest.raises(ValueError):
        asyncio.run(collect(stream, limit=1024))
