"""Contract v2 part 1 (issue 13), row by row of the model's new transitions, on both engines
(the generated tables and the python-statemachine reference): d/groupchat, e/call, e/call-end,
csi-state, chat settings and the echo rule, push-remote-disable, tick."""

from __future__ import annotations

from typing import Any

import pytest
from replaykit import BOB, PHONE, PUSH, WORLDS, Driver, msg, stanza

from pushrules.model.config import Config
from pushrules.model.world import DeclaredRejection

DESKTOP = f"{BOB}/desktop"
ROOM = "room@muc.example.org"
JMI = "urn:xmpp:jingle-message:0"


@pytest.fixture(params=sorted(WORLDS))
def make(request: pytest.FixtureRequest) -> Any:
    def build(**options: Any) -> Driver:
        return Driver(WORLDS[request.param](Config(**options)))
    return build


def gc(mid: str, inner: str = "<body>hi all</body>", frm: str = f"{ROOM}/alice") -> str:
    return msg(mid, frm=frm, type_="groupchat", inner=inner)


def call(mid: str, kind: str, call_id: str, frm: str = "alice@example.org/pc",
         type_: str = "chat") -> str:
    return msg(mid, frm=frm, type_=type_, inner=f"<{kind} xmlns='{JMI}' id='{call_id}'/>")


def groupchat(d: Driver, item: str) -> list[Any]:
    return d.send("message/bare/groupchat", user=BOB, stanza=stanza(item))


def csi(d: Driver, state: str, s: str = PHONE) -> list[Any]:
    return d.send("csi-state", session=s, state=state)


def settings(d: Driver, notify: str, nick: str | None = None, chat: str = ROOM) -> list[Any]:
    return d.send("chat-settings", user=BOB, chat=chat, notify=notify, nick=nick)


def urgent(d: Driver) -> list[tuple[str, str, bool]]:
    return [(p.node, p.rule, p.urgent) for p in d.pushes]


# --- d/groupchat ------------------------------------------------------------------------------

def test_groupchat_reaches_every_registration_bound_orphaned_not_disabled(make: Any) -> None:
    d = make().online(PHONE, DESKTOP, node="x")
    d.bind(f"{BOB}/tablet")
    d.enable(f"{BOB}/tablet", "node-tablet")
    d.destroyed(DESKTOP)  # node-desktop orphaned
    d.disable(f"{BOB}/tablet", "node-tablet")
    assert groupchat(d, gc("g1")) == [("node-phone", "d/groupchat", ("g1",), True),
                                      ("node-desktop", "d/groupchat", ("g1",), True)]
    assert groupchat(d, gc("g1")) == []  # dedup


# --- e/call -------------------------------------------------------------------------------------

def test_call_skips_an_active_csi_active_session_and_rings_every_other(make: Any) -> None:
    d = make().online(PHONE, DESKTOP, node="x")
    d.bind(f"{BOB}/tablet")
    d.enable(f"{BOB}/tablet", "node-tablet")
    d.destroyed(f"{BOB}/tablet")  # orphaned
    csi(d, "inactive", DESKTOP)
    d.offline(call("p1", "propose", "c1"))
    assert urgent(d) == [("node-desktop", "e/call", True), ("node-tablet", "e/call", True)]


def test_csi_lasts_through_ack_delay_and_a_csi_active_ack_delayed_app_is_rung(make: Any) -> None:
    d = make().online(PHONE, node="x")
    csi(d, "inactive")
    d.into(PHONE, "ack_delayed")
    csi(d, "active")  # possible while ack-delayed; the session is not active: rung anyway
    d.archive(call("p1", "propose", "c1", ))
    assert urgent(d) == [("node-phone", "e/call", True)]
    assert d.world.session(PHONE).csi == "active"


def test_propose_queued_to_a_hibernated_session_is_rule_a_there_e_elsewhere(make: Any) -> None:
    d = make().online(PHONE, DESKTOP, node="x")
    d.into(PHONE, "hibernated")
    csi(d, "inactive", DESKTOP)
    d.queued(PHONE, call("p1", "propose", "c1"))
    assert urgent(d) == [("node-phone", "a/queued", False), ("node-desktop", "e/call", True)]
    d.queued(DESKTOP, call("r1", "retract", "c1"))  # the end goes where the propose went
    assert urgent(d)[2:] == [("node-phone", "e/call-end", False),
                             ("node-desktop", "e/call-end", False)]


def test_an_outgoing_propose_in_the_archive_rings_nothing(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    d.archive(msg("p1", to="alice@example.org", inner=f"<propose xmlns='{JMI}' id='c1'/>"))
    d.archive(msg("r1", to="alice@example.org", inner=f"<retract xmlns='{JMI}' id='c1'/>"))
    assert d.pushes == []


def test_a_nested_propose_is_no_call(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.offline(msg("p1", inner=f"<x xmlns='urn:example'><propose xmlns='{JMI}' id='c1'/></x>"))
    assert urgent(d) == [("node-phone", "c/offline", False)]


def test_calls_ignore_settings_but_not_the_echo(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    settings(d, "never", nick="bobby")
    groupchat(d, call("p1", "propose", "c1", frm=f"{ROOM}/alice", type_="groupchat"))
    groupchat(d, call("p2", "propose", "c2", frm=f"{ROOM}/bobby", type_="groupchat"))
    assert [(p.stanzas, p.rule, p.urgent) for p in d.pushes] == [(("p1",), "e/call", True)]


# --- e/call-end ---------------------------------------------------------------------------------

def test_call_end_only_where_the_propose_went_and_an_unknown_call_nowhere(make: Any) -> None:
    d = make().online(PHONE, DESKTOP, node="x")
    csi(d, "inactive")
    d.offline(call("p1", "propose", "c1"))  # rings the phone only
    d.offline(call("r9", "retract", "c9"))
    d.offline(call("j1", "reject", "c1"))
    assert urgent(d) == [("node-phone", "e/call", True), ("node-phone", "e/call-end", False)]


def test_a_registration_disabled_and_enabled_again_is_in_no_call(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    d.offline(call("p1", "propose", "c1"))
    d.send("push-remote-disable", user=BOB, jid=PUSH, node="node-phone")
    d.offline(call("r1", "retract", "c1"))  # disabled: never pushed
    d.online(PHONE, node="x")
    d.offline(call("r2", "retract", "c1"))  # enabled anew: no call
    assert urgent(d) == [("node-phone", "e/call", True)]


def test_call_end_queued_to_a_hibernated_session_that_was_not_rung_goes_nowhere(make: Any
                                                                                ) -> None:
    d = make().online(PHONE, node="x")
    d.into(PHONE, "hibernated")
    d.queued(PHONE, call("r1", "retract", "c1"))
    assert d.pushes == []


# --- csi-state ----------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["hibernated", "offline"])
def test_csi_of_a_session_without_a_link_is_impossible(make: Any, state: str) -> None:
    d = make().online(PHONE, node="x")
    if state == "hibernated":
        d.into(PHONE, "hibernated")
    else:
        d.destroyed()
    with pytest.raises(DeclaredRejection):
        csi(d, "inactive")


def test_bind_resets_csi(make: Any) -> None:
    d = make().online(PHONE, node="x")
    csi(d, "inactive")
    d.destroyed()
    d.online(PHONE, node="x")
    d.offline(call("p1", "propose", "c1"))
    assert d.pushes == []  # active and CSI-active again: the app rings itself


# --- chat settings and the echo rule ------------------------------------------------------------

MENTION = "<body>hey</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='{}'/>"
REPLY = "<reply xmlns='urn:xmpp:reply:0' to='{}' id='x'/><body>re</body>"


@pytest.mark.parametrize(("inner", "pushed"), [
    ("<body>bob, look</body>", False),  # the body is never searched
    (MENTION.format(f"xmpp:{BOB}"), True),
    (MENTION.format(f"xmpp:{ROOM}/bobby"), True),
    (MENTION.format(f"xmpp:{BOB}/phone"), False),
    (MENTION.format(f"{BOB}"), False),  # no xmpp: scheme
    (MENTION.replace("type='mention'", "type='data'").format(f"xmpp:{BOB}"), False),
    (REPLY.format(BOB), True),
    (REPLY.format(f"{BOB}/tablet"), True),
    (REPLY.format(f"{ROOM}/bobby"), True),
    (REPLY.format(f"{ROOM}/alice"), False),
    (f"<body>x</body><x xmlns='urn:e'>{MENTION.format(f'xmpp:{BOB}')}</x>", False),
])
def test_on_mention(make: Any, inner: str, pushed: bool) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    settings(d, "on-mention", nick="bobby")
    assert bool(groupchat(d, gc("g1", inner))) is pushed


def test_never_blocks_every_path_and_does_not_mark_pushed(make: Any) -> None:
    d = make().online(PHONE, node="x")
    settings(d, "never", chat="alice@example.org")
    d.into(PHONE, "hibernated")
    assert d.queued(PHONE, msg("m1")) == []
    settings(d, "always", chat="alice@example.org")
    assert d.queued(PHONE, msg("m1")) == [("node-phone", "a/queued", ("m1",), True)]


def test_echo_never_pushed_and_without_a_nick_no_echo(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    settings(d, "always", nick="bobby")
    assert groupchat(d, gc("g1", frm=f"{ROOM}/bobby")) == []
    settings(d, "always")  # replaces the whole setting, nick included
    assert groupchat(d, gc("g1", frm=f"{ROOM}/bobby")) != []


@pytest.mark.parametrize("default", ["always", "on-mention", "never"])
def test_groupchat_default_applies_to_groupchat_only(make: Any, default: str) -> None:
    d = make(groupchat_default=default).online(PHONE, node="x")
    d.destroyed()
    assert bool(groupchat(d, gc("g1"))) is (default == "always")
    assert d.offline(msg("m1")) != []  # a chat message follows always


# --- push-remote-disable and tick ---------------------------------------------------------------

def test_remote_disable_bound_orphaned_disabled_and_unknown(make: Any) -> None:
    d = make().online(PHONE, DESKTOP, node="x")
    d.destroyed(DESKTOP)
    for node in ("node-phone", "node-desktop", "node-phone", "node-unknown"):
        assert d.send("push-remote-disable", user=BOB, jid=PUSH, node=node) == []
    assert d.reg("node-phone").state == "disabled"
    assert d.reg("node-phone").reason.startswith("remote")
    assert d.reg("node-desktop").state == "disabled"
    assert d.world.session(PHONE).binding is None
    assert d.offline(msg("m1")) == []


def test_tick_changes_nothing_and_times_reach_push_lines(make: Any) -> None:
    d = make().online(PHONE, node="x")
    d.destroyed()
    assert d.send("tick", at=5) == []
    d.offline(msg("m1"))
    assert d.pushes[-1].at == 5 and d.pushes[-1].to_json()["at"] == 5


def test_explain_says_why_a_muted_chat_a_non_mention_and_an_echo_were_not_pushed() -> None:
    from replaykit import EXAMPLES, cli

    run = cli("replay", "--explain", str(EXAMPLES / "v2" / "groupchat-settings.jsonl"))
    assert run.status == 0, run.err
    notes = {int(line.split()[2]): line for line in run.out.splitlines()
             if line.startswith("# line ")}
    assert "the setting for room@muc.example.org is never [chat/settings]" in notes[9]
    assert "is on-mention and it does not mention bob@example.org [chat/settings]" in notes[11]
    assert "g5" in notes[14] and "does not mention" in notes[14]  # a nested reference
    assert "echo of bob@example.org's own message" in notes[15] and "[chat/echo]" in notes[15]
    assert "no push" in notes[15]
