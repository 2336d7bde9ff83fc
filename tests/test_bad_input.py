"""Bad input: the error names the line and the field, replay exits 2, the pushes decided before
the bad line are printed, and nothing after it is processed."""

from __future__ import annotations

import json

import pytest
from replaykit import BOB, PHONE, PUSH, cli, msg

PREFIX = [
    "# two events, then the bad line (line 4), then an event that would push",
    json.dumps({"event": "session-bind", "session": PHONE}),
    json.dumps({"event": "push-enable", "session": PHONE, "jid": PUSH, "node": "n1"}),
]
BEFORE = json.dumps({"event": "smacks-ack-delayed", "session": PHONE, "queue": [msg("m1")]})
AFTER = json.dumps({"event": "stanza-queued", "session": PHONE, "stanza": msg("m2")})


def ev(name: str, **fields: object) -> str:
    return json.dumps({"event": name, **fields})


# (bad line, field named or None, words the message must contain)
CASES = {
    "malformed JSON": ('{"event": "session-bind", "session": ', None, "not valid JSON"),
    "trailing garbage": (ev("smacks-ack-received", session=PHONE) + " x", None, "not valid JSON"),
    "not an object": ('["session-bind"]', None, "expected a JSON object, got list"),
    "unknown event": (ev("smacks-enabled", session=PHONE), "event", "unknown event"),
    "no event": (json.dumps({"session": PHONE}), "event", "missing"),
    "event not a string": (json.dumps({"event": 7}), "event", "must be a string"),
    "missing field": (ev("stanza-queued", session=PHONE), "stanza", "missing"),
    "missing session": (ev("smacks-ack-received"), "session", "missing"),
    "null required field": (ev("push-result", user=BOB, jid=PUSH, node=None, ok=True),
                            "node", "missing"),
    "wrong type bool": (ev("push-result", user=BOB, jid=PUSH, node="n1", ok="false"),
                        "ok", "must be true or false"),
    "wrong type string": (ev("session-destroyed", session=42), "session", "must be a string"),
    "wrong type queue": (ev("smacks-hibernation-start", session=PHONE, queue=msg("m2")),
                         "queue", "must be a list"),
    "wrong type queue item": (ev("smacks-hibernation-start", session=PHONE,
                                 queue=[msg("m2"), 3]), "queue[1]", "must be a stanza"),
    "bad error_type": (ev("push-result", user=BOB, jid=PUSH, node="n1", ok=False,
                          error_type="timeout"), "error_type", "'timeout' is not one of"),
    "bad XML": (ev("stanza-queued", session=PHONE, stanza="<message id='m2'><body>hi</message>"),
                "stanza", "not well-formed XML"),
    "bad XML in queue": (ev("smacks-hibernation-start", session=PHONE,
                            queue=[msg("m2"), "<message"]), "queue[1]", "not well-formed XML"),
    "not a stanza": (ev("archive-message-added", for_user=BOB, stanza="<foo id='m2'/>"),
                     "stanza", "<foo> is not a stanza"),
    "text, not XML": (ev("message/offline/handle", user=BOB, stanza="hello"), "stanza",
                      "not well-formed XML"),
    "entity expansion": (ev("stanza-queued", session=PHONE, stanza=(
        "<!DOCTYPE m [<!ENTITY a 'aaaa'>]><message id='m2'><body>&a;</body></message>")),
        "stanza", "not well-formed XML"),
    "bare JID as session": (ev("session-bind", session=BOB), "session", "not a full JID"),
    "full JID as user": (ev("message/offline/handle", user=PHONE, stanza=msg("m2")),
                         "user", "not a bare JID"),
    "empty jid": (ev("push-enable", session=PHONE, jid="", node="n2"), "jid", "must not be empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_line(case: str) -> None:
    bad, field, words = CASES[case]
    run = cli("replay", "-", input="\n".join([*PREFIX, BEFORE, bad, AFTER]) + "\n")
    assert run.status == 2
    where = "line 5" + (f", field '{field}'" if field else "")
    assert run.err.startswith(f"error: {where}: "), run.err
    assert words in run.err
    assert run.err.count("\n") == 1, "one error, nothing else"
    assert "Traceback" not in run.err
    pushes = [json.loads(x) for x in run.out.splitlines()]
    assert [p["stanzas"] for p in pushes] == [["m1"]]  # before the bad line, and nothing after


def test_bad_utf8_names_its_line_after_earlier_pushes() -> None:
    data = ("\n".join([*PREFIX, BEFORE]) + "\n").encode() + b'{"event": "\xff"}\n' + \
        (AFTER + "\n").encode()
    run = cli("replay", "-", input=data)
    assert run.status == 2
    assert run.err.startswith("error: line 5: not UTF-8")
    assert run.out.count("\n") == 1


def test_first_bad_line_wins() -> None:
    run = cli("replay", "-", input="\n".join([*PREFIX, "{", "}", AFTER]))
    assert run.status == 2
    assert run.err.startswith("error: line 4: ")


def test_explain_prints_lines_only_up_to_the_bad_one() -> None:
    run = cli("replay", "-", "--explain", input="\n".join([*PREFIX, BEFORE, "nope", AFTER]))
    assert run.status == 2
    explained = [x.split(":")[0] for x in run.out.splitlines() if x.startswith("#")]
    assert explained == ["# line 2 session-bind", "# line 3 push-enable",
                         "# line 4 smacks-ack-delayed"]


def test_error_does_not_echo_the_secret() -> None:
    bad = ev("push-enable", session=PHONE, jid=PUSH, node="n2", secret={"v": "hunter2"})
    run = cli("replay", "-", input="\n".join([*PREFIX, bad]))
    assert run.status == 2
    assert "line 4, field 'secret'" in run.err
    assert "hunter2" not in run.err + run.out


# --- events that are well-formed but impossible in the current state ---------------------------

IMPOSSIBLE = {
    "resume without hibernation": (ev("smacks-hibernation-end", session=PHONE), "event",
                                   "in state ack_delayed: the session is not hibernated"),
    "second bind": (ev("session-bind", session=PHONE), "event", "already live"),
    "event for an unknown session": (ev("smacks-ack-received", session=f"{BOB}/tv"), "event",
                                     "in state offline: there is no live session"),
    "destroy twice": (ev("session-destroyed", session=f"{BOB}/tv"), "event", "no live session"),
    "result for an unknown node": (ev("push-result", user=BOB, jid=PUSH, node="n9", ok=True),
                                   "node", "no such registration"),
    "result for an unknown jid": (ev("push-result", user=BOB, jid="other.example", node="n1",
                                     ok=True), "jid", "no such registration"),
    "second ack-delayed": (ev("smacks-ack-delayed", session=PHONE, queue=[]), "event",
                           "once per unanswered"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_impossible_event_strict(case: str) -> None:
    bad, field, words = IMPOSSIBLE[case]
    run = cli("replay", "--strict", "-", input="\n".join([*PREFIX, BEFORE, bad, AFTER]))
    assert run.status == 2
    assert run.err.startswith(f"error: line 5, field '{field}': impossible event: ")
    assert words in run.err
    assert run.err.count("\n") == 1
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"]]


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_impossible_event_warns_and_skips(case: str) -> None:
    bad, field, words = IMPOSSIBLE[case]
    run = cli("replay", "-", input="\n".join([*PREFIX, BEFORE, bad, AFTER]))
    assert run.status == 0
    assert run.err.startswith(f"warning: line 5, field '{field}': skipped impossible event: ")
    assert words in run.err
    # skipped with nothing changed: the session is still ack-delayed, so m2 is pushed
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"], ["m2"]]


def test_skipped_event_is_explained() -> None:
    bad = IMPOSSIBLE["second bind"][0]
    run = cli("replay", "--explain", "-", input="\n".join([*PREFIX, bad]))
    assert run.out.splitlines()[-1].startswith("# line 4 session-bind: skipped: ")


def test_impossible_first_event_leaves_no_session_behind() -> None:
    """A rejected event for an unknown session must not create it."""
    run = cli("replay", "-", input="\n".join([
        ev("smacks-ack-received", session=PHONE), ev("session-bind", session=PHONE)]))
    assert run.status == 0
    assert run.err.count("warning") == 1
