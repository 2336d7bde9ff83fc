"""Contract v2 part 2 (issue 14): the time-based rules, row by row of the model's new
transitions and bullet by bullet of the contract's "Clarifications (v2)" on time, on both
engines (the generated tables and the python-statemachine reference); the engine API's clock;
replay's end-of-input flush and --explain; bad options."""

from __future__ import annotations

import json
from typing import Any

import pytest
from replaykit import BOB, PHONE, PUSH, WORLDS, Driver, cli, msg, stanza

from pushrules.model.config import Config
from pushrules.model.extract import extract
from pushrules.model.reference import ReferenceWorld
from pushrules.model.rules import PROBE_PATHS, TIME_RULES
from pushrules.runtime.engine import Engine

DESKTOP = f"{BOB}/desktop"
JMI = "urn:xmpp:jingle-message:0"


class Clock(Driver):
    """A Driver whose events carry ``at``; ``timed`` keeps the pushes with their times."""

    def at(self, at: float, name: str, **fields: Any) -> list[tuple[Any, ...]]:
        pushes = self.world.handle(_event(name, at=at, **fields))
        self.pushes.extend(pushes)
        return [(p.node, p.rule, p.stanzas, p.at) for p in pushes]

    def tick(self, at: float) -> list[tuple[Any, ...]]:
        return self.at(at, "tick")

    def offline_at(self, at: float, item: Any) -> list[tuple[Any, ...]]:
        return self.at(at, "message/offline/handle", user=BOB, stanza=stanza(item))

    def queued_at(self, at: float, item: Any, s: str = PHONE) -> list[tuple[Any, ...]]:
        return self.at(at, "stanza-queued", session=s, stanza=stanza(item))

    def result_at(self, at: float, node: str, ok: bool,
                  error_type: str | None = None) -> list[tuple[Any, ...]]:
        return self.at(at, "push-result", user=BOB, jid=PUSH, node=node, ok=ok,
                       error_type=error_type)

    def flush(self) -> list[tuple[Any, ...]]:
        return [(p.node, p.rule, p.stanzas, p.at) for p in self.world.flush_held()]


def _event(name: str, **fields: Any) -> Any:
    from pushrules.generated.events import EVENT_CLASSES

    return EVENT_CLASSES[name](**fields)


@pytest.fixture(params=sorted(WORLDS))
def make(request: pytest.FixtureRequest) -> Any:
    def build(**options: Any) -> Clock:
        return Clock(WORLDS[request.param](Config(**options)))
    return build


def orphaned_phone(d: Clock, at: float = 0) -> Clock:
    """bob's phone enabled push and went away: its registration is orphaned at ``at``."""
    d.at(at, "session-bind", session=PHONE)
    d.enable()
    d.destroyed()
    return d


def call(mid: str, kind: str, call_id: str) -> str:
    return msg(mid, inner=f"<{kind} xmlns='{JMI}' id='{call_id}'/>")


C = "c/offline"

# --- burst_window -----------------------------------------------------------------------------


def test_a_push_within_the_window_is_held_and_sent_when_it_ends(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    assert d.offline_at(10, "m1") == [("node-phone", C, ("m1",), 10)]
    assert d.offline_at(11, "m2") == []
    assert d.offline_at(12, "m3") == []
    assert d.reg("node-phone").hold_until == 15
    # the flush row (orphaned): the held pushes come due before the event that passed 15
    assert d.tick(16) == [("node-phone", C, ("m2", "m3"), 15)]
    assert d.reg("node-phone").held == () and d.reg("node-phone").last_sent == 15


def test_a_push_exactly_at_the_windows_end_is_sent(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    d.offline_at(10, "m1")
    assert d.offline_at(15, "m2") == [("node-phone", C, ("m2",), 15)]


def test_the_flush_row_of_a_bound_registration_rechecks_rule_a(make: Any) -> None:
    """bound --held-push-due--> bound: rule a's session is active again when due: dropped,
    not marked as pushed (the hibernation queue pushes it later)."""
    d = make(burst_window=5)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.hibernate()
    assert d.queued_at(1, "m1") == [("node-phone", "a/queued", ("m1",), 1)]
    assert d.queued_at(2, "m2") == []
    d.at(3, "smacks-hibernation-end", session=PHONE)
    assert d.tick(6) == []  # due at 6: dropped
    assert "m2" not in d.reg("node-phone").pushed
    assert d.at(7, "smacks-hibernation-start", session=PHONE, queue=(stanza("m2"),)) == [
        ("node-phone", "a/hibernation-start", ("m2",), 7)]


def test_a_held_rule_a_push_is_sent_when_its_session_is_not_active(make: Any) -> None:
    d = make(burst_window=5)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.hibernate()
    d.queued_at(1, "m1")
    d.queued_at(2, "m2")
    d.destroyed()  # bound to none when due: sent
    assert d.tick(6) == [("node-phone", "a/queued", ("m2",), 6)]


def test_a_held_rule_b_push_is_dropped_when_the_registration_is_bound_again(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    assert d.at(1, "archive-message-added", for_user=BOB, stanza=stanza("m1")) == [
        ("node-phone", "b/archive", ("m1",), 1)]
    d.at(2, "archive-message-added", for_user=BOB, stanza=stanza("m2"))
    d.offline_at(3, "m3")  # rule c: still pushed when due
    d.at(4, "session-bind", session=PHONE)
    d.enable()  # bound to a live session again: rule b would not push m2 now
    assert d.tick(6) == [("node-phone", C, ("m3",), 6)]  # rule of the first stanza still sent


def test_chat_settings_count_when_the_push_is_decided_not_when_due(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    d.at(3, "chat-settings", user=BOB, chat="alice@example.org", notify="never")
    assert d.tick(6) == [("node-phone", C, ("m2",), 6)]


def test_urgent_pushes_are_never_held_and_count_for_the_window(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    d.offline_at(10, "m1")
    d.offline_at(11, "m2")
    assert d.offline_at(13, call("p1", "propose", "c1")) == [
        ("node-phone", "e/call", ("p1",), 13)]
    assert d.pushes[-1].urgent
    assert d.tick(17) == []  # the window since the urgent push ends at 18
    assert d.tick(18) == [("node-phone", C, ("m2",), 18)]


def test_a_held_stanza_is_not_held_twice(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5))
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    d.at(3, "archive-message-added", for_user=BOB, stanza=stanza("m2"))
    assert d.tick(6) == [("node-phone", C, ("m2",), 6)]


@pytest.mark.parametrize("how", ["disable", "evict", "expire", "remote"])
def test_held_pushes_of_a_registration_gone_before_due_are_discarded(make: Any,
                                                                     how: str) -> None:
    d = make(burst_window=5, orphan_ttl=4, max_devices=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    if how != "disable":
        d.destroyed()
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    if how == "disable":
        d.disable()
    elif how == "evict":
        d.at(3, "session-bind", session=DESKTOP)
        d.enable(DESKTOP, "node-desktop")
    elif how == "remote":
        d.at(3, "push-remote-disable", user=BOB, jid=PUSH, node="node-phone")
    # (expire: orphaned at 0, orphan_ttl=4: expired at 4, before the window ends at 6)
    if how in ("disable", "remote"):  # enabled again before the held pushes were due
        d.at(4, "session-bind", session=f"{BOB}/tablet")
        d.enable(f"{BOB}/tablet", "node-phone")
    assert [p for p in d.tick(7) if p[0] == "node-phone"] == []
    assert d.flush() == []


def test_a_held_push_goes_before_an_expiry_due_at_the_same_time(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5, orphan_ttl=6))
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")  # due at 6, as is the expiry
    assert d.tick(6) == [("node-phone", C, ("m2",), 6)]
    assert d.reg("node-phone").state == "disabled"
    assert d.reg("node-phone").reason.startswith("expired")


def test_a_registration_enabled_anew_starts_with_an_empty_window(make: Any) -> None:
    d = make(burst_window=5)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.destroyed()
    d.offline_at(1, "m1")
    d.at(2, "session-bind", session=PHONE)
    d.disable()
    d.enable()
    d.destroyed()
    assert d.offline_at(3, "m2") == [("node-phone", C, ("m2",), 3)]


def test_end_of_input_sends_each_held_push_at_its_due_time(make: Any) -> None:
    d = orphaned_phone(make(burst_window=5, orphan_ttl=1))
    d.at(0, "session-bind", session=DESKTOP)
    d.enable(DESKTOP, "node-desktop")
    d.destroyed(DESKTOP)
    d.offline_at(0.5, "m1")
    d.offline_at(0.75, "m2")
    # orphan_ttl=1 would expire both at 1, but no expiry is simulated past the last event
    assert sorted(d.flush()) == [("node-desktop", C, ("m2",), 5.5),
                                 ("node-phone", C, ("m2",), 5.5)]
    assert d.world.time == 0.75


def test_without_times_pushes_carry_none_and_the_window_runs_at_0(make: Any) -> None:
    d = make(burst_window=5)
    d.bind()
    d.enable()
    d.destroyed()
    assert d.offline("m1") == [("node-phone", C, ("m1",), True)]
    assert d.offline("m2") == []
    assert d.flush() == [("node-phone", C, ("m2",), None)]


def test_once_a_time_was_given_every_later_push_carries_one(make: Any) -> None:
    d = make()
    d.bind()
    d.enable()
    d.destroyed()
    d.tick(7)
    assert d.offline("m1") == [("node-phone", C, ("m1",), True)]
    assert d.pushes[-1].at == 7


# --- orphan_ttl ---------------------------------------------------------------------------------


def test_the_expire_row_fires_from_the_clock_before_the_event(make: Any) -> None:
    d = orphaned_phone(make(orphan_ttl=10), at=5)
    assert d.reg("node-phone").expire_at == 15  # orphaned at 5: the bind's time (no `at` since)
    assert d.offline_at(14, "m1") == [("node-phone", C, ("m1",), 14)]
    assert d.offline_at(15, "m2") == []  # expired at 15, before the event at 15
    assert d.reg("node-phone").state == "disabled"


def test_a_bound_or_hibernated_registration_never_expires(make: Any) -> None:
    d = make(orphan_ttl=3)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.hibernate()  # hibernated counts as live
    d.tick(100)
    assert d.reg("node-phone").state == "bound"
    d.at(101, "session-destroyed", session=PHONE)
    d.tick(103.5)
    assert d.reg("node-phone").state == "orphaned"
    d.tick(104)
    assert d.reg("node-phone").state == "disabled"


def test_the_ttl_starts_when_the_session_enables_another_registration(make: Any) -> None:
    d = make(orphan_ttl=3)
    d.at(0, "session-bind", session=PHONE)
    d.enable(node="n1")
    d.at(5, "push-enable", session=PHONE, jid=PUSH, node="n2")
    assert d.reg("n1").expire_at == 8 and d.reg("n2").expire_at is None
    d.at(6, "push-enable", session=PHONE, jid=PUSH, node="n1")  # bound again: no expiry
    assert d.reg("n1").expire_at is None and d.reg("n2").expire_at == 9
    d.tick(8.5)
    assert d.reg("n1").state == "bound" and d.reg("n2").state == "orphaned"
    d.tick(9)
    assert d.reg("n1").state == "bound" and d.reg("n2").state == "disabled"


# --- retry_after --------------------------------------------------------------------------------


def disabled_phone(d: Clock, at: float = 2) -> Clock:
    """The phone's orphaned registration, disabled by one counted error at ``at``."""
    orphaned_phone(d)
    d.offline_at(1, "m1")
    d.result_at(at, "node-phone", False, "cancel")
    assert d.reg("node-phone").state == "disabled"
    return d


def test_the_retry_row_readies_a_probe_after_retry_after(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=10))
    assert d.reg("node-phone").retry_at == 12
    assert d.offline_at(5, "m2") == []
    assert d.reg("node-phone").probe == "waiting"
    assert d.offline_at(12, "m3") == [("node-phone", C, ("m3",), 12)]
    assert d.reg("node-phone").probe == "sent"
    assert d.offline_at(13, "m4") == []  # nothing until its push-result


def test_a_probe_is_one_stanza_the_first_of_a_queue(make: Any) -> None:
    d = make(max_errors=1, retry_after=10)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.ack_delayed(PHONE, "m1")
    d.result_at(2, "node-phone", False, "auth")  # disabled while bound: rule a still probes
    d.at(3, "smacks-ack-received", session=PHONE)
    d.at(12, "smacks-hibernation-start", session=PHONE, queue=(stanza("m2"), stanza("m3")))
    assert [(p.rule, p.stanzas) for p in d.pushes[-1:]] == [("a/hibernation-start", ("m2",))]
    assert d.queued_at(13, "m4") == []


def test_the_probe_rows_of_every_path_push_by_the_paths_rule(make: Any) -> None:
    d = make(max_errors=1, retry_after=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.destroyed()
    d.offline_at(0, call("p0", "propose", "c1"))  # the phone rang for call c1
    rules = []
    for n, (name, item) in enumerate([
            ("archive-message-added", "m1"), ("message/offline/handle", "m2"),
            ("message/bare/groupchat", msg("g1", type_="groupchat",
                                           frm="room@muc.example.org/alice")),
            ("message/offline/handle", call("p1", "propose", "c2")),
            ("message/offline/handle", call("r1", "retract", "c1"))]):
        d.result_at(10 * n + 1, "node-phone", False, "cancel")  # disabled, then ready at +1
        user_field = "for_user" if name == "archive-message-added" else "user"
        pushes = d.at(10 * n + 2, name, **{user_field: BOB, "stanza": stanza(item)})
        rules += [p[1] for p in pushes]
    assert rules == ["b/archive", "c/offline", "d/groupchat", "e/call", "e/call-end"]
    assert set(rules) == set(PROBE_PATHS.values())


def test_no_probe_for_an_outgoing_copy_in_the_archive(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=1))
    out = msg("o1", to="alice@example.org", frm=f"{BOB}/desktop")
    assert d.at(5, "archive-message-added", for_user=BOB, stanza=stanza(out)) == []
    assert d.reg("node-phone").probe == "ready"


def test_no_probe_where_the_rules_would_push_nothing_were_it_enabled(make: Any) -> None:
    """A registration ready to be probed gets no probe for a stanza the rules would not push
    to it were it enabled: the end of a call it was not rung for, the user's own call end and
    call, an outgoing copy. Each of these rows is exclusive of the probe row (the checker's
    `deterministic`, which found them overlapping). A call probes it even while the session
    it was bound to is active and CSI-active ("were it enabled" counts the binding for rule a
    only)."""
    d = make(max_errors=1, retry_after=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.ack_delayed(PHONE)
    assert d.offline_at(1, call("p0", "propose", "c1"))[0][1] == "e/call"  # the phone rang
    d.result_at(2, "node-phone", False, "cancel")
    d.acked(PHONE)  # the app is open again (active, CSI-active)
    own = {"to": "alice@example.org", "frm": DESKTOP}
    for n, (name, item) in enumerate([
            ("message/offline/handle", call("r2", "retract", "c3")),
            ("archive-message-added", msg("x1", inner=f"<reject xmlns='{JMI}' id='c1'/>",
                                          **own)),
            ("archive-message-added", msg("y1", inner=f"<propose xmlns='{JMI}' id='c4'/>",
                                          **own)),
            ("archive-message-added", msg("o1", **own))]):
        user_field = "for_user" if name == "archive-message-added" else "user"
        assert d.at(3 + n, name, **{user_field: BOB, "stanza": stanza(item)}) == []
    assert d.reg("node-phone").probe == "ready"
    assert d.offline_at(9, call("p2", "propose", "c5")) == [
        ("node-phone", "e/call", ("p2",), 9)]  # the call probes, the app open or not


def test_a_successful_probe_enables_it_orphaned_with_its_dedup_memory(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=10, orphan_ttl=50))
    d.offline_at(12, "m3")
    assert d.result_at(14, "node-phone", False, "wait") == []
    assert d.reg("node-phone").probe == "ready"  # wait: still probing
    assert d.offline_at(15, "m5") == [("node-phone", C, ("m5",), 15)]
    d.result_at(16, "node-phone", True)
    reg = d.reg("node-phone")
    assert (reg.state, reg.session, reg.errors, reg.reason, reg.probe) == (
        "orphaned", None, 0, None, None)
    assert reg.expire_at == 66  # its orphan TTL starts at the re-enabling
    assert d.offline_at(17, "m3") == []  # dedup memory kept
    assert d.offline_at(18, "m6") == [("node-phone", C, ("m6",), 18)]


def test_a_counted_error_for_the_probe_starts_the_wait_over(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=10))
    d.offline_at(12, "m3")
    d.result_at(13, "node-phone", False, None)  # no error type: counted
    reg = d.reg("node-phone")
    assert (reg.state, reg.probe, reg.retry_at) == ("disabled", "waiting", 23)
    assert d.offline_at(22, "m4") == []
    assert d.offline_at(23, "m5") == [("node-phone", C, ("m5",), 23)]


def test_a_probe_is_never_held(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=1, burst_window=100))
    assert d.offline_at(3, "m2") == [("node-phone", C, ("m2",), 3)]


def test_a_registration_being_retried_does_not_count_toward_max_devices(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=10, max_devices=1))
    d.at(3, "session-bind", session=DESKTOP)
    d.enable(DESKTOP, "node-desktop")  # the phone's does not count: nothing evicted
    assert d.reg("node-desktop").state == "bound"
    d.offline_at(12, "m2")
    d.result_at(13, "node-phone", True)  # enabled again, most recently: the desktop's goes
    assert d.reg("node-desktop").state == "disabled"
    assert d.reg("node-desktop").reason.startswith("evicted")


def test_remote_disable_of_a_registration_being_retried_ends_the_probing(make: Any) -> None:
    d = disabled_phone(make(max_errors=1, retry_after=10))
    d.at(5, "push-remote-disable", user=BOB, jid=PUSH, node="node-phone")
    assert d.reg("node-phone").probe is None
    assert d.offline_at(20, "m2") == []


def test_a_client_disable_of_a_registration_being_retried_ends_the_probing(make: Any) -> None:
    """disabled --disable[probing]--> disabled: <disable/> removes the registration, so it is
    never retried (the session it was bound to when disabled sends it)."""
    d = make(max_errors=1, retry_after=5)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.result_at(0, "node-phone", False, "cancel")
    d.disable()
    reg = d.reg("node-phone")
    assert (reg.probe, reg.retry_at, reg.reason) == (None, None, "disabled by the client")
    assert d.world.session(PHONE).binding is None
    assert d.offline_at(5, "m1") == []


@pytest.mark.parametrize("how", ["client", "evicted", "expired", "remote"])
def test_only_a_disable_for_counted_errors_is_retried(make: Any, how: str) -> None:
    d = make(max_errors=1, retry_after=1, orphan_ttl=3, max_devices=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    if how == "client":
        d.disable()
    elif how == "evicted":
        d.at(0, "session-bind", session=DESKTOP)
        d.enable(DESKTOP, "node-desktop")
    elif how == "expired":
        d.destroyed()
        d.tick(3)
    else:
        d.at(0, "push-remote-disable", user=BOB, jid=PUSH, node="node-phone")
    assert d.reg("node-phone").state == "disabled" and d.reg("node-phone").probe is None
    assert [p for p in d.offline_at(10, "m1") if p[0] == "node-phone"] == []


def test_the_probe_session_is_released_when_it_ends(make: Any) -> None:
    """disabled --unbind--> disabled: the session the registration was bound to when disabled
    is gone, so rule a probes it no more (rule c still does)."""
    d = make(max_errors=1, retry_after=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.ack_delayed(PHONE, "m1")
    d.result_at(1, "node-phone", False, "cancel")
    assert d.reg("node-phone").probe_session == PHONE
    d.at(2, "session-destroyed", session=PHONE)
    assert d.reg("node-phone").probe_session is None
    assert d.offline_at(3, "m2") == [("node-phone", C, ("m2",), 3)]


def test_a_session_enabling_the_retried_registration_again_starts_afresh(make: Any) -> None:
    d = make(max_errors=1, retry_after=1)
    d.at(0, "session-bind", session=PHONE)
    d.enable()
    d.ack_delayed(PHONE, "m1")
    d.result_at(1, "node-phone", False, "cancel")
    d.at(2, "session-bind", session=DESKTOP)
    d.enable(DESKTOP, "node-phone")  # enabled anew from another session
    reg = d.reg("node-phone")
    assert (reg.state, reg.session, reg.probe, reg.pushed) == ("bound", DESKTOP, None, {})
    assert d.world.session(PHONE).binding is None


# --- every new row is tested above ----------------------------------------------------------

ROW_TESTS = {
    ("bound", "held-push-due"): test_the_flush_row_of_a_bound_registration_rechecks_rule_a,
    ("orphaned", "held-push-due"):
        test_a_push_within_the_window_is_held_and_sent_when_it_ends,
    ("disabled", "retry-due"): test_the_retry_row_readies_a_probe_after_retry_after,
    ("disabled", "push-session"): test_a_probe_is_one_stanza_the_first_of_a_queue,
    ("disabled", "archive-message-added"):
        test_the_probe_rows_of_every_path_push_by_the_paths_rule,
    ("disabled", "message/offline/handle"): test_the_retry_row_readies_a_probe_after_retry_after,
    ("disabled", "message/bare/groupchat"):
        test_the_probe_rows_of_every_path_push_by_the_paths_rule,
    ("disabled", "call-propose"): test_the_probe_rows_of_every_path_push_by_the_paths_rule,
    ("disabled", "call-end"): test_the_probe_rows_of_every_path_push_by_the_paths_rule,
    ("disabled", "push-remote-disable"):
        test_remote_disable_of_a_registration_being_retried_ends_the_probing,
    ("disabled", "push-result"): test_a_successful_probe_enables_it_orphaned_with_its_dedup_memory,
    ("disabled", "unbind"): test_the_probe_session_is_released_when_it_ends,
    ("disabled", "disable"):
        test_a_client_disable_of_a_registration_being_retried_ends_the_probing,
}


def test_every_row_of_a_time_rule_has_its_test() -> None:
    rows = {(t.source, t.event_name) for m in extract().machines for t in m.every_transition
            if t.rule in TIME_RULES}
    assert rows == set(ROW_TESTS)


def test_every_row_of_a_time_rule_is_taken_by_these_tests() -> None:
    """Run the row tests (and the probe's other outcomes) on a reference model that records the
    rows psm took: each row of a time rule is taken by one of them."""
    taken: set[tuple[str, str, str]] = set()

    class Watching(ReferenceWorld):
        def _enter(self, ctx: Any, machine: str, name: str, source: str, target: str,
                   rule: str, why: str, event: str) -> None:
            taken.add((source, event, why))
            super()._enter(ctx, machine, name, source, target, rule, why, event)

    def make(**options: Any) -> Clock:
        return Clock(Watching(Config(**options)))

    for test in {*ROW_TESTS.values(), test_a_counted_error_for_the_probe_starts_the_wait_over,
                 test_no_probe_for_an_outgoing_copy_in_the_archive,
                 test_no_probe_where_the_rules_would_push_nothing_were_it_enabled}:
        test(make)
    rows = {(t.source, t.event, t.why) for m in extract().machines for t in m.every_transition
            if t.rule in TIME_RULES}
    assert rows and rows <= taken, rows - taken


# --- the engine API's clock -----------------------------------------------------------------


def test_advance_fires_what_is_due_and_next_due_says_when() -> None:
    engine = Engine(Config(burst_window=5, orphan_ttl=30))
    d = Clock(engine)
    orphaned_phone(d)
    assert engine.next_due() == 30  # the expiry
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    assert engine.next_due() == 6
    assert [(p.stanzas, p.at) for p in engine.advance(10)] == [(("m2",), 6)]
    assert engine.time == 10 and engine.next_due() == 30
    assert engine.advance(30) == [] and d.reg("node-phone").state == "disabled"
    assert engine.next_due() is None
    with pytest.raises(ValueError, match="earlier than the clock's 30"):
        engine.advance(29)


def test_the_due_queue_is_rebuilt_from_the_records() -> None:
    engine = Engine(Config(burst_window=5))
    d = Clock(engine)
    orphaned_phone(d)
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    engine._due.clear()  # as a world whose records a store loaded: the queue is not kept
    assert engine.next_due() is None
    engine.rebuild_due()
    assert engine.next_due() == 6
    assert [p.stanzas for p in engine.flush()] == [("m2",)]


def test_engines_agree_with_times() -> None:
    def run(cls: type) -> list[Any]:
        d = Clock(cls(Config(burst_window=2, retry_after=3, max_errors=1, orphan_ttl=20)))
        disabled_phone(d)
        d.offline_at(3, "m2")
        d.offline_at(5, "m3")
        d.result_at(6, "node-phone", True)
        d.offline_at(7, "m4")
        d.offline_at(8, "m5")
        return [p.to_json() for p in d.pushes + d.world.flush_held()]
    assert run(Engine) == run(ReferenceWorld)


# --- replay ---------------------------------------------------------------------------------


def lines(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


OFFLINE = [{"event": "session-bind", "session": PHONE, "at": 0},
           {"event": "push-enable", "session": PHONE, "jid": PUSH, "node": "n1"},
           {"event": "session-destroyed", "session": PHONE},
           {"event": "message/offline/handle", "user": BOB, "stanza": msg("m1"), "at": 1},
           {"event": "message/offline/handle", "user": BOB, "stanza": msg("m2"), "at": 2}]


def test_replay_flushes_held_pushes_at_a_malformed_line_then_exits_2() -> None:
    run = cli("replay", "-", "--set", "burst_window=5",
              input=lines(*OFFLINE) + '{"event": "tick", "at": "soon"}\n')
    assert run.status == 2
    assert run.err.startswith("error: line 6, field 'at': ")
    assert [(json.loads(x)["stanzas"], json.loads(x)["at"]) for x in run.out.splitlines()] == [
        (["m1"], 1), (["m2"], 6)]


def test_replay_flushes_held_pushes_at_a_strict_stop() -> None:
    bad = {"event": "smacks-hibernation-end", "session": PHONE, "at": 3}
    run = cli("replay", "-", "--strict", "--set", "burst_window=5",
              input=lines(*OFFLINE, bad))
    assert run.status == 2
    assert [json.loads(x)["stanzas"] for x in run.out.splitlines()] == [["m1"], ["m2"]]


def test_explain_says_why_a_push_was_held_sent_or_dropped_when_due() -> None:
    events = [{"event": "session-bind", "session": PHONE, "at": 0},
              {"event": "push-enable", "session": PHONE, "jid": PUSH, "node": "n1"},
              {"event": "smacks-hibernation-start", "session": PHONE, "queue": []},
              {"event": "stanza-queued", "session": PHONE, "stanza": msg("m1"), "at": 1},
              {"event": "stanza-queued", "session": PHONE, "stanza": msg("m2"), "at": 2},
              {"event": "smacks-hibernation-end", "session": PHONE, "at": 3},
              {"event": "tick", "at": 7},
              {"event": "message/offline/handle", "user": BOB, "stanza": msg("m3"), "at": 8},
              {"event": "message/offline/handle", "user": BOB, "stanza": msg("m4"), "at": 9}]
    run = cli("replay", "-", "--explain", "--set", "burst_window=5", input=lines(*events))
    assert run.status == 0, run.err
    out = run.out.splitlines()
    held = next(x for x in out if x.startswith("# line 5 "))
    assert "m2 held until 6" in held and "[burst/hold]" in held
    due = next(x for x in out if x.startswith("# at 6 before line 7: "))
    assert "held m2 dropped when due: its session bob@example.org/phone is active again" in due
    end = next(x for x in out if x.startswith("# at 13 at the end of input: "))
    assert "held m4 sent as one push [burst/flush]" in end
    assert json.loads(out[-1])["stanzas"] == ["m4"] and json.loads(out[-1])["at"] == 13


@pytest.mark.parametrize("value, words", [("x", "'x' is not a number of seconds"),
                                          ("-1", "must not be negative"),
                                          ("inf", "not a finite number")])
def test_a_bad_time_option_is_a_clear_error(value: str, words: str) -> None:
    for name in ("burst_window", "retry_after"):
        run = cli("replay", "-", "--set", f"{name}={value}", input="")
        assert run.status == 2 and words in run.err and name in run.err, run.err
        assert "Traceback" not in run.err


def test_time_options_parse_as_seconds() -> None:
    config = Config().with_settings({"burst_window": "2.5", "retry_after": "10",
                                     "orphan_ttl": "30"})
    assert (config.burst_window, config.retry_after, config.orphan_ttl) == (2.5, 10, 30)
    assert type(config.retry_after) is int  # whole seconds: due times print as the trace's


def test_a_stores_row_keeps_the_time_facts_and_old_rows_load_with_none_set() -> None:
    from pushrules.runtime.store.base import registration_from_row, registration_row

    engine = Engine(Config(burst_window=5, max_errors=1, retry_after=3))
    d = Clock(engine)
    orphaned_phone(d)
    d.offline_at(1, "m1")
    d.offline_at(2, "m2")
    reg = d.reg("node-phone")
    row = json.loads(json.dumps(registration_row(reg)))
    back = registration_from_row(BOB, (PUSH, "node-phone"), row)
    assert (back.held, back.hold_until, back.last_sent) == (reg.held, 6, 1)
    old = {k: v for k, v in row.items() if k not in ("held", "hold_until", "last_sent")}
    plain = registration_from_row(BOB, (PUSH, "node-phone"), old)
    assert (plain.held, plain.hold_until, plain.last_sent, plain.probe) == ((), None, None, None)
    assert set(registration_row(plain)) == {"state", "options", "session", "errors", "reason",
                                            "disabled_at", "seq", "pushed"}


def _replay_world(world: Any, text: str) -> list[Any]:
    from pushrules.model.world import ImpossibleEvent
    from pushrules.runtime.trace import read_trace

    decided: list[Any] = []
    for item in read_trace(text.splitlines()):
        try:
            decided += [p.to_json() for p in world.handle(item.event)]
        except ImpossibleEvent as exc:
            decided.append(("impossible", item.line, str(exc)))
    decided += [p.to_json() for p in world.flush_held()]
    decided += sorted(json.dumps(r.as_dict(), sort_keys=True)
                      for regs in world.users.values() for r in regs.values())
    return decided


def test_reference_model_and_generated_tables_agree_on_time_heavy_traces() -> None:
    """python-statemachine (every transition as psm takes it) against the generated tables,
    on traces where held pushes, expiries and probes happen: same pushes, same end state."""
    from hypothesis import HealthCheck, given, settings

    from tests.oracle.strategies import time_heavy_traces, time_options

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(time_heavy_traces(), time_options())
    def agree(text: str, options: dict[str, str]) -> None:
        config = Config().with_settings(options)
        engine, reference = (cls(config, clock=lambda: 1_700_000_000.0)  # audit times
                             for cls in (Engine, ReferenceWorld))
        assert _replay_world(engine, text) == _replay_world(reference, text), text

    agree()
