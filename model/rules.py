"""Rule tags and transition metadata.

Every transition carries a rule tag and a one-line rationale. Push rules come from
business_rules.markdown (a, b, c); the other tags name the bookkeeping rules of the contract.
"""

from __future__ import annotations

from typing import Any

PUSH_RULES: dict[str, str] = {
    "a/ack-delayed": "(a) push a bound session's unacked queue when its ack is delayed",
    "a/hibernation-start": "(a) push a bound session's unacked queue when it hibernates",
    "a/queued": "(a) push each stanza queued for a bound session that is ack-delayed or hibernated",
    "b/archive": "(b) push MAM-archived messages to registrations not bound to a live session",
    "c/offline": "(c) push offline-stored messages to every registration of the user",
    "d/groupchat": "(d, v2) push a groupchat message sent to the user's bare JID to every "
                   "registration of the user",
    "e/call": "(e, v2) push an XEP-0353 call proposal at once (urgent) to every registration "
              "of the user except one bound to an active, CSI-active session",
    "e/call-end": "(e, v2) push a call's retract or reject (not urgent) to exactly the "
                  "registrations that were pushed its proposal",
}

URGENT_RULES = frozenset({"e/call"})
"""Pushes by these rules are urgent: ``"urgent": true`` and a high-priority publish."""

BOOKKEEPING_RULES: dict[str, str] = {
    "session/lifecycle": "XEP-0198 session states: bind, ack, hibernate, resume, destroy",
    "session/no-push": "a session that is active or unbound is not woken",
    "reg/enable": "XEP-0357 enable: create or replace a registration and bind it to the session",
    "reg/disable": "XEP-0357 disable: remove the registration; it is never pushed again",
    "reg/orphan": "a registration outlives its session; it is then bound to no live session",
    "reg/evict": "max_devices registrations per user; the least recently enabled one is evicted",
    "reg/expire": "orphan_ttl: a registration bound to no live session for orphan_ttl seconds "
                  "is disabled with the reason expired",
    "errors/count": "wait errors are not counted; max_errors counted errors in a row disable",
    "reg/remote-disable": "(v2) XEP-0357 section 8: the push service revoked the node: the "
                          "registration is disabled with the reason remote",
    "session/csi": "(v2) XEP-0352 client state: an app that is open (CSI-active) rings a call "
                   "itself",
    "chat/settings": "(v2) XEP-0492 per-chat setting: always, on-mention (XEP-0372 mention or "
                     "XEP-0461 reply of the user) or never; calls ignore it",
    "chat/echo": "(v2) a room's echo of the user's own groupchat message (from chat/nick) is "
                 "never pushed, calls included",
    "clock": "(v2) time passes: the time-based rules (off by default) come due",
    "dedup": "a stanza is pushed to a registration at most once, whatever the path",
    "burst/hold": "(v2) burst_window: a push within burst_window seconds of the last one sent "
                  "to the registration is held (urgent pushes and probes never are)",
    "burst/flush": "(v2) burst_window: at the window's end the held stanzas go as one push, "
                   "each only if the rules would still push it then",
    "reg/retry": "(v2) retry_after: retry_after seconds after a disable for counted errors "
                 "the registration is probed once; a success enables it again",
    "reg/probe": "(v2) retry_after: the next stanza the rules would push to a registration "
                 "ready to be retried is pushed to it once, by the rule of its path",
}

ALL_RULES: dict[str, str] = {**PUSH_RULES, **BOOKKEEPING_RULES}


def tag(transitions: Any, rule: str, why: str) -> Any:
    """Attach a rule tag and a rationale to every transition of a psm TransitionList."""
    if rule not in ALL_RULES:
        raise ValueError(f"unknown rule tag {rule!r}")
    for transition in transitions:
        transition.rule = rule
        transition.why = why
    return transitions

TIME_RULES = frozenset({"burst/hold", "burst/flush", "reg/retry", "reg/probe"})
"""The rule tags of contract v2's time-based rules (issue 14): their rows are taken only with
burst_window or retry_after on, which only the checker's time bounds set (`pushrules check
--time`, with and without --v2): the other bounds list them as left to those, and their mutants
run there."""

V2_RULES = frozenset({"d/groupchat", "e/call", "e/call-end", "reg/remote-disable",
                      "session/csi", "chat/settings", "chat/echo", "clock"}) | TIME_RULES
"""The rule tags contract version 2 added (issues 13 and 14); the bounded checker explores them
once its world raises the v2 events (and, for TIME_RULES, runs the clock)."""

PROBE_RULE = "reg/probe"
"""The tag of a registration row that pushes a probe: the push goes by the rule of the path
that brought the stanza (PROBE_PATHS, or the session's rule a already decided)."""

PROBE_PATHS: dict[str, str] = {
    "push_archive": "b/archive",
    "push_offline": "c/offline",
    "push_groupchat": "d/groupchat",
    "push_call": "e/call",
    "push_call_end": "e/call-end",
}
"""Registration event -> the push rule of its path, for a probe (a test checks each is the rule
of that event's pushing rows; push_session's rule a is the session row's)."""

SETS_RULE = frozenset(PUSH_RULES) | {PROBE_RULE}
"""Rows whose taking decides the rule a push goes by (the engine's hot path looks at these)."""
