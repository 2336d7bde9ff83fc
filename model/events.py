"""The server-event contract (shared/spec/events.md) as data: names, fields, routing.

The typed event classes of the embedding API are generated from EVENTS (generated/events.py);
the trace parser validates JSON against the same field specs.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_TYPES = ("wait", "cancel", "auth", "modify", "continue")
TRANSIENT_ERROR = "wait"
"""The one error type that is retried and never counted (XEP-0357 section 7: transient)."""

# Field kinds: how a JSON value is checked and converted.
# JIDs are checked as RFC 7622 says (slixmpp's JID class) and kept as the server wrote them;
# text that reaches the wire as XML (node, secret, publish-options) must be valid XML text.
FULL_JID = "full_jid"      # user@host/resource
BARE_JID = "bare_jid"      # user@host
JID = "jid"                # any JID: host, user@host or a full JID (a push service)
NODE = "node"              # a pubsub node name: non-empty XML text, length-capped
TEXT = "text"              # non-empty XML text, length-capped
STANZA = "stanza"          # XML string -> Stanza
QUEUE = "queue"            # list of XML strings -> tuple[Stanza, ...]
BOOL = "bool"
ERROR_TYPE = "error_type"  # one of ERROR_TYPES or null
OPTIONS = "options"        # object of string -> string

# Targets: which machine instance an event is sent to.
SESSION = "session"                # the session named by the `session` field
USER_REGISTRATIONS = "user"        # every registration of the user (fan-out)
REGISTRATION = "registration"      # the registration (user, jid, node)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: str
    required: bool = True
    doc: str = ""

    @property
    def attr(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    class_name: str
    fields: tuple[FieldSpec, ...]
    target: str
    machine_event: str
    user_field: str
    doc: str


EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        "session-bind", "SessionBind", (FieldSpec("session", FULL_JID),),
        SESSION, "session_bind", "session", "a resource was bound; the session is active",
    ),
    EventSpec(
        "push-enable", "PushEnable",
        (
            FieldSpec("session", FULL_JID),
            FieldSpec("jid", JID, doc="the app server (push service) JID"),
            FieldSpec("node", NODE, doc="the pubsub node on the app server"),
            FieldSpec("secret", TEXT, required=False, doc="publish-options secret"),
            FieldSpec("publish_options", OPTIONS, required=False,
                      doc="further publish-options fields"),
        ),
        SESSION, "push_enable", "session",
        "XEP-0357 <enable/>: create or replace the registration and bind it to the session",
    ),
    EventSpec(
        "push-disable", "PushDisable",
        (FieldSpec("session", FULL_JID), FieldSpec("jid", JID),
         FieldSpec("node", NODE, required=False)),
        SESSION, "push_disable", "session",
        "XEP-0357 <disable/>: remove that registration, or all with that jid when node is absent",
    ),
    EventSpec(
        "smacks-ack-delayed", "SmacksAckDelayed",
        (FieldSpec("session", FULL_JID), FieldSpec("queue", QUEUE)),
        SESSION, "smacks_ack_delayed", "session",
        "the session did not answer an <r/> in time; queue holds the unacked stanzas",
    ),
    EventSpec(
        "smacks-ack-received", "SmacksAckReceived", (FieldSpec("session", FULL_JID),),
        SESSION, "smacks_ack_received", "session", "the session acked; it is active again",
    ),
    EventSpec(
        "smacks-hibernation-start", "SmacksHibernationStart",
        (FieldSpec("session", FULL_JID), FieldSpec("queue", QUEUE)),
        SESSION, "smacks_hibernation_start", "session",
        "the connection is gone; the session waits for resumption",
    ),
    EventSpec(
        "smacks-hibernation-end", "SmacksHibernationEnd", (FieldSpec("session", FULL_JID),),
        SESSION, "smacks_hibernation_end", "session", "the session resumed; it is active again",
    ),
    EventSpec(
        "stanza-queued", "StanzaQueued",
        (FieldSpec("session", FULL_JID), FieldSpec("stanza", STANZA)),
        SESSION, "stanza_queued", "session",
        "a stanza was sent to the session (added to its smacks queue)",
    ),
    EventSpec(
        "session-destroyed", "SessionDestroyed", (FieldSpec("session", FULL_JID),),
        SESSION, "session_destroyed", "session",
        "the session ended; its registration stays stored",
    ),
    EventSpec(
        "archive-message-added", "ArchiveMessageAdded",
        (FieldSpec("for_user", BARE_JID), FieldSpec("stanza", STANZA)),
        USER_REGISTRATIONS, "push_archive", "for_user",
        "MAM stored the stanza in for_user's archive",
    ),
    EventSpec(
        "message/offline/handle", "MessageOfflineHandle",
        (FieldSpec("user", BARE_JID), FieldSpec("stanza", STANZA)),
        USER_REGISTRATIONS, "push_offline", "user", "offline storage took the stanza for user",
    ),
    EventSpec(
        "push-result", "PushResult",
        (
            FieldSpec("user", BARE_JID), FieldSpec("jid", JID), FieldSpec("node", NODE),
            FieldSpec("ok", BOOL), FieldSpec("error_type", ERROR_TYPE, required=False),
        ),
        REGISTRATION, "push_result", "user",
        "the app server's answer to the most recent push to that registration",
    ),
)

EVENTS_BY_NAME: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS}
