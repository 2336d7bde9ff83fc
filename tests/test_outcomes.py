"""Outcome lines written together (runtime/xmpp/outcomes.py): at the end of the loop iteration,
at most every ``every`` seconds; the same JSON lines as one json.dumps per outcome, in order, none
lost at close."""

from __future__ import annotations

import asyncio
import io
import json

from pushrules.runtime.xmpp.outcomes import OutcomeWriter


class CountingOut(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


RECORDS = [{"user": "a@x", "node": f"n{i}", "stanzas": [f"m{i}"], "status": "delivered",
            "important": i % 2 == 0, "answer": "r\u00e9sult \"q\""} for i in range(5)]


def test_one_iteration_is_one_write_and_the_lines_are_json_dumps():
    out = CountingOut()

    async def main():
        writer = OutcomeWriter(out, every=0)
        for record in RECORDS[:3]:
            writer.write(record)
        assert out.getvalue() == ""  # not yet: at the end of this iteration
        await asyncio.sleep(0)
        assert out.flushes == 1
        writer.write(RECORDS[3])
        await asyncio.sleep(0)
        writer.write(RECORDS[4])
        writer.close()  # what is left goes out at close

    asyncio.run(main())
    assert out.getvalue() == "".join(json.dumps(r) + "\n" for r in RECORDS)
    assert out.flushes == 3


def test_without_a_loop_each_line_is_written_at_once():
    out = CountingOut()
    OutcomeWriter(out).write(RECORDS[0])
    assert out.getvalue() == json.dumps(RECORDS[0]) + "\n"


def test_writes_closer_than_every_are_one_flush():
    out = CountingOut()

    async def main():
        writer = OutcomeWriter(out, every=0.05)
        writer.write(RECORDS[0])
        await asyncio.sleep(0)
        assert out.flushes == 1  # the first at the end of its iteration
        for record in RECORDS[1:]:
            writer.write(record)
            await asyncio.sleep(0)
        assert out.flushes == 1  # the rest wait for the interval
        await asyncio.sleep(0.1)
        assert out.flushes == 2

    asyncio.run(main())
    assert out.getvalue() == "".join(json.dumps(r) + "\n" for r in RECORDS)
