"""shared/spec/events.md through `pushrules replay`: every row of the event table, the trace
format (comments, blank lines, extra fields, stdin), the output lines, --set and --explain."""

from __future__ import annotations

import json

import pytest
from replaykit import BOB, PHONE, PUSH, cli, msg

from pushrules.model.events import EVENTS

# The contract's event table: name -> its fields (optional ones marked "?").
CONTRACT = {
    "session-bind": ["session"],
    "push-enable": ["session", "jid", "node", "secret?"],
    "push-disable": ["session", "jid", "node?"],
    "smacks-ack-delayed": ["session", "queue"],
    "smacks-ack-received": ["session"],
    "smacks-hibernation-start": ["session", "queue"],
    "smacks-hibernation-end": ["session"],
    "stanza-queued": ["session", "stanza"],
    "session-destroyed": ["session"],
    "archive-message-added": ["for_user", "stanza"],
    "message/offline/handle": ["user", "stanza"],
    "push-result": ["user", "jid", "node", "ok", "error_type?"],
    # version 2
    "message/bare/groupchat": ["user", "stanza"],
    "csi-state": ["session", "state"],
    "chat-settings": ["user", "chat", "notify", "nick?"],
    "push-remote-disable": ["user", "jid", "node"],
    "tick": ["at"],
}


def test_model_declares_exactly_the_contract_events() -> None:
    declared = {
        spec.name: [f.name + ("" if f.required else "?") for f in spec.fields
                    if f.name != "publish_options"  # an extension: more publish-options
                    and (f.name, f.required) != ("at", False)]  # v2: any event may carry at
        for spec in EVENTS
    }
    assert declared == CONTRACT
    assert all(any(f.name == "at" for f in spec.fields) for spec in EVENTS)


def ev(name: str, **fields: object) -> str:
    return json.dumps({"event": name, **fields})


def line(node: str, rule: str, *ids: str | None, important: bool = True) -> str:
    return json.dumps({"user": BOB, "jid": PUSH, "node": node, "rule": rule,
                       "stanzas": list(ids), "important": important})


def replay(*events: str, args: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    run = cli("replay", "-", *args, input="\n".join(events) + "\n")
    return run.status, run.out.splitlines(), run.err


BIND = ev("session-bind", session=PHONE)
ENABLE = ev("push-enable", session=PHONE, jid=PUSH, node="n1", secret="hunter2")


def Q(mid: str) -> str:  # noqa: N802 - reads like the stanza it stands for
    return msg(mid)


ROOM = "room@muc.example.org"


def GC(mid: str, frm: str = f"{ROOM}/alice", inner: str = "<body>hi all</body>") -> str:  # noqa: N802
    return msg(mid, frm=frm, type_="groupchat", inner=inner)


def CALL(mid: str, kind: str, call_id: str) -> str:  # noqa: N802
    return msg(mid, inner=f"<{kind} xmlns='urn:xmpp:jingle-message:0' id='{call_id}'/>")


# Each row of the contract's table: events after bind+enable, and the output they give.
ROWS = {
    "session-bind": ([ev("push-disable", session=PHONE, jid=PUSH),
                      ev("session-destroyed", session=PHONE), BIND,
                      ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")])], []),
    "push-enable": ([ev("smacks-hibernation-start", session=PHONE, queue=[Q("m1")])],
                    [line("n1", "a/hibernation-start", "m1")]),
    "push-disable": ([ev("push-disable", session=PHONE, jid=PUSH, node="n1"),
                      ev("message/offline/handle", user=BOB, stanza=Q("m1"))], []),
    "smacks-ack-delayed": ([ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1"), Q("m2")])],
                           [line("n1", "a/ack-delayed", "m1", "m2")]),
    "smacks-ack-received": ([ev("smacks-ack-delayed", session=PHONE, queue=[]),
                             ev("smacks-ack-received", session=PHONE),
                             ev("stanza-queued", session=PHONE, stanza=Q("m1"))], []),
    "smacks-hibernation-start": ([ev("smacks-hibernation-start", session=PHONE,
                                     queue=[Q("m1")])],
                                 [line("n1", "a/hibernation-start", "m1")]),
    "smacks-hibernation-end": ([ev("smacks-hibernation-start", session=PHONE, queue=[]),
                                ev("smacks-hibernation-end", session=PHONE),
                                ev("stanza-queued", session=PHONE, stanza=Q("m1"))], []),
    "stanza-queued": ([ev("stanza-queued", session=PHONE, stanza=Q("m0")),
                       ev("smacks-hibernation-start", session=PHONE, queue=[]),
                       ev("stanza-queued", session=PHONE, stanza=Q("m1"))],
                      [line("n1", "a/queued", "m1")]),
    "session-destroyed": ([ev("session-destroyed", session=PHONE),
                           ev("archive-message-added", for_user=BOB, stanza=Q("m1"))],
                          [line("n1", "b/archive", "m1")]),
    "archive-message-added": ([ev("archive-message-added", for_user=BOB, stanza=Q("m0")),
                               ev("session-destroyed", session=PHONE),
                               ev("archive-message-added", for_user=BOB, stanza=Q("m1"))],
                              [line("n1", "b/archive", "m1")]),
    "message/offline/handle": ([ev("message/offline/handle", user=BOB, stanza=Q("m1"))],
                               [line("n1", "c/offline", "m1")]),
    "push-result": ([ev("push-result", user=BOB, jid=PUSH, node="n1", ok=False,
                        error_type="cancel"),
                     ev("message/offline/handle", user=BOB, stanza=Q("m1"))], []),
    # version 2
    "message/bare/groupchat": ([ev("message/bare/groupchat", user=BOB, stanza=GC("g1"))],
                               [line("n1", "d/groupchat", "g1")]),
    "csi-state": ([ev("csi-state", session=PHONE, state="inactive"),
                   ev("stanza-queued", session=PHONE, stanza=CALL("p1", "propose", "c1"))],
                  [line("n1", "e/call", "p1")[:-1] + ', "urgent": true}']),
    "chat-settings": ([ev("chat-settings", user=BOB, chat=ROOM, notify="never"),
                       ev("message/bare/groupchat", user=BOB, stanza=GC("g1"))], []),
    "push-remote-disable": ([ev("push-remote-disable", user=BOB, jid=PUSH, node="n1"),
                             ev("message/offline/handle", user=BOB, stanza=Q("m1"))], []),
    "tick": ([ev("tick", at=5), ev("message/offline/handle", user=BOB, stanza=Q("m1"))],
             [line("n1", "c/offline", "m1")[:-1] + ', "at": 5}']),
}


def test_every_contract_row_has_a_case() -> None:
    assert set(ROWS) == set(CONTRACT)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_contract_row(row: str) -> None:
    events, expected = ROWS[row]
    args = ("--set", "max_errors=1") if row == "push-result" else ()
    status, out, err = replay(BIND, ENABLE, *events, args=args)
    assert (status, err) == (0, "")
    assert out == expected


def test_output_line_is_exactly_the_contracts_shape() -> None:
    status, out, _ = replay(BIND, ENABLE, ev("smacks-ack-delayed", session=PHONE,
                                             queue=[Q("m1")]))
    assert out == ['{"user": "bob@example.org", "jid": "push.example.net", "node": "n1", '
                   '"rule": "a/ack-delayed", "stanzas": ["m1"], "important": true}']


def test_secret_never_appears_in_any_output() -> None:
    events = [BIND, ENABLE, ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")]),
              ev("push-enable", session=PHONE, jid=PUSH, node="n2", secret=["hunter2"])]
    for args in ((), ("--explain",), ("--set", "include_body=true", "--set",
                                      "include_sender=true")):
        status, out, err = replay(*events, args=args)
        assert status == 2  # the last enable's secret has the wrong type
        assert out and "hunter2" not in "\n".join(out) + err
        assert "line 4, field 'secret'" in err


def test_comments_blank_lines_and_extra_fields_are_ignored() -> None:
    text = "\n".join([
        "# a comment", "", "   ", "  # an indented comment",
        json.dumps({"event": "session-bind", "session": PHONE, "later": {"x": 1}}),
        json.dumps({"event": "push-enable", "session": PHONE, "jid": PUSH, "node": "n1",
                    "unknown": [1, 2]}),
        ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")]),
    ])
    run = cli("replay", "-", "--explain", input=text)
    assert run.status == 0
    assert [x.split(":")[0] for x in run.out.splitlines() if x.startswith("#")] == [
        "# line 5 session-bind", "# line 6 push-enable", "# line 7 smacks-ack-delayed"]


def test_a_file_argument_and_stdin_give_the_same(tmp_path) -> None:
    text = "\n".join([BIND, ENABLE, ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")])])
    path = tmp_path / "t.jsonl"
    path.write_text(text, encoding="utf-8")
    from_file = cli("replay", str(path))
    assert from_file.out == cli("replay", "-", input=text).out
    assert from_file.out.count("\n") == 1


def test_explain_says_why_nothing_was_pushed() -> None:
    run = cli("replay", "-", "--explain", input="\n".join([
        BIND, ev("stanza-queued", session=PHONE, stanza=Q("m1")),
        ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")]),
        ev("message/offline/handle", user=BOB, stanza=Q("m1"))]))
    lines = run.out.splitlines()
    assert lines[1].startswith("# line 2 stanza-queued: no push: ")
    assert "the open app gets the stanza itself" in lines[1]
    assert lines[2].startswith("# line 3 smacks-ack-delayed: no push: ")
    assert "no registration is bound to this session" in lines[2]
    assert lines[3] == ("# line 4 message/offline/handle: no push: bob@example.org has no push "
                        "registration: nothing to push")


def test_set_options_change_decisions_and_output() -> None:
    events = [BIND, ENABLE, ev("session-destroyed", session=PHONE),
              ev("push-result", user=BOB, jid=PUSH, node="n1", ok=False, error_type="auth"),
              ev("message/offline/handle", user=BOB, stanza=Q("m1"))]
    assert len(replay(*events)[1]) == 1
    assert replay(*events, args=("--set", "max_errors=1"))[1] == []
    _, out, _ = replay(BIND, ENABLE, ev("smacks-ack-delayed", session=PHONE, queue=[Q("m1")]),
                       args=("--set", "include_body=true", "--set", "include_sender=yes"))
    assert json.loads(out[0])["body"] == "hi"
    assert json.loads(out[0])["sender"] == "alice@example.org/pc"


def test_set_max_devices() -> None:
    enable = [ev("push-enable", session=PHONE, jid=PUSH, node=f"n{i}") for i in (1, 2, 3)]
    offline = ev("message/offline/handle", user=BOB, stanza=Q("m1"))
    _, out, _ = replay(BIND, *enable, offline, args=("--set", "max_devices=2"))
    assert [json.loads(x)["node"] for x in out] == ["n2", "n3"]


@pytest.mark.parametrize("setting, needle", [
    ("max_errors=many", "max_errors"), ("max_errors=0", "at least 1"),
    ("include_body=perhaps", "include_body"), ("colour=blue", "unknown option 'colour'"),
    ("max_devices", "not name=value"),
])
def test_bad_set_is_a_usage_error(setting: str, needle: str) -> None:
    run = cli("replay", "-", "--set", setting, input=BIND)
    assert run.status == 2
    assert needle in run.err
    assert run.out == ""
