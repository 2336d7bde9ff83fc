"""The sidecar's reader: every line applied or rejected with its line and reason, the reader
going on; an over-long line rejected while it is read, never held whole; a defect costs one
line. (The same reader serves stdin and socket connections; tests/integration drives both.)"""

from __future__ import annotations

import asyncio
import io
import json
import os

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


EVENT_LINES = [f'{{"event": "session-bind", "session": "u{i}@x/r"}}\n'.encode()
               for i in range(500)]


def read_stdin_lines(stream) -> list[bytes | None]:
    async def main():
        return [line async for line in split_lines(stream_chunks(stream))]

    return asyncio.run(main())


def test_stdin_from_a_pipe_a_regular_file_and_dev_null(tmp_path):
    import os
    import threading

    read_fd, write_fd = os.pipe()

    def writer():
        with os.fdopen(write_fd, "wb") as out:
            out.writelines(EVENT_LINES)
            out.write(b"last line without newline")

    threading.Thread(target=writer).start()
    with os.fdopen(read_fd, "rb") as stream:
        got = read_stdin_lines(stream)
    assert got == [line[:-1] for line in EVENT_LINES] + [b"last line without newline"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(EVENT_LINES))
    with path.open("rb") as stream:
        assert read_stdin_lines(stream) == [line[:-1] for line in EVENT_LINES]
    with open(os.devnull, "rb") as stream:
        assert read_stdin_lines(stream) == []


def test_a_buffered_backlog_gives_the_loop_turns():
    """All 500 lines in one chunk: other tasks still run between lines, not only at its end."""
    import time

    async def main() -> list[int]:
        turns = 0
        seen: list[int] = []

        async def other_task():
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        async for _line in split_lines(chunks_of([b"".join(EVENT_LINES)], [0]), turn=0.0005):
            seen.append(turns)
            time.sleep(0.0002)  # applying a line takes a while
        task.cancel()
        return seen

    seen = asyncio.run(main())
    assert len(seen) == len(EVENT_LINES)
    assert len(set(seen)) >= len(seen) // 5


# --- contract v2 lines, on stdin and on the socket ----------------------------------------------

BOB, APP = "bob@example.org", "push.example.net"
PHONE, DESKTOP = f"{BOB}/phone", f"{BOB}/desktop"
ROOM, MUTED = "room@muc.example.org", "muted@muc.example.org"


def _message(mid: str, sender: str, kind: str = "chat", inner: str = "<body>hi</body>") -> str:
    return (f"<message xmlns='jabber:client' id='{mid}' from='{sender}' to='{BOB}' "
            f"type='{kind}'>{inner}</message>")


def _jmi(kind: str, mid: str) -> str:
    return _message(mid, "alice@example.org/pc",
                    inner=f"<{kind} xmlns='urn:xmpp:jingle-message:0' id='c1'/>")


MENTION = f"<body>bob?</body><reference xmlns='urn:xmpp:reference:0' type='mention' " \
          f"uri='xmpp:{ROOM}/bob'/>"
V2_GOOD = [
    {"event": "session-bind", "session": PHONE, "at": 1},
    {"event": "push-enable", "session": PHONE, "jid": APP, "node": "phone", "at": 2},
    {"event": "session-bind", "session": DESKTOP, "at": 3},
    {"event": "push-enable", "session": DESKTOP, "jid": APP, "node": "desk", "at": 4},
    {"event": "csi-state", "session": DESKTOP, "state": "inactive", "at": 5},
    {"event": "smacks-hibernation-start", "session": PHONE, "queue": [], "at": 6},
    {"event": "chat-settings", "user": BOB, "chat": MUTED, "notify": "never", "at": 7},
    {"event": "message/bare/groupchat", "user": BOB, "at": 8,
     "stanza": _message("g1", f"{MUTED}/alice", "groupchat")},
    {"event": "chat-settings", "user": BOB, "chat": ROOM, "notify": "on-mention", "nick": "bob",
     "at": 9},
    {"event": "message/bare/groupchat", "user": BOB, "at": 10,
     "stanza": _message("g2", f"{ROOM}/alice", "groupchat")},
    {"event": "message/bare/groupchat", "user": BOB, "at": 10,
     "stanza": _message("g3", f"{ROOM}/alice", "groupchat", MENTION)},
    {"event": "archive-message-added", "for_user": BOB, "stanza": _jmi("propose", "p1"), "at": 11},
    {"event": "archive-message-added", "for_user": BOB, "stanza": _jmi("retract", "r1"), "at": 12},
    {"event": "push-remote-disable", "user": BOB, "jid": APP, "node": "desk", "at": 13},
    {"event": "message/offline/handle", "user": BOB, "at": 14,
     "stanza": _message("m1", "alice@example.org/pc")},
    {"event": "tick", "at": 15},
]
V2_POISON = [  # (line, the error's field and reason)
    ({"event": "chat-settings", "user": BOB, "chat": ROOM, "notify": "sometimes"},
     "field 'notify': 'sometimes' is not one of always, on-mention, never"),
    ({"event": "chat-settings", "user": BOB, "chat": f"{ROOM}/bob", "notify": "never"},
     f"field 'chat': '{ROOM}/bob' is not a bare JID (user@host)"),
    ({"event": "csi-state", "session": DESKTOP, "state": "away"},
     "field 'state': 'away' is not one of active, inactive"),
    ({"event": "tick", "at": 0.5},
     "field 'at': 0.5 is earlier than the previous event's"),
    ({"event": "tick", "at": "soon"}, "field 'at': must be a number of seconds, got 'soon'"),
    ({"event": "push-remote-disable", "user": BOB, "jid": APP},
     "field 'node': missing (required by push-remote-disable)"),
    ({"event": "message/bare/groupchat", "user": PHONE, "stanza": _message("g9", ROOM)},
     f"field 'user': '{PHONE}' is not a bare JID (user@host)"),
    ({"event": "csi-state", "session": PHONE, "state": "active", "at": 1},
     "field 'at': 1 is earlier than the previous event's"),
]
# What the good lines push (the contract's v2 rules, by hand), per registration in order: g1
# muted, g2 no mention; the call rings the hibernated phone and the CSI-inactive desktop,
# urgent, and ends on both; m1 after the desktop's remote disable goes to the phone only.
# Every push carries its time.
V2_PUSHES = {
    "phone": [("d/groupchat", ["g3"], False, 10), ("e/call", ["p1"], True, 11),
              ("e/call-end", ["r1"], False, 12), ("c/offline", ["m1"], False, 14)],
    "desk": [("d/groupchat", ["g3"], False, 10), ("e/call", ["p1"], True, 11),
             ("e/call-end", ["r1"], False, 12)],
}
V2_PUSH_COUNT = sum(len(pushes) for pushes in V2_PUSHES.values())


def v2_lines() -> tuple[list[bytes], dict[int, str]]:
    """The good lines with a poison line after each of them past the registrations, in two
    parts: up to the call's end, then from the remote disable on (sent once the first part's
    pushes are out: a disable read before a push decided earlier is sent drops that push, as
    it should, which would make this test's outcome a matter of timing). And the poison
    lines' numbers with the error each must give."""
    parts: list[list[bytes]] = [[], []]
    errors: dict[int, str] = {}
    poison = iter(V2_POISON)
    number = 0
    for index, good in enumerate(V2_GOOD):
        part = parts[good["event"] == "push-remote-disable" or bool(parts[1])]
        bad = next(poison, None) if index >= 3 else None  # after the registrations
        for line in (good, *(() if bad is None else (bad[0],))):
            part.append(json.dumps(line).encode())
            number += 1
        if bad is not None:
            errors[number] = bad[1]
    assert len(errors) == len(V2_POISON)
    return [b"\n".join(part) + b"\n" for part in parts], errors


async def first_part_out(transport: RecordingTransport) -> None:
    while len(transport.sent) < V2_PUSH_COUNT - 1:
        await asyncio.sleep(0.01)


async def run_on_stdin(car: Sidecar, transport: RecordingTransport, parts: list[bytes]) -> int:
    """``car.run`` with ``v2_lines``'s two parts on a pipe as stdin: the second written once
    the first part's pushes are out, then the end of stdin (serve finishes its pushes and
    exits). Its exit code."""
    read, write = os.pipe()
    with os.fdopen(read, "rb") as stdin:
        task = asyncio.get_running_loop().create_task(car.run(stdin))
        os.write(write, parts[0])
        await asyncio.wait_for(first_part_out(transport), 20)
        os.write(write, parts[1])
        os.close(write)
        return await asyncio.wait_for(task, 20)


class RecordingTransport:
    """Stands in for the XMPP side (the input, engine, dispatcher and outcomes are real):
    every publish answered with a result."""

    def __init__(self) -> None:
        self.online = asyncio.Event()
        self.online.set()
        self.sent: list = []

    async def start(self, timeout: float | None = None) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, push):
        from pushrules.runtime.xmpp.transport import RESULT

        self.sent.append(push)
        return RESULT


def v2_sidecar(**options) -> tuple[Sidecar, RecordingTransport, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    settings = SidecarSettings(component_jid="p.example.org", component_secret="x",
                               shutdown_grace=5, **options)
    transport = RecordingTransport()
    return Sidecar(settings, out, err, engine=Engine(), transport=transport), transport, out, err


def assert_v2_applied(car: Sidecar, transport: RecordingTransport, out: io.StringIO,
                      err: str, where: str, errors: dict[int, str]) -> None:
    assert "Traceback" not in err
    for number, reason in errors.items():
        assert f"error: {where} line {number}, {reason}" in err, (number, reason, err)
    assert car.rejected == len(V2_POISON) and car.accepted == len(V2_GOOD)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {node: [(o["rule"], o["stanzas"], o.get("urgent", False), o["at"])
                   for o in lines if o["node"] == node] for node in V2_PUSHES} == V2_PUSHES
    assert len(lines) == V2_PUSH_COUNT
    assert {o["status"] for o in lines} == {"delivered"}
    assert [(p.node, p.rule, p.urgent) for p in transport.sent if p.node == "desk"] == [
        ("desk", rule, urgent) for rule, _, urgent, _ in V2_PUSHES["desk"]]
    assert all(p.urgent == (p.rule == "e/call") for p in transport.sent)


def test_v2_lines_on_stdin_every_poison_line_named_and_every_good_one_applied():
    parts, errors = v2_lines()

    async def main():
        car, transport, out, err = v2_sidecar()
        code = await run_on_stdin(car, transport, parts)
        return code, car, transport, out, err.getvalue()

    code, car, transport, out, err = asyncio.run(main())
    assert code == 0, err
    assert_v2_applied(car, transport, out, err, "stdin", errors)


def test_v2_lines_on_the_socket_and_each_connection_keeps_its_own_clock(tmp_path):
    """The poison lines on connection 1; connection 2 then starts at an earlier time than
    connection 1 ended (another server's clock): accepted, times only order one stream."""
    parts, errors = v2_lines()
    path = tmp_path / "events.sock"
    later = json.dumps({"event": "message/offline/handle", "user": BOB, "at": 3,
                        "stanza": _message("m2", "alice@example.org/pc")}).encode() + b"\n"

    async def main():
        car, transport, out, err = v2_sidecar(socket=str(path))
        task = asyncio.get_running_loop().create_task(car.run())
        try:
            while not path.exists():
                await asyncio.sleep(0.02)
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.write(parts[0])
            await asyncio.wait_for(first_part_out(transport), 20)
            writer.write(parts[1])
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            while len(transport.sent) < V2_PUSH_COUNT:
                await asyncio.sleep(0.01)
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.write(later)
            writer.close()
            await asyncio.wait_for(until_sent(transport, "m2"), 20)
        finally:
            car.stop()
        return await asyncio.wait_for(task, 20), car, transport, out, err.getvalue()

    code, car, transport, out, err = asyncio.run(main())
    assert code == 0, err
    lines = out.getvalue().splitlines()
    [m2] = [json.loads(line) for line in lines if '"m2"' in line]
    assert (m2["node"], m2["rule"], m2["at"]) == ("phone", "c/offline", 3)
    out = io.StringIO("\n".join(line for line in lines if '"m2"' not in line))
    car.accepted -= 1
    transport.sent = [p for p in transport.sent if p.stanzas != ("m2",)]
    assert_v2_applied(car, transport, out, err, "connection 1", errors)


async def until_sent(transport: RecordingTransport, mid: str) -> None:
    while not any(mid in p.stanzas for p in transport.sent):
        await asyncio.sleep(0.01)
