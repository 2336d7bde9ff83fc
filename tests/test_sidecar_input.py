"""The sidecar's reader: every line applied or rejected with its line and reason, the reader
going on; an over-long line rejected while it is read, never held whole; a defect costs one
line. (The same reader serves stdin and socket connections; tests/integration drives both.)"""

from __future__ import annotations

import asyncio
import io
import json

from pushrules.runtime.engine import Engine
from pushrules.runtime.xmpp.sidecar import (
    MAX_LINE_BYTES,
    Sidecar,
    SidecarSettings,
    split_lines,
    stream_chunks,
)


async def chunks_of(parts: list[bytes], consumed: list[int]):
    for part in parts:
        consumed.append(consumed[-1] + len(part))
        yield part


def collect(parts: list[bytes], limit: int) -> list[bytes | None]:
    async def main():
        return [line async for line in split_lines(chunks_of(parts, [0]), limit)]

    return asyncio.run(main())


def test_lines_across_chunks_and_a_last_line_without_newline():
    assert collect([b"ab", b"c\nde", b"\n\nf"], 10) == [b"abc", b"de", b"", b"f"]


def test_an_over_long_line_is_reported_once_and_the_next_line_is_whole():
    assert collect([b"12345678", b"90abc\nnext\n"], 8) == [None, b"next"]
    assert collect([b"x" * 9 + b"\n", b"ok"], 8) == [None, b"ok"]
    assert collect([b"x" * 8 + b"\n"], 8) == [b"x" * 8]


def test_an_over_long_line_is_rejected_before_its_end_is_read():
    """A 64 MiB line in 64 KiB chunks: reported after about limit bytes, not at its end."""
    consumed = [0]

    async def main():
        parts = [b"y" * 65536] * 1024 + [b"\nafter\n"]
        lines = split_lines(chunks_of(parts, consumed), 1 << 20)
        first = await lines.__anext__()
        at_report = consumed[-1]
        rest = [line async for line in lines]
        return first, at_report, rest

    first, at_report, rest = asyncio.run(main())
    assert first is None and at_report <= (1 << 20) + 65536
    assert rest == [b"after"]


def sidecar(engine: Engine | None = None) -> tuple[Sidecar, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    settings = SidecarSettings(component_jid="p.example.org", component_secret="x")
    return Sidecar(settings, out, err, engine=engine or Engine()), out, err


def test_bad_lines_are_named_and_good_ones_applied():
    bad = [
        b"[" * 5000 + b"]" * 5000,
        b'{"event": "session-bind", "session": ' + b"7" * 5000 + b"}",
        b'{"event": "session-bind", "session": "\xff@x.org/a"}',
        b"{not json",
        b'{"event": "session-bind"}',
        b"x" * (MAX_LINE_BYTES + 1),
    ]
    good = [json.dumps({"event": "session-bind", "session": f"u{i}@example.org/r"}).encode()
            for i in range(len(bad))]

    async def main():
        car, _, err = sidecar()
        for n, line in enumerate([x for pair in zip(good, bad, strict=True) for x in pair], 1):
            await car.feed(line, n, "stdin")
        return car, err.getvalue()

    car, err = asyncio.run(main())
    assert car.accepted == len(good) and car.rejected == len(bad)
    assert "Traceback" not in err
    for expected in ("stdin line 2: not valid JSON: nested deeper than 32 levels",
                     "stdin line 4: not valid JSON: a number of",
                     "stdin line 6: not valid UTF-8 at byte 39 (0xff)",
                     "stdin line 8: not valid JSON",
                     "stdin line 10, field 'session': missing",
                     f"stdin line 12: longer than {MAX_LINE_BYTES} bytes"):
        assert f"error: {expected}" in err, (expected, err)


def test_a_defect_while_applying_costs_that_line_only():
    class Faulty(Engine):
        def handle(self, event):
            if event.session.startswith("boom"):
                raise KeyError("a defect")
            return super().handle(event)

    async def main():
        car, _, err = sidecar(Faulty())
        for n, who in enumerate(("a", "boom", "b"), 1):
            await car.feed(json.dumps({"event": "session-bind",
                                       "session": f"{who}@example.org/r"}), n)
        return car, err.getvalue()

    car, err = asyncio.run(main())
    assert car.accepted == 2 and car.rejected == 1
    assert "error: stdin line 2: session-bind not applied: KeyError: 'a defect'" in err


def test_stdin_that_is_not_a_file_is_read_too():
    async def main():
        stream = io.BytesIO(b"one\ntwo\n")
        return [c async for c in stream_chunks(stream)]  # type: ignore[arg-type]

    assert b"".join(asyncio.run(main())) == b"one\ntwo\n"


def test_outbox_bound_and_socket_settings_from_the_file_and_flags(tmp_path):
    import pytest

    from pushrules.serve_cmd import SettingsError, build_settings, read_toml

    path = tmp_path / "serve.toml"
    path.write_text('[component]\njid = "p.example.org"\nsecret = "s"\n'
                    "[dispatch]\nmax_outbox = 300\n"
                    '[input]\nsocket = "/run/x.sock"\nsocket_group = "prosody"\n'
                    "allowed_uids = [110, 111]\n")
    values, rules = read_toml(path)
    settings = build_settings({"max_outbox": None, "allowed_uids": None}, values, rules)
    assert settings.max_outbox == 300 and settings.socket_group == "prosody"
    assert settings.allowed_uids == (110, 111) and settings.socket == "/run/x.sock"
    assert build_settings({"max_outbox": 5}, values, rules).max_outbox == 5
    assert build_settings({}, {"component_jid": "p", "component_secret": "s"},
                          {}).max_outbox == 10_000
    with pytest.raises(SettingsError, match="max_outbox must be at least 1, not 0"):
        build_settings({"max_outbox": 0}, values, rules)
