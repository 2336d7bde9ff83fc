"""`pushrules replay --store URL`: the same pushes, warnings and errors as replay in memory,
with the state kept in the store (so `pushrules registrations` can read it afterwards)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from replaykit import (
    BOB,
    EXAMPLES,
    PHONE,
    PUSH,
    cli,
    example_options,
    example_traces,
    local_redis,
    msg,
)


def ev(name: str, **fields: object) -> str:
    return json.dumps({"event": name, **fields})


@pytest.mark.parametrize("trace", example_traces(), ids=lambda p: p.stem)
def test_every_example_replays_the_same_onto_sqlite(trace: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    memory = cli("replay", str(trace), *example_options(trace))
    stored = cli("replay", str(trace), *example_options(trace), "--store", url)
    assert (stored.status, stored.out, stored.err) == (memory.status, memory.out, memory.err)
    assert stored.out == trace.with_suffix(".expected").read_text(encoding="utf-8")


def test_registrations_reads_what_replay_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    lines = [ev("session-bind", session=PHONE),
             ev("push-enable", session=PHONE, jid=PUSH, node="n1", secret="hunter2"),
             ev("smacks-hibernation-start", session=PHONE, queue=[msg("m1")])]
    run = cli("replay", "-", "--store", url, input="\n".join(lines) + "\n")
    assert run.status == 0, run.err
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"]]
    shown = cli("registrations", BOB, "--store", url, "--json")
    assert shown.status == 0, shown.err
    data = json.loads(shown.out)
    assert [(r["jid"], r["node"]) for r in data["registrations"]] == [(PUSH, "n1")]
    assert [(s["session"], s["state"]) for s in data["sessions"]] == [(PHONE, "hibernated")]
    assert "hunter2" not in shown.out
    # a second replay continues from the stored state: the session is still hibernated
    more = cli("replay", "-", "--store", url, input=ev("stanza-queued", session=PHONE,
                                                        stanza=msg("m2")) + "\n")
    assert more.status == 0, more.err
    assert [json.loads(x)["stanzas"] for x in more.out.splitlines()] == [["m2"]]


def test_a_bad_line_with_a_store_is_the_same_error_and_applies_nothing_after(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    lines = [ev("session-bind", session=PHONE), ev("session-bind", session="bob@@x.org/phone"),
             ev("push-enable", session=PHONE, jid=PUSH, node="n1")]
    memory = cli("replay", "-", input="\n".join(lines) + "\n")
    stored = cli("replay", "-", "--store", url, input="\n".join(lines) + "\n")
    assert stored.status == memory.status == 2
    assert stored.err == memory.err
    assert stored.err.startswith("error: line 2, field 'session': ")
    data = json.loads(cli("registrations", BOB, "--store", url, "--json").out)
    assert data["registrations"] == [] and [s["session"] for s in data["sessions"]] == [PHONE]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("url, words", [
    ("nosuch://x", "is not one of"),
    ("sqlite:///{tmp}/no/such/dir/state.db", "cannot open"),
    ("redis://127.0.0.1:{port}/0", "Connection refused"),
])
def test_a_store_that_cannot_be_opened_is_exit_2(url: str, words: str, tmp_path: Path) -> None:
    url = url.format(tmp=tmp_path, port=_free_port())
    run = cli("replay", "-", "--store", url, input=ev("session-bind", session=PHONE) + "\n")
    assert run.status == 2
    assert run.err.startswith("error: store "), run.err
    assert words in run.err
    assert "Traceback" not in run.err and run.out == ""


def test_a_corrupt_sqlite_file_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    run = cli("replay", "-", "--store", f"sqlite:///{path}",
              input=ev("session-bind", session=PHONE) + "\n")
    assert run.status == 2
    assert run.err.startswith("error: store "), run.err
    assert "Traceback" not in run.err


V2_UNTIMED = ("groupchat-settings", "call-propose-retract", "call-echo-and-queue",
              "remote-disable")
"""The v2 examples without time (held pushes, expiry and probes are issue 14's)."""


def _two_runs(trace: Path, url_for: Callable[[int], str]) -> list[tuple[int, str, str]]:
    """For each line, the trace replayed as two runs on one store split before that line: the
    joined outputs, one per split."""
    lines = trace.read_text(encoding="utf-8").splitlines(keepends=True)
    joined = []
    for split in range(1, len(lines)):
        url = url_for(split)
        first = cli("replay", "-", "--store", url, input="".join(lines[:split]))
        second = cli("replay", "-", "--store", url, input="".join(lines[split:]))
        joined.append((max(first.status, second.status), first.out + second.out,
                       first.err + second.err))
    return joined


@pytest.mark.parametrize("name", V2_UNTIMED)
def test_a_v2_trace_replayed_in_two_runs_on_sqlite_is_one_run(name: str, tmp_path: Path) -> None:
    """CSI, chat settings and calls are kept in the store between the runs: split before any
    line, the two runs print what one run prints (the example's expected output)."""
    trace = EXAMPLES / "v2" / f"{name}.jsonl"
    one = cli("replay", str(trace))
    assert one.status == 0 and one.out == trace.with_suffix(".expected").read_text("utf-8")
    splits = _two_runs(trace, lambda split: f"sqlite:///{tmp_path / f'split{split}.db'}")
    assert len(splits) > 8
    for split, run in enumerate(splits, 1):
        assert run == (one.status, one.out, one.err), f"{name} split before line {split + 1}"


def test_a_v2_trace_replayed_in_two_runs_on_redis_is_one_run() -> None:
    trace = EXAMPLES / "v2" / "call-propose-retract.jsonl"
    one = cli("replay", str(trace))
    with local_redis() as server:
        splits = _two_runs(trace, lambda split: f"{server.url}?prefix=split{split}")
    for split, run in enumerate(splits, 1):
        assert run == (one.status, one.out, one.err), f"split before line {split + 1}"
