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
    # version 2 fields
    "bad notify value": (ev("chat-settings", user=BOB, chat="room@muc.example.org",
                            notify="mentions"), "notify", "'mentions' is not one of always"),
    "notify not a string": (ev("chat-settings", user=BOB, chat="room@muc.example.org",
                               notify=True), "notify", "must be a string"),
    "chat not a bare JID": (ev("chat-settings", user=BOB, chat="room@muc.example.org/bobby",
                               notify="never"), "chat", "not a bare JID"),
    "missing notify": (ev("chat-settings", user=BOB, chat="room@muc.example.org"), "notify",
                       "missing"),
    "unknown CSI state": (ev("csi-state", session=PHONE, state="background"), "state",
                          "'background' is not one of active, inactive"),
    "CSI for a bare JID": (ev("csi-state", session=BOB, state="active"), "session",
                           "not a full JID"),
    "at not a number": (ev("smacks-ack-received", session=PHONE, at="10:15"), "at",
                        "must be a number"),
    "at a boolean": (ev("tick", at=True), "at", "must be a number"),
    "tick without at": (ev("tick"), "at", "missing"),
    "at going back": (ev("tick", at=-1), "at", "earlier than the previous event's 0"),
    "groupchat stanza not XML": (ev("message/bare/groupchat", user=BOB, stanza="<message"),
                                 "stanza", "not well-formed XML"),
    "remote disable, user a full JID": (ev("push-remote-disable", user=PHONE, jid=PUSH,
                                           node="n1"), "user", "not a bare JID"),
    "remote disable without node": (ev("push-remote-disable", user=BOB, jid=PUSH), "node",
                                    "missing"),
}


def test_at_going_back_after_a_later_time_names_the_line() -> None:
    lines = [*PREFIX, ev("tick", at=10), BEFORE, ev("smacks-ack-received", session=PHONE, at=9.5),
             AFTER]
    run = cli("replay", "-", input="\n".join(lines) + "\n")
    assert run.status == 2
    assert run.err.startswith("error: line 6, field 'at': 9.5 is earlier than the previous "
                              "event's 10"), run.err
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"]]


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


# --- hostile input: every one is one line's clean error, exit 2, never a traceback ------------

DEEP = "[" * 1000 + "]" * 1000
HOSTILE = {
    "JSON nested 1,000 deep": ('{"event": "session-bind", "x": ' + DEEP + "}", None,
                               "nested deeper than 32"),
    "JSON object nested deep": ('{"a":' * 5000 + "1" + "}" * 5000, None, "nested deeper"),
    "4,301-digit integer": ('{"event": "session-bind", "session": "' + PHONE + '", "n": '
                            + "9" * 4301 + "}", None, "a number of 4301 digits"),
    "NaN": ('{"event": "session-bind", "session": "' + PHONE + '", "n": NaN}', None,
            "NaN is not a JSON number"),
    "DTD attribute default sets an id": (ev("stanza-queued", session=PHONE, stanza=(
        "<!DOCTYPE message [<!ATTLIST message id CDATA 'evil'>]>"
        "<message xmlns='jabber:client'><body>hi</body></message>")), "stanza", "a DTD"),
    "processing instruction": (ev("stanza-queued", session=PHONE, stanza=(
        "<message xmlns='jabber:client' id='m2'><?php x?><body>hi</body></message>")),
        "stanza", "a processing instruction"),
    "forged end marker": (ev("stanza-queued", session=PHONE,
                             stanza='<message id="a"/><pushrules-stanza-end>'),
                          "stanza", "not well-formed XML"),
    "foreign namespace": (ev("stanza-queued", session=PHONE, stanza=(
        "<message xmlns='urn:example:not-xmpp' id='m2'><body>hi</body></message>")),
        "stanza", "in namespace 'urn:example:not-xmpp' is not a stanza"),
    "lone surrogate in a stanza": ('{"event": "stanza-queued", "session": "' + PHONE +
                                   '", "stanza": "<message id=\'m2\'>\\ud800</message>"}',
                                   "stanza", "lone surrogate"),
    "over-long id": (ev("stanza-queued", session=PHONE, stanza=msg("x" * 2000)), "stanza",
                     "id too long"),
    "double @ in session": (ev("session-bind", session="bob@@x.org/phone"), "session",
                            "not a valid JID"),
    "space in localpart": (ev("session-bind", session="bo b@example.org/phone"), "session",
                           "not a valid JID"),
    "3,000-char localpart": (ev("session-bind", session="a" * 3000 + "@example.org/p"),
                             "session", "longer than 1023 bytes"),
    "NUL in user": (ev("message/offline/handle", user="bo\x00b@example.org", stanza=msg("m2")),
                    "user", "not a valid JID"),
    "bad for_user": (ev("archive-message-added", for_user="@example.org", stanza=msg("m2")),
                     "for_user", "not a valid JID"),
    "push jid": (ev("push-enable", session=PHONE, jid="not a jid <>@@", node="n2"), "jid",
                 "not a valid JID"),
    "push jid in a result": (ev("push-result", user=BOB, jid="a@@b", node="n1", ok=True),
                             "jid", "not a valid JID"),
    "NUL in node": (ev("push-enable", session=PHONE, jid=PUSH, node="n\x002"), "node",
                    "which XML cannot carry"),
    "empty node": (ev("push-disable", session=PHONE, jid=PUSH, node=""), "node",
                   "must not be empty"),
    "over-long node": (ev("push-enable", session=PHONE, jid=PUSH, node="n" * 1025), "node",
                       "too long: 1025 characters"),
    "control character in secret": (ev("push-enable", session=PHONE, jid=PUSH, node="n2",
                                       secret="a\x07b"), "secret", "which XML cannot carry"),
    "NUL in a publish option": (ev("push-enable", session=PHONE, jid=PUSH, node="n2",
                                   publish_options={"endpoint": "x\x00"}),
                                "publish_options['endpoint']", "which XML cannot carry"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_line_is_a_clean_error(case: str) -> None:
    bad, field, words = HOSTILE[case]
    run = cli("replay", "-", input="\n".join([*PREFIX, BEFORE, bad, AFTER]) + "\n")
    assert run.status == 2, run.err
    where = "line 5" + (f", field {field!r}" if field else "")
    assert run.err.startswith(f"error: {where}: "), run.err
    assert words in run.err, run.err
    assert run.err.count("\n") == 1 and len(run.err) < 500, "one short error, nothing else"
    assert "Traceback" not in run.err
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"]]


def test_bad_utf8_mid_line_names_the_byte() -> None:
    bad = b'{"event": "session-bind", "session": "bob@example.org/\xc3\x28"}'
    data = ("\n".join([*PREFIX, BEFORE]) + "\n").encode() + bad + b"\n"
    run = cli("replay", "-", input=data)
    assert run.status == 2
    byte = bad.index(b"\xc3") + 1
    assert run.err.startswith(f"error: line 5: not UTF-8: byte {byte} (0xc3)"), run.err


def test_over_long_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch) -> None:
    from pushrules.runtime import replay as replay_module
    from pushrules.runtime import trace

    monkeypatch.setattr(trace, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(replay_module, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    long_line = ev("stanza-queued", session=PHONE, stanza=msg("m2", "x" * 2000))
    path.write_text("\n".join([*PREFIX, BEFORE, long_line, AFTER]) + "\n")
    run = cli("replay", str(path))
    assert run.status == 2
    assert run.err.startswith("error: line 5: line too long: more than 1000 bytes"), run.err
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"]]
    # exactly at the limit (newline not counted) is still a line
    fits = ev("stanza-queued", session=PHONE, stanza=msg("m2", ""))
    fits = fits.replace("<body></body>", "<body>" + "x" * (1000 - len(fits)) + "</body>")
    assert len(fits) == 1000
    path.write_text("\n".join([*PREFIX, BEFORE, fits]) + "\r\n")
    run = cli("replay", str(path))
    assert run.status == 0, run.err
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"], ["m2"]]


def test_valid_jids_of_every_form_are_accepted() -> None:
    """RFC 7622 allows more than user@host/resource: IDN domains, IP literals, spaces and
    slashes in the resource; the push service is often a bare domain."""
    sessions = ["bob@example.org/ph one", "bob@bücher.example/r/with/slash", "bob@[::1]/r",
                "bob@192.0.2.1/r"]
    lines = []
    for session in sessions:
        lines += [ev("session-bind", session=session),
                  ev("push-enable", session=session, jid="push.example.net", node="n1"),
                  ev("push-enable", session=session, jid="app@push.example.net/x", node="n2")]
    run = cli("replay", "-", input="\n".join(lines) + "\n")
    assert run.status == 0, run.err
    assert run.err == ""
