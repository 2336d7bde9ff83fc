"""The push rules (a), (b), (c) and the bookkeeping rules of shared/spec/events.md, through the
embedding API, on both engines (the `make`/`bob` fixtures run each test on the generated
runtime and on the python-statemachine reference)."""

from __future__ import annotations

import pytest
from replaykit import DESKTOP, PHONE, PUSH, TABLET, msg

from pushrules.model.world import ImpossibleEvent

NODE = "node-phone"


def only(node: str, rule: str, *ids: str | None, important: bool = True) -> list[tuple]:
    return [(node, rule, ids, important)]


# --- rule (a) --------------------------------------------------------------------------------

def test_a_ack_delayed_pushes_the_unacked_queue_as_one_push(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.queued(PHONE, "m1") == []
    assert bob.ack_delayed(PHONE, "m1", "m2") == only("node-phone", "a/ack-delayed", "m1", "m2")
    assert bob.state(PHONE) == "ack_delayed"


def test_a_hibernation_start_pushes_the_unacked_queue(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.hibernate(PHONE, "m1", "m2") == only(NODE, "a/hibernation-start", "m1", "m2")
    assert bob.state(PHONE) == "hibernated"


@pytest.mark.parametrize("into", ["ack_delayed", "hibernated"])
def test_a_queued_pushes_each_stanza_while_not_acking(bob, into: str) -> None:
    bob.online(PHONE, node="x").into(PHONE, into)
    assert bob.queued(PHONE, "m1") == only(NODE, "a/queued", "m1")
    assert bob.queued(PHONE, "m2") == only(NODE, "a/queued", "m2")


def test_a_active_session_is_never_pushed(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.queued(PHONE, "m1") == []
    assert bob.acked(PHONE) == []  # a routine ack while active changes nothing
    assert bob.state(PHONE) == "active"


@pytest.mark.parametrize("back", ["smacks-ack-received", "smacks-hibernation-end"])
def test_a_ack_or_resume_makes_active_and_stops_pushes(bob, back: str) -> None:
    bob.online(PHONE, node="x")
    if back == "smacks-ack-received":
        bob.ack_delayed(PHONE, "m1")
    else:
        bob.hibernate(PHONE, "m1")
    assert bob.send(back, session=PHONE) == []
    assert bob.state(PHONE) == "active"
    assert bob.queued(PHONE, "m2") == []


def test_a_session_without_registration_is_never_pushed(bob) -> None:
    bob.online(DESKTOP)
    assert bob.ack_delayed(DESKTOP, "m1") == []
    assert bob.queued(DESKTOP, "m2") == []
    assert bob.hibernate(DESKTOP, "m1", "m2", "m3") == []
    assert bob.queued(DESKTOP, "m4") == []


def test_a_pushes_only_the_bound_registration(bob) -> None:
    bob.online(PHONE, DESKTOP, node="x")
    assert bob.hibernate(PHONE, "m1") == only("node-phone", "a/hibernation-start", "m1")
    assert bob.queued(PHONE, "m2") == only("node-phone", "a/queued", "m2")


def test_a_empty_queue_pushes_nothing(bob) -> None:
    bob.online(PHONE, node="x")
    assert bob.ack_delayed(PHONE) == []
    assert bob.hibernate(PHONE) == []


# --- rule (b) --------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["active", "ack_delayed", "hibernated"])
def test_b_archive_skips_registrations_bound_to_a_live_session(bob, state: str) -> None:
    bob.online(PHONE, node="x").into(PHONE, state)
    assert bob.archive("m1") == []


def test_b_archive_pushes_registrations_without_live_session(bob) -> None:
    bob.online(PHONE, DESKTOP, node="x")
    bob.destroyed(PHONE)
    assert bob.archive("m1") == only("node-phone", "b/archive", "m1")
    bob.destroyed(DESKTOP)
    assert bob.archive("m2") == [("node-phone", "b/archive", ("m2",), True),
                                 ("node-desktop", "b/archive", ("m2",), True)]


def test_b_archive_wakes_nobody_for_an_outgoing_copy(bob) -> None:
    """for_user must be the recipient (business_rules.markdown (b))."""
    bob.online(PHONE, node="x")
    bob.destroyed(PHONE)
    outgoing = msg("o1", to="alice@example.org", frm="bob@example.org/desktop")
    assert bob.archive(outgoing) == []
    assert bob.archive(msg("m1", to=PHONE)) == only(NODE, "b/archive", "m1")  # full JID to bob


def test_b_archive_for_another_user_wakes_none_of_bobs(bob) -> None:
    bob.online(PHONE, node="x")
    bob.destroyed(PHONE)
    carol = "carol@example.org"
    assert bob.archive(msg("c1", to=carol), user=carol) == []


def test_b_a_registration_moved_off_a_live_session_is_reached(bob) -> None:
    """A session holds one registration: enabling another one releases the first."""
    bob.online(PHONE, node="x")
    bob.enable(PHONE, "node-phone-2")
    assert bob.reg("node-phone").state == "orphaned"
    assert bob.archive("m1") == only("node-phone", "b/archive", "m1")


# --- rule (c) --------------------------------------------------------------------------------

def test_c_offline_pushes_every_enabled_registration(bob) -> None:
    bob.online(PHONE, DESKTOP, TABLET, node="x")
    bob.hibernate(PHONE)
    bob.destroyed(TABLET)
    assert bob.offline("m1") == [("node-phone", "c/offline", ("m1",), True),
                                 ("node-desktop", "c/offline", ("m1",), True),
                                 ("node-tablet", "c/offline", ("m1",), True)]


def test_c_offline_for_a_user_without_registration_pushes_nothing(bob) -> None:
    assert bob.offline("m1") == []
    bob.online(PHONE)
    assert bob.offline("m2") == []


# --- a disabled or removed registration is never pushed to ------------------------------------

def test_disabled_registration_is_never_pushed_on_any_path(bob) -> None:
    bob.online(PHONE, node="x")
    bob.disable(PHONE, NODE)
    assert bob.ack_delayed(PHONE, "m1") == []
    assert bob.queued(PHONE, "m2") == []
    assert bob.hibernate(PHONE, "m1", "m2") == []
    assert bob.archive("m3") == []
    bob.destroyed(PHONE)
    assert bob.archive("m4") == []
    assert bob.offline("m5") == []
    assert bob.reg(NODE).state == "disabled"


# --- push-enable: create or replace, bind, last enable wins ------------------------------------

def test_enable_binds_the_registration_to_the_session(bob) -> None:
    bob.online(PHONE)
    bob.enable(PHONE, NODE, secret="first")
    reg = bob.reg(NODE)
    assert (reg.state, reg.session, reg.options) == ("bound", PHONE, {"secret": "first"})
    bob.enable(PHONE, NODE, secret="second")  # replaces the publish-options
    assert bob.reg(NODE).options == {"secret": "second"}
    assert bob.world.session(PHONE).binding == ("bob@example.org", PUSH, NODE)


def test_last_enable_wins_one_session_per_registration(bob) -> None:
    """Fixes Prosody's double pushes: two sessions enabling the same (jid, node)."""
    bob.online(PHONE, DESKTOP)
    bob.enable(PHONE, "shared")
    bob.enable(DESKTOP, "shared")
    assert bob.reg("shared").session == DESKTOP
    assert bob.world.session(PHONE).binding is None
    assert bob.hibernate(PHONE, "m1") == []
    assert bob.hibernate(DESKTOP, "m1") == only("shared", "a/hibernation-start", "m1")


def test_enable_while_hibernated_or_unbound_is_impossible(bob) -> None:
    with pytest.raises(ImpossibleEvent):
        bob.enable(PHONE, NODE)  # no session bound
    bob.online(PHONE)
    bob.hibernate(PHONE)
    with pytest.raises(ImpossibleEvent):
        bob.enable(PHONE, NODE)
    assert bob.world.registration(("bob@example.org", PUSH, NODE)) is None


# --- session-destroyed ------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["active", "ack_delayed", "hibernated"])
def test_destroy_keeps_the_registration_stored(bob, state: str) -> None:
    bob.online(PHONE, node="x").into(PHONE, state)
    assert bob.destroyed(PHONE) == []
    assert bob.world.session(PHONE) is None
    reg = bob.reg(NODE)
    assert (reg.state, reg.session) == ("orphaned", None)
    bob.bind(PHONE)  # the same full JID can bind again; it is not bound to the registration
    assert bob.ack_delayed(PHONE, "m1") == []
    bob.enable(PHONE, NODE)
    assert bob.reg(NODE).state == "bound"
    assert bob.queued(PHONE, "m2") == only(NODE, "a/queued", "m2")
