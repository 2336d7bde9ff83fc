"""The simulated day (benchmarks/simday.py): a deterministic, valid contract trace; limit
violations counted right; the Prosody baseline batching as the research describes; a quick
run's table and plot. Timings are never asserted."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from oracle.contract import replay as oracle_replay

from pushrules.benchmarks import simday
from pushrules.benchmarks.prosody_batching import BaselinePush, simulate
from pushrules.cli import main
from pushrules.runtime.replay import replay
from pushrules.runtime.trace import parse_event, read_trace

SMALL = simday.DayPlan(users=10)
TINY = simday.DayPlan(users=3, hours=6)


@pytest.fixture(scope="module")
def day() -> simday.Day:
    return simday.generate_day(SMALL, seed=1)


# --- the generator ----------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_day_and_another_seed_another() -> None:
    first = simday.generate_day(TINY, seed=3)
    assert first.lines == simday.generate_day(TINY, seed=3).lines
    assert first.devices == simday.generate_day(TINY, seed=3).devices
    assert first.lines != simday.generate_day(TINY, seed=4).lines


def test_every_line_is_a_contract_event_with_a_time_that_never_decreases(day) -> None:
    out = io.StringIO()
    assert simday.write_day(day, out) == len(day.lines)
    previous = 0.0
    for number, text in enumerate(out.getvalue().splitlines(), start=1):
        event = parse_event(text, number)
        assert event is not None and json.loads(text)["event"] == event.EVENT
        assert isinstance(event.at, float | int), number
        assert event.at >= previous, number
        previous = event.at
    assert 0 < previous <= SMALL.hours * simday.HOUR
    assert len(list(read_trace(out.getvalue().splitlines()))) == len(day.lines)


def test_every_event_is_possible_where_it_comes(day) -> None:
    """The whole day replays in --strict mode: no event meets a state that forbids it."""
    err = io.StringIO()
    status = replay(simday.lines_of(day), io.StringIO(), err, strict=True)
    assert (status, err.getvalue()) == (0, "")


def test_the_day_has_what_the_issue_asks_for(day) -> None:
    counts = day.counts()
    for event in ("session-bind", "push-enable", "csi-state", "smacks-hibernation-start",
                  "smacks-hibernation-end", "smacks-ack-delayed", "smacks-ack-received",
                  "stanza-queued", "session-destroyed", "archive-message-added",
                  "message/offline/handle", "message/bare/groupchat", "chat-settings"):
        assert counts.get(event, 0) > 0, event
    stanzas = " ".join(line.get("stanza", "") for line in day.lines)
    for element in ("<propose", "<retract", "<reject", "<accept", "type='mention'",
                    "type='groupchat'", "<composing", "urn:xmpp:carbons:2"):
        assert element in stanzas, element
    settings = {line["notify"] for line in day.lines if line["event"] == "chat-settings"}
    assert settings == {"always", "on-mention", "never"}
    assert {key[2].split("-")[1] for key in day.devices} >= {"phone"}
    # Bursts: some messages to one user come within a second of each other.
    times = [line["at"] for line in day.lines if line["event"] == "stanza-queued"
             and line["session"] == "u0@example.org/phone"]
    assert any(b - a < 1 for a, b in zip(times, times[1:], strict=False))


def test_activity_follows_the_day(day) -> None:
    hours = [0] * 24
    for line in day.lines:
        hours[min(23, int(line["at"] // simday.HOUR))] += 1
    assert sum(hours[2:5]) * 5 < sum(hours[19:22])


@pytest.mark.parametrize("burst_window", simday.BURST_WINDOWS)
def test_the_engine_and_the_independent_reading_push_the_same_day(day, burst_window) -> None:
    """What the benchmark counts: every push (device, time) of the engine, the held ones
    flushed at the end, is one the contract's independent reading sends too."""
    events = [item.event for item in read_trace(simday.lines_of(day))]
    sent = simday.engine_pushes(events, burst_window)
    expected, rejected = oracle_replay(day.lines, {"burst_window": burst_window})
    assert rejected == []
    assert sorted(sent) == sorted(((p["user"], p["jid"], p["node"]), p["at"])
                                  for p in expected)
    assert len(sent) > 0


# --- counting limit violations ----------------------------------------------------------------

def test_a_sixth_push_within_one_second_is_over_five_per_second() -> None:
    assert simday.over_limit([0, 0.1, 0.2, 0.3, 0.4, 0.5], 5, 1.0) == [5]
    assert simday.over_limit([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 5, 1.0) == [5, 6]
    # The sixth exactly one second after the first: only five in the second before it.
    assert simday.over_limit([0, 0.1, 0.2, 0.3, 0.4, 1.0], 5, 1.0) == []
    assert simday.over_limit([0, 0, 0, 0, 0], 5, 1.0) == []
    assert simday.over_limit([], 5, 1.0) == []


def test_a_push_less_than_twenty_seconds_after_another_is_over_fpushs_window() -> None:
    assert simday.over_limit([0, 19.9, 20, 45, 65], 1, 20.0) == [1, 2]
    assert simday.over_limit([0, 20, 40], 1, 20.0) == []


def test_summary_counts_device_hours_and_their_violations() -> None:
    a, b, quiet = ("u@x", "p", "a"), ("u@x", "p", "b"), ("u@x", "p", "q")
    sent = [(a, t) for t in (10, 10.1, 10.2, 10.3, 10.4, 10.5)]  # one over 5/s, five over 20 s
    sent += [(b, 3600 + 5), (b, 3600 + 30), (b, 2 * 3600 + 1)]  # none over
    sent += [(b, 3 * 3600 - 1), (b, 3 * 3600 + 2)]  # 3 s apart, across an hour: over 20 s
    sent += [(a, 4 * 3600 + 30)]  # flushed after the last hour: counted in the last one
    summary = simday.summarize(sent, [a, b, quiet], hours=4)
    assert summary["pushes"] == 12 and summary["devices"] == 3
    assert summary["device_hours"] == 12
    assert summary["per_device_hour"]["max"] == 6
    assert summary["per_device_hour"]["mean"] == pytest.approx(12 / 12)
    assert summary["hourly_mean"] == pytest.approx([6 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert summary["per_device_day_max"] == 7
    per_second, window = summary["limits"]["5 per 1 s"], summary["limits"]["1 per 20 s"]
    assert (per_second["violations"], per_second["device_hours"], per_second["devices"]) == \
        (1, 1, 1)
    assert (window["violations"], window["device_hours"], window["devices"]) == (6, 2, 2)
    assert window["device_hours_share"] == pytest.approx(2 / 12)


# --- the Prosody baseline ---------------------------------------------------------------------

USER = "bob@example.org"
PHONE = f"{USER}/phone"
KEY = (USER, "push.example.net", "n1")


def _message(sid: str, important: bool = True) -> str:
    payload = "<body>hi</body>" if important else \
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
    return (f"<message xmlns='jabber:client' type='chat' id='{sid}' from='al@example.org/pc' "
            f"to='{USER}'>{payload}</message>")


def _events(lines: list[dict[str, object]]) -> list[object]:
    return [parse_event(line, n) for n, line in enumerate(lines, start=1)]


def _bound(queue: list[str], at: float = 0.0) -> list[dict[str, object]]:
    return [
        {"event": "session-bind", "session": PHONE, "at": at},
        {"event": "push-enable", "session": PHONE, "jid": KEY[1], "node": KEY[2], "at": at},
        {"event": "smacks-hibernation-start", "session": PHONE, "queue": queue, "at": at},
    ]


def _queued(sid: str, at: float, important: bool = True) -> dict[str, object]:
    return {"event": "stanza-queued", "session": PHONE, "stanza": _message(sid, important),
            "at": at}


def _seen(pushes: list[BaselinePush]) -> list[tuple[float, str | None, str]]:
    return [(p.at, p.stanza, p.path) for p in pushes]


def test_hibernation_pushes_its_queue_at_once_one_important_and_one_not() -> None:
    queue = [_message("q1"), _message("q2", important=False), _message("q3"),
             _message("q4", important=False)]
    assert _seen(simulate(_events(_bound(queue, at=5.0)))) == \
        [(5.0, "q1", "smacks"), (5.0, "q2", "smacks")]


def test_stanzas_while_hibernated_are_batched_for_one_second() -> None:
    lines = _bound([]) + [
        _queued("m1", 10.0), _queued("s1", 10.2, important=False), _queued("m2", 10.4),
        _queued("s2", 10.6, important=False),
        _queued("m3", 11.5),
        {"event": "tick", "at": 30.0},
    ]
    # The first batch (10.0-11.0) sends one important and one unimportant push; m2 and s2
    # are not pushed. m3 starts a new timer.
    assert _seen(simulate(_events(lines))) == \
        [(11.0, "m1", "push"), (11.0, "s1", "push"), (12.5, "m3", "push")]


def test_resumption_stops_the_timer_and_keeps_the_queue() -> None:
    lines = _bound([]) + [
        _queued("m1", 20.0),
        {"event": "smacks-hibernation-end", "session": PHONE, "at": 20.5},
        {"event": "smacks-hibernation-start", "session": PHONE, "queue": [], "at": 30.0},
        _queued("m2", 31.0),
    ]
    # Nothing at 21 (stopped); the kept m1 goes out with the next batch, and takes the one
    # important slot from m2 (quirk Q5).
    assert _seen(simulate(_events(lines))) == [(32.0, "m1", "push")]


def test_a_second_hibernation_skips_what_the_first_pushed() -> None:
    again = [_message("q1"), _message("q2")]
    lines = _bound([_message("q1")]) + [
        {"event": "smacks-hibernation-end", "session": PHONE, "at": 1.0},
        {"event": "smacks-hibernation-start", "session": PHONE, "queue": again, "at": 2.0},
    ]
    assert _seen(simulate(_events(lines))) == [(0.0, "q1", "smacks"), (2.0, "q2", "smacks")]


def test_archive_offline_and_groupchat_push_at_once_without_dedup() -> None:
    room = ("<message xmlns='jabber:client' type='groupchat' id='g1' from='r@muc.example.org/al'"
            f" to='{USER}'><body>hi</body></message>")
    lines = _bound([]) + [
        {"event": "archive-message-added", "for_user": USER, "stanza": _message("a1"),
         "at": 1.0},  # bound to the hibernated session: not pushed
        {"event": "session-destroyed", "session": PHONE, "at": 2.0},
        {"event": "message/offline/handle", "user": USER, "stanza": _message("o1"), "at": 3.0},
        {"event": "archive-message-added", "for_user": USER, "stanza": _message("o1"),
         "at": 3.0},  # no session left: H10 does nothing
        {"event": "message/bare/groupchat", "user": USER, "stanza": room, "at": 4.0},
        {"event": "message/bare/groupchat", "user": USER, "stanza": room, "at": 4.2},
    ]
    assert _seen(simulate(_events(lines))) == \
        [(3.0, "o1", "offline"), (4.0, "g1", "groupchat"), (4.2, "g1", "groupchat")]


def test_chat_settings_filter_the_baseline_only_when_asked() -> None:
    room = ("<message xmlns='jabber:client' type='groupchat' id='g1' from='r@muc.example.org/al'"
            f" to='{USER}'><body>hi</body></message>")
    lines = _bound([]) + [
        {"event": "chat-settings", "user": USER, "chat": "r@muc.example.org",
         "notify": "on-mention", "nick": "bob", "at": 0.0},
        {"event": "session-destroyed", "session": PHONE, "at": 1.0},
        {"event": "message/bare/groupchat", "user": USER, "stanza": room, "at": 2.0},
    ]
    assert len(simulate(_events(lines))) == 1
    assert simulate(_events(lines), chat_settings=True) == []


# --- a quick run ------------------------------------------------------------------------------

def test_a_run_gives_the_table_for_every_setting_and_a_png(tmp_path) -> None:
    result = simday.run(seed=2, plan=TINY)
    assert list(result["settings"]) == [
        "burst_window=0", "burst_window=1", "burst_window=5", "burst_window=20",
        "prosody 1 s batch",
        "prosody 1 s batch + chat settings"]
    for row in result["settings"].values():
        assert row["pushes"] == pytest.approx(sum(row["hourly_mean"]) * row["devices"])
        assert set(row["limits"]) == {"5 per 1 s", "1 per 20 s"}
    assert result["settings"]["burst_window=0"]["pushes"] > 0
    table = simday.text(result, "day.png")
    for name in result["settings"]:
        assert f"| {name}" in table
    assert "![pushes per device per hour, and limit violations](day.png)" in table
    assert "## Assumptions" in table and "Diurnal" in table
    plot = tmp_path / "day.png"
    simday.write_plot(result, str(plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_simday_quick_json_and_plot(tmp_path) -> None:
    plot = tmp_path / "simday.png"
    result = CliRunner().invoke(main, ["bench", "--simday", "--quick", "--json", "--seed", "5",
                                       "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["seed"] == 5 and figures["quick"] is True
    assert figures["users"] == simday.QUICK.users
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_bench_simday_refuses_what_does_not_go_together(tmp_path) -> None:
    runner = CliRunner()
    for args in (["--simday", "--serve"], ["--seed", "3"],
                 ["--simday", "--plot", str(tmp_path / "no" / "such.png")]):
        result = runner.invoke(main, ["bench", *args])
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output
