"""The per-session machine: XEP-0198 states and push rule (a)."""

from __future__ import annotations

from statemachine import Event, State, StateMachine

from .bridge import Callbacks
from .rules import tag

NO_PUSH_UNBOUND = "no registration is bound to this session: there is no device to wake"


class PushSession(Callbacks, StateMachine):  # type: ignore[misc]
    """One session, from bind to destroy. ``offline`` is also the state of a session not yet
    bound: both mean no live session with this full JID."""

    offline = State(initial=True)
    active = State()
    ack_delayed = State()
    hibernated = State()

    session_bind = Event(
        tag(offline.to(active), "session/lifecycle",
            "a resource was bound: the session is live and the app is open"),
        name="session-bind",
    )
    push_enable = Event(
        tag(active.to.itself(internal=True, on="bind_registration")
            | ack_delayed.to.itself(internal=True, on="bind_registration"),
            "reg/enable", "the client enabled push: the registration is stored and bound here"),
        name="push-enable",
    )
    push_disable = Event(
        tag(active.to.itself(internal=True, on="remove_registrations")
            | ack_delayed.to.itself(internal=True, on="remove_registrations"),
            "reg/disable", "the client disabled push: its registrations are never pushed again"),
        name="push-disable",
    )
    smacks_ack_delayed = Event(
        tag(active.to(ack_delayed, cond="bound", on="push_queue"), "a/ack-delayed",
            "the app stopped answering acks: wake it for what it has not acked")
        | tag(active.to(ack_delayed, unless="bound"), "session/no-push", NO_PUSH_UNBOUND),
        name="smacks-ack-delayed",
    )
    smacks_ack_received = Event(
        tag(ack_delayed.to(active), "session/lifecycle",
            "the app acked: it is awake again, nothing to push")
        | tag(active.to.itself(internal=True), "session/lifecycle",
              "a routine ack from an active session: nothing changes"),
        name="smacks-ack-received",
    )
    smacks_hibernation_start = Event(
        tag(active.to(hibernated, cond="bound", on="push_queue")
            | ack_delayed.to(hibernated, cond="bound", on="push_queue"),
            "a/hibernation-start",
            "the connection is gone: wake the app for its unacked queue (dedup skips what the "
            "delayed ack already pushed)")
        | tag(active.to(hibernated, unless="bound") | ack_delayed.to(hibernated, unless="bound"),
              "session/no-push", NO_PUSH_UNBOUND),
        name="smacks-hibernation-start",
    )
    smacks_hibernation_end = Event(
        tag(hibernated.to(active), "session/lifecycle",
            "the session resumed: the app is connected, pushes stop"),
        name="smacks-hibernation-end",
    )
    stanza_queued = Event(
        tag(active.to.itself(internal=True), "session/no-push",
            "the session is connected and acking: the open app gets the stanza itself")
        | tag(ack_delayed.to.itself(internal=True, cond="bound", unless="ends_call",
                                     on="push_stanza")
              | hibernated.to.itself(internal=True, cond="bound", unless="ends_call",
                                     on="push_stanza"),
              "a/queued", "the app cannot receive it now: wake it for this stanza")
        | tag(ack_delayed.to.itself(internal=True, cond=["bound", "ends_call"])
              | hibernated.to.itself(internal=True, cond=["bound", "ends_call"]),
              "e/call-end", "a call's end goes only where its proposal was pushed: rule e "
              "fans it out, not the queue")
        | tag(ack_delayed.to.itself(internal=True, unless="bound")
              | hibernated.to.itself(internal=True, unless="bound"),
              "session/no-push", NO_PUSH_UNBOUND),
        name="stanza-queued",
    )
    csi_state = Event(
        tag(active.to.itself(internal=True, on="set_csi")
            | ack_delayed.to.itself(internal=True, on="set_csi"),
            "session/csi", "the client said whether the app is in the foreground; it lasts "
            "through ack delay, hibernation and resumption"),
        name="csi-state",
    )
    session_destroyed = Event(
        tag(active.to(offline, cond="bound", on="orphan_registration")
            | ack_delayed.to(offline, cond="bound", on="orphan_registration")
            | hibernated.to(offline, cond="bound", on="orphan_registration"),
            "reg/orphan",
            "the session is gone; its registration stays stored, now reached by rules b and c")
        | tag(active.to(offline, unless="bound") | ack_delayed.to(offline, unless="bound")
              | hibernated.to(offline, unless="bound"),
              "session/lifecycle", "the session is gone; it held no registration"),
        name="session-destroyed",
    )


LIVE = "the session is already live: a second bind of the same full JID needs a destroy first"
NOT_LIVE = "there is no live session with this full JID"
NO_LINK = "a hibernated session has no connection to send or ack anything on"

REJECTIONS: dict[tuple[str, str], str] = {
    ("active", "session_bind"): LIVE,
    ("ack_delayed", "session_bind"): LIVE,
    ("hibernated", "session_bind"): LIVE,
    ("hibernated", "push_enable"): NO_LINK,
    ("offline", "push_enable"): NOT_LIVE,
    ("hibernated", "push_disable"): NO_LINK,
    ("offline", "push_disable"): NOT_LIVE,
    ("ack_delayed", "smacks_ack_delayed"): "smacks fires ack-delayed once per unanswered <r/>",
    ("hibernated", "smacks_ack_delayed"): NO_LINK,
    ("offline", "smacks_ack_delayed"): NOT_LIVE,
    ("hibernated", "smacks_ack_received"): NO_LINK,
    ("offline", "smacks_ack_received"): NOT_LIVE,
    ("hibernated", "smacks_hibernation_start"): "the session is already hibernated",
    ("offline", "smacks_hibernation_start"): NOT_LIVE,
    ("active", "smacks_hibernation_end"): "the session is not hibernated",
    ("ack_delayed", "smacks_hibernation_end"): "the session is not hibernated",
    ("offline", "smacks_hibernation_end"): NOT_LIVE,
    ("offline", "stanza_queued"): NOT_LIVE,
    ("offline", "session_destroyed"): NOT_LIVE,
    ("hibernated", "csi_state"): NO_LINK,
    ("offline", "csi_state"): NOT_LIVE,
}
"""Every (state, event) pair with no transition, with the reason it is impossible."""
