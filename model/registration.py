"""The per-registration machine: lifecycle, rules (b) and (c), error counting, eviction."""

from __future__ import annotations

from statemachine import Event, State, StateMachine

from .bridge import Callbacks
from .records import DUE_FIELDS, TIMER_NAMES
from .rules import tag

NEVER_DISABLED = "a disabled registration is never pushed to"
PROBE_WHY = ("retried, and the rules would push the stanza to it were it enabled: one stanza, "
             "by the rule of this path, as a probe")
NOT_RETRIED = "only a registration disabled for counted errors is retried"
# Each disabled row below is exclusive of the probe row beside it (its guards the probe row's
# negated), so at most one row is enabled (the checker's `deterministic`), not first-match.


class Registration(Callbacks, StateMachine):  # type: ignore[misc]
    """One push registration (user, jid, node). ``absent``: never enabled."""

    absent = State(initial=True)
    bound = State()
    orphaned = State()
    disabled = State()

    enable = Event(
        tag(absent.to(bound, on=["store_registration", "reset_errors"])
            | disabled.to(bound, on=["store_registration", "reset_errors"]),
            "reg/enable", "a new registration starts bound, with no errors")
        | tag(bound.to.itself(internal=True, on="store_registration")
              | orphaned.to(bound, on="store_registration"),
              "reg/enable",
              "re-enable replaces the publish-options (clients re-enable on every connect); "
              "the error count goes on"),
        name="enable",
    )
    unbind = Event(
        tag(bound.to(orphaned, on="release_session"), "reg/orphan",
            "its session is gone or bound elsewhere: the registration is orphaned")
        | tag(disabled.to.itself(internal=True, on="release_probe_session"), "reg/retry",
              "disabled to be retried, its session is gone or holds another registration: "
              "rule a probes it no more"),
        name="unbind",
    )
    disable = Event(
        tag(bound.to(disabled, on="disable_by_client")
            | orphaned.to(disabled, on="disable_by_client"),
            "reg/disable", "the client disabled it: never pushed again")
        | tag(disabled.to.itself(internal=True, cond="probing", on="end_probing_by_client"),
              "reg/retry", "the client disabled a registration being retried: the probing "
              "ends"),
        name="disable",
    )
    evict = Event(
        tag(bound.to(disabled, on="evict_registration")
            | orphaned.to(disabled, on="evict_registration"),
            "reg/evict", "one more than max_devices: the least recently enabled goes"),
        name="evict",
    )
    # A timer event (TIMER_EVENTS): raised by a clock, not by a server event.
    expire = Event(
        tag(orphaned.to(disabled, on="disable_for_expiry"), "reg/expire",
            "bound to no live session for orphan_ttl seconds: disabled with the reason expired"),
        name="expire",
    )
    push_session = Event(
        tag(bound.to.itself(internal=True, on="send_push"), "dedup",
            "rule (a) for the bound session: push what this registration has not had yet")
        | tag(disabled.to.itself(internal=True, cond="probe_ready", on="send_probe"),
              "reg/probe", "retried, and its session would push by rule a: one stanza as a probe")
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/retry",
              "waiting for retry_after or for the probe's push-result: nothing is pushed"),
        name="push-session",
    )
    push_archive = Event(
        tag(orphaned.to.itself(internal=True, cond="addressed_to_user", on="send_push"),
            "b/archive", "archived for a user whose device has no live session: wake it")
        | tag(orphaned.to.itself(internal=True, unless="addressed_to_user"), "b/archive",
              "an outgoing message archived for its sender: the sender is not woken")
        | tag(bound.to.itself(internal=True), "b/archive",
              "bound to a live session: rule (a) covers it, the archive path does not push")
        | tag(disabled.to.itself(internal=True, cond=["probe_ready", "addressed_to_user"],
                                 on="send_probe"), "reg/probe", PROBE_WHY)
        | tag(disabled.to.itself(internal=True, cond="probe_ready", unless="addressed_to_user"),
              "reg/probe", "retried, but an outgoing copy wakes no device of its sender: no "
              "probe")
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/disable",
              NEVER_DISABLED),
        name="archive-message-added",
    )
    push_offline = Event(
        tag(bound.to.itself(internal=True, on="send_push")
            | orphaned.to.itself(internal=True, on="send_push"),
            "c/offline", "stored offline: every registration of the user is woken")
        | tag(disabled.to.itself(internal=True, cond="probe_ready", on="send_probe"),
              "reg/probe", PROBE_WHY)
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/disable",
              NEVER_DISABLED),
        name="message/offline/handle",
    )
    push_groupchat = Event(
        tag(bound.to.itself(internal=True, on="send_push")
            | orphaned.to.itself(internal=True, on="send_push"),
            "d/groupchat", "a groupchat to the user's bare JID reaches no session: every "
            "registration of the user is woken")
        | tag(disabled.to.itself(internal=True, cond="probe_ready", on="send_probe"),
              "reg/probe", PROBE_WHY)
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/disable",
              NEVER_DISABLED),
        name="message/bare/groupchat",
    )
    push_call = Event(
        tag(bound.to.itself(internal=True, cond="ringing_app"), "e/call",
            "bound to an active, CSI-active session: the open app rings the call itself")
        | tag(bound.to.itself(internal=True, cond="in_pushed_queue", unless="ringing_app"),
              "e/call", "the proposal is in this session's smacks queue: rule a pushes it")
        | tag(bound.to.itself(internal=True, cond="outgoing_copy",
                              unless=["ringing_app", "in_pushed_queue"]),
              "e/call", "an outgoing proposal archived for its caller: nothing rings")
        | tag(bound.to.itself(internal=True, unless=["ringing_app", "in_pushed_queue",
                                                     "outgoing_copy"], on="send_push"),
              "e/call", "a call must ring now: wake this device at once (urgent)")
        | tag(orphaned.to.itself(internal=True, cond="outgoing_copy"), "e/call",
              "an outgoing proposal archived for its caller: nothing rings")
        | tag(orphaned.to.itself(internal=True, unless="outgoing_copy", on="send_push"),
              "e/call", "a call must ring now and no live session has this device: wake it "
              "at once (urgent)")
        | tag(disabled.to.itself(internal=True, cond="probe_ready", unless="outgoing_copy",
                                 on="send_probe"), "reg/probe", PROBE_WHY)
        | tag(disabled.to.itself(internal=True, cond=["probe_ready", "outgoing_copy"]),
              "reg/probe", "retried, but an outgoing proposal rings nothing: no probe")
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/disable",
              NEVER_DISABLED),
        name="call-propose",
    )
    push_call_end = Event(
        tag(bound.to.itself(internal=True, cond="call_pushed_here", unless="outgoing_copy",
                            on="send_push")
            | orphaned.to.itself(internal=True, cond="call_pushed_here", unless="outgoing_copy",
                                 on="send_push"),
            "e/call-end", "this device was rung for the call: stop it (not urgent)")
        | tag(bound.to.itself(internal=True, unless="call_pushed_here")
              | orphaned.to.itself(internal=True, unless="call_pushed_here"),
              "e/call-end", "this device was not rung for the call: nothing to stop")
        | tag(bound.to.itself(internal=True, cond=["call_pushed_here", "outgoing_copy"])
              | orphaned.to.itself(internal=True, cond=["call_pushed_here", "outgoing_copy"]),
              "e/call-end", "an outgoing call end archived for its sender: nothing to stop")
        | tag(disabled.to.itself(internal=True, cond=["probe_ready", "call_pushed_here"],
                                 unless="outgoing_copy", on="send_probe"), "reg/probe", PROBE_WHY)
        | tag(disabled.to.itself(internal=True, cond="probe_ready", unless="call_pushed_here"),
              "reg/probe", "retried, but it was not rung for the call: nothing to stop, no "
              "probe")
        | tag(disabled.to.itself(internal=True, cond=["probe_ready", "call_pushed_here",
                                                      "outgoing_copy"]),
              "reg/probe", "retried, but an outgoing call end stops nothing: no probe")
        | tag(disabled.to.itself(internal=True, unless="probe_ready"), "reg/disable",
              NEVER_DISABLED),
        name="call-end",
    )
    remote_disable = Event(
        tag(bound.to(disabled, on="disable_remotely")
            | orphaned.to(disabled, on="disable_remotely"),
            "reg/remote-disable", "the push service revoked the node: never pushed again "
            "until enabled anew")
        | tag(disabled.to.itself(internal=True, cond="probing", on="end_probing"),
              "reg/retry", "the push service revoked a node being retried: the probing ends")
        | tag(disabled.to.itself(internal=True, unless="probing"), "reg/remote-disable",
              "already disabled: a routine no-op, like a late push-result"),
        name="push-remote-disable",
    )
    push_result = Event(
        tag(bound.to.itself(internal=True, cond="result_ok", on="reset_errors")
            | orphaned.to.itself(internal=True, cond="result_ok", on="reset_errors"),
            "errors/count", "a success resets the error count")
        | tag(bound.to.itself(internal=True, cond="result_wait")
              | orphaned.to.itself(internal=True, cond="result_wait"),
              "errors/count", "a wait error is transient: retried, never counted")
        | tag(bound.to.itself(internal=True, cond=["counted_error", "below_max_errors"],
                              on="count_error")
              | orphaned.to.itself(internal=True, cond=["counted_error", "below_max_errors"],
                                   on="count_error"),
              "errors/count", "a counted error below max_errors: keep the registration")
        | tag(bound.to(disabled, cond="counted_error", unless="below_max_errors",
                       on=["count_error", "disable_for_errors"])
              | orphaned.to(disabled, cond="counted_error", unless="below_max_errors",
                            on=["count_error", "disable_for_errors"]),
              "errors/count", "max_errors counted errors in a row: disable, keeping the reason")
        | tag(disabled.to(orphaned, cond=["probe_sent", "result_ok"], on="enable_after_probe"),
              "reg/retry", "the probe succeeded: enabled again, bound to no session")
        | tag(disabled.to.itself(internal=True, cond=["probe_sent", "result_wait"],
                                 on="probe_again"),
              "reg/retry", "a wait error for the probe is transient: still probing")
        | tag(disabled.to.itself(internal=True, cond=["probe_sent", "counted_error"],
                                 on="retry_later"),
              "reg/retry", "a counted error for the probe: disabled again, the wait starts over")
        | tag(disabled.to.itself(internal=True, unless="probe_sent"), "errors/count",
              "a late answer for a disabled registration changes nothing"),
        name="push-result",
    )
    # Timer events (TIMER_EVENTS): raised by the world's clock (model/world.py run_due).
    flush = Event(
        tag(bound.to.itself(internal=True, on="send_held")
            | orphaned.to.itself(internal=True, on="send_held"),
            "burst/flush", "the burst window since the last push ended: the held stanzas the "
            "rules would still push go as one push"),
        name="held-push-due",
    )
    retry = Event(
        tag(disabled.to.itself(internal=True, on="ready_to_probe"), "reg/retry",
            "retry_after seconds since the disable for counted errors: the next stanza is a "
            "probe"),
        name="retry-due",
    )


TIMER_EVENTS: dict[str, str] = {"flush": "burst_window", "expire": "orphan_ttl",
                                 "retry": "retry_after"}
"""Registration events raised by a clock (with the option that sets its time) rather than by a
contract event, in the order they go when due at the same time (a held push before an
expiry): the world's due queue raises them from the events' ``at`` (model/world.py
``run_due``), and a store whose orphan TTL fired (Redis) has the engine fire ``expire``. The
bounded checker raises ``expire`` with ``--expiry`` and all of them with ``--time``
(extract.py ``MachineIR.timers`` and ``clock_timers``)."""

assert tuple(TIMER_EVENTS) == tuple(DUE_FIELDS)  # one order: records.py DUE_FIELDS
assert {event: getattr(Registration, event).name for event in TIMER_EVENTS} == TIMER_NAMES

UNKNOWN = "no such registration was ever enabled"
NOT_ENABLED = "the registration is not enabled"

REJECTIONS: dict[tuple[str, str], str] = {
    ("absent", "unbind"): UNKNOWN,
    ("orphaned", "unbind"): "the registration is already bound to no session",
    ("absent", "disable"): UNKNOWN,
    ("absent", "evict"): UNKNOWN,
    ("disabled", "evict"): NOT_ENABLED,
    ("absent", "push_session"): UNKNOWN,
    ("orphaned", "push_session"): "no session is bound to it",
    ("absent", "push_archive"): UNKNOWN,
    ("absent", "push_offline"): UNKNOWN,
    ("absent", "push_groupchat"): UNKNOWN,
    ("absent", "push_call"): UNKNOWN,
    ("absent", "push_call_end"): UNKNOWN,
    ("absent", "remote_disable"): "an unknown registration is never fired: the world treats "
                                  "its remote disable as a routine no-op",
    ("absent", "push_result"): "no push was ever sent to an unknown registration",
    ("absent", "expire"): UNKNOWN,
    ("bound", "expire"): "bound to a live session: its orphan TTL is not running",
    ("disabled", "expire"): NOT_ENABLED,
    ("absent", "flush"): UNKNOWN,
    ("disabled", "flush"): "the pushes held for a disabled registration were discarded",
    ("absent", "retry"): UNKNOWN,
    ("bound", "retry"): NOT_RETRIED,
    ("orphaned", "retry"): NOT_RETRIED,
}
