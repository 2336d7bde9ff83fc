"""Dedup across paths, disable, error counting and max_devices eviction, on both engines."""

from __future__ import annotations

from replaykit import BOB, DESKTOP, PHONE, PUSH, TABLET, msg

NODE = "node-phone"


# --- dedup: a stanza is pushed to a registration at most once, whatever the path --------------

def test_dedup_ack_delayed_then_hibernation_then_offline(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.ack_delayed(PHONE, "m1") == [(NODE, "a/ack-delayed", ("m1",), True)]
    assert bob.queued(PHONE, "m2") == [(NODE, "a/queued", ("m2",), True)]
    assert bob.hibernate(PHONE, "m1", "m2", "m3") == [(NODE, "a/hibernation-start", ("m3",), True)]
    assert bob.queued(PHONE, "m2") == []
    bob.destroyed(PHONE)
    for mid in ("m1", "m2", "m3"):
        assert bob.offline(mid) == []
        assert bob.archive(mid) == []
    assert bob.offline("m4") == [(NODE, "c/offline", ("m4",), True)]


def test_dedup_archive_then_offline(bob) -> None:
    bob.online(PHONE, node="x")
    bob.destroyed(PHONE)
    assert bob.archive("m1") == [(NODE, "b/archive", ("m1",), True)]
    assert bob.offline("m1") == []


def test_dedup_is_per_registration(bob) -> None:
    bob.online(PHONE, DESKTOP, node="x")
    bob.destroyed(DESKTOP)
    assert bob.hibernate(PHONE, "m1") == [(NODE, "a/hibernation-start", ("m1",), True)]
    assert bob.offline("m1") == [("node-desktop", "c/offline", ("m1",), True)]
    assert bob.offline("m1") == []


def test_stanzas_without_id_are_never_deduplicated(bob) -> None:
    bob.online(PHONE, node="x")
    bob.hibernate(PHONE)
    anonymous = msg(None, "no id")
    assert bob.queued(PHONE, anonymous) == [(NODE, "a/queued", (None,), True)]
    assert bob.queued(PHONE, anonymous) == [(NODE, "a/queued", (None,), True)]
    assert bob.offline(anonymous) == [(NODE, "c/offline", (None,), True)]


def test_dedup_within_one_queue_pushes_only_the_new_ones(bob) -> None:
    bob.online(PHONE, node="x")
    bob.ack_delayed(PHONE, "m1", "m2")
    assert bob.hibernate(PHONE, "m2", "m3", "m1", "m4") == [
        (NODE, "a/hibernation-start", ("m3", "m4"), True)]


def test_dedup_window_forgets_the_oldest(make) -> None:
    bob = make(dedup_window=2)
    bob.online(PHONE, node="x")
    bob.hibernate(PHONE)
    for mid in ("m1", "m2", "m3"):
        bob.queued(PHONE, mid)
    assert bob.offline("m3") == []
    assert bob.offline("m1") == [(NODE, "c/offline", ("m1",), True)]  # forgotten


def test_re_enabled_after_disable_is_a_new_registration(bob) -> None:
    bob.online(PHONE, node="x")
    bob.hibernate(PHONE, "m1")
    bob.resume(PHONE)
    bob.disable(PHONE, NODE)
    bob.enable(PHONE, NODE)
    assert bob.ack_delayed(PHONE, "m1") == [(NODE, "a/ack-delayed", ("m1",), True)]


def test_important_push_keeps_the_last_important_sender_and_body(bob) -> None:
    bob.online(PHONE, node="x")
    state = "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    bob.ack_delayed(PHONE, msg("m1", "first"), msg("m2", "second"),
                    msg("cs1", inner=state, frm="carol@example.org/x"))
    push = bob.pushes[-1]
    assert (push.important, push.body, push.sender) == (True, "second", "alice@example.org/pc")
    bob.queued(PHONE, msg("cs2", inner=state, frm="carol@example.org/x"))
    push = bob.pushes[-1]
    assert (push.stanzas, push.important, push.body, push.sender) == (
        ("cs2",), False, None, "carol@example.org/x")


# --- push-disable ----------------------------------------------------------------------------

def test_disable_with_node_removes_exactly_that_registration(bob) -> None:
    bob.online(PHONE)
    bob.enable(PHONE, "n1")
    bob.online(DESKTOP)
    bob.enable(DESKTOP, "n2")
    bob.disable(PHONE, "n1")
    assert (bob.reg("n1").state, bob.reg("n2").state) == ("disabled", "bound")
    assert bob.reg("n1").reason == "disabled by the client"
    assert bob.world.session(PHONE).binding is None


def test_disable_without_node_removes_every_registration_with_that_jid(bob) -> None:
    bob.online(PHONE, DESKTOP, node="x")
    bob.online(TABLET)
    bob.enable(TABLET, "node-tablet", jid="push.other.net")
    bob.disable(DESKTOP)
    states = {r.node: r.state for r in bob.world.registrations_of(BOB)}
    assert states == {"node-phone": "disabled", "node-desktop": "disabled",
                      "node-tablet": "bound"}
    assert bob.offline("m1") == [("node-tablet", "c/offline", ("m1",), True)]


def test_disable_by_another_session_unbinds_the_bound_one(bob) -> None:
    """Fixes Prosody Q4: the session that held the registration no longer pushes."""
    bob.online(PHONE, node="x")
    bob.online(DESKTOP)
    bob.hibernate(PHONE)
    bob.disable(DESKTOP, NODE)
    assert bob.world.session(PHONE).binding is None
    assert bob.queued(PHONE, "m1") == []


def test_disable_matching_nothing_changes_nothing(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.disable(PHONE, "other-node") == []
    assert bob.disable(PHONE, NODE, jid="push.other.net") == []
    assert bob.reg(NODE).state == "bound"
    assert bob.hibernate(PHONE, "m1") == [(NODE, "a/hibernation-start", ("m1",), True)]


def test_disable_only_touches_the_users_own_registrations(bob) -> None:
    bob.online(PHONE, node="x")
    carol = "carol@example.org/pc"
    bob.bind(carol)
    bob.disable(carol, NODE)
    assert bob.reg(NODE).state == "bound"


# --- error counting ---------------------------------------------------------------------------

def _orphaned(bob) -> None:
    bob.online(PHONE, node="x")
    bob.destroyed(PHONE)


def test_wait_errors_are_never_counted(make) -> None:
    bob = make(max_errors=2)
    _orphaned(bob)
    for _ in range(5):
        bob.result(NODE, False, "wait")
    reg = bob.reg(NODE)
    assert (reg.state, reg.errors) == ("orphaned", 0)
    assert bob.offline("m1") == [(NODE, "c/offline", ("m1",), True)]


def test_max_errors_in_a_row_disable_with_the_reason_kept(make) -> None:
    bob = make(max_errors=3)
    _orphaned(bob)
    bob.result(NODE, False, "cancel")
    bob.result(NODE, False, "wait")
    bob.result(NODE, False, None)  # an error without a type counts
    assert (bob.reg(NODE).state, bob.reg(NODE).errors) == ("orphaned", 2)
    bob.result(NODE, False, "auth")
    reg = bob.reg(NODE)
    assert reg.state == "disabled"
    assert reg.reason == "max_errors: 3 counted errors in a row, last auth"
    assert reg.disabled_at == 1_700_000_000.0
    entry = bob.world.audit_log[-1]
    assert (entry.node, entry.action, entry.reason) == (NODE, "disable", reg.reason)
    assert bob.offline("m1") == []


def test_a_success_resets_the_count(make) -> None:
    bob = make(max_errors=2)
    _orphaned(bob)
    bob.result(NODE, False, "cancel")
    bob.result(NODE, True)
    assert bob.reg(NODE).errors == 0
    bob.result(NODE, False, "modify")
    assert bob.reg(NODE).state == "orphaned"
    bob.result(NODE, False, "continue")
    assert bob.reg(NODE).state == "disabled"


def test_error_disable_unbinds_the_session(make) -> None:
    bob = make(max_errors=1)
    bob.online(PHONE, node="x")
    bob.hibernate(PHONE)
    bob.queued(PHONE, "m1")
    bob.result(NODE, False, "cancel")
    assert bob.reg(NODE).state == "disabled"
    assert bob.world.session(PHONE).binding is None
    assert bob.queued(PHONE, "m2") == []


def test_late_result_on_disabled_registration_changes_nothing(make) -> None:
    bob = make(max_errors=1)
    _orphaned(bob)
    bob.result(NODE, False, "cancel")
    reason = bob.reg(NODE).reason
    bob.result(NODE, True)
    bob.result(NODE, False, "cancel")
    reg = bob.reg(NODE)
    assert (reg.state, reg.reason, reg.errors) == ("disabled", reason, 1)


def test_re_enable_after_error_disable_starts_from_zero(make) -> None:
    bob = make(max_errors=2)
    bob.online(PHONE, node="x")
    bob.result(NODE, False, "cancel")
    bob.result(NODE, False, "cancel")
    bob.enable(PHONE, NODE)
    reg = bob.reg(NODE)
    assert (reg.state, reg.errors, reg.reason) == ("bound", 0, None)


def test_re_enable_of_an_enabled_registration_keeps_counting(make) -> None:
    """Clients re-enable on every connect; that must not hide a failing app server."""
    bob = make(max_errors=2)
    bob.online(PHONE, node="x")
    bob.result(NODE, False, "cancel")
    bob.enable(PHONE, NODE)
    assert bob.reg(NODE).errors == 1
    bob.result(NODE, False, "cancel")
    assert bob.reg(NODE).state == "disabled"


# --- max_devices eviction ---------------------------------------------------------------------

def test_enabling_one_more_evicts_the_least_recently_enabled(make) -> None:
    bob = make(max_devices=2)
    bob.online(PHONE, DESKTOP, TABLET, node="x")
    states = {r.node: r.state for r in bob.world.registrations_of(BOB)}
    assert states == {"node-phone": "disabled", "node-desktop": "bound", "node-tablet": "bound"}
    reg = bob.reg("node-phone")
    assert reg.reason == "evicted: more than max_devices=2"
    assert bob.world.audit_log[-1].action == "evict"
    assert bob.world.session(PHONE).binding is None
    assert bob.hibernate(PHONE, "m1") == []  # Prosody Q3: the evicted one kept pushing


def test_re_enable_refreshes_recency(make) -> None:
    bob = make(max_devices=2)
    bob.online(PHONE, DESKTOP, node="x")
    bob.enable(PHONE, "node-phone")
    bob.online(TABLET, node="x")
    states = {r.node: r.state for r in bob.world.registrations_of(BOB)}
    assert states == {"node-phone": "bound", "node-desktop": "disabled", "node-tablet": "bound"}


def test_orphaned_registrations_count_and_disabled_ones_do_not(make) -> None:
    bob = make(max_devices=2)
    bob.online(PHONE, node="x")
    bob.destroyed(PHONE)  # orphaned: still counts
    bob.online(DESKTOP, node="x")
    bob.disable(DESKTOP, "node-desktop")  # disabled: no longer counts
    bob.online(TABLET, node="x")
    states = {r.node: r.state for r in bob.world.registrations_of(BOB)}
    assert states == {"node-phone": "orphaned", "node-desktop": "disabled",
                      "node-tablet": "bound"}
    bob.enable(TABLET, "node-tablet-2")  # tablet's own node-tablet is released, then counted
    states = {r.node: r.state for r in bob.world.registrations_of(BOB)}
    assert states["node-phone"] == "disabled"


def test_eviction_is_per_user(make) -> None:
    bob = make(max_devices=1)
    bob.online(PHONE, node="x")
    bob.bind("carol@example.org/pc")
    bob.enable("carol@example.org/pc", "node-carol", jid=PUSH)
    assert bob.reg(NODE).state == "bound"
    assert bob.reg("node-carol", user="carol@example.org").state == "bound"
