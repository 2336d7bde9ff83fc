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
FULL_JID = "full_jid"      # user@host/resource
BARE_JID = "bare_jid"      # user@host
TEXT = "text"              # non-empty string
STANZA = "stanza"          # XML string -> Stanza
QUEUE = "queue"            # list of XML strings -> tuple[Stanza, ...]
BOOL = "bool"
ERROR_TYPE = "error_type"  # one of ERROR_TYPES or null
OPTIONS = "options"        # object of string -> string
NOTIFY = "notify"          # one of NOTIFY_SETTINGS (v2)
CSI = "csi"                # one of CSI_STATES (v2)
TIME = "time"              # a number of seconds, never decreasing within a trace (v2)

NOTIFY_SETTINGS = ("always", "on-mention", "never")
"""XEP-0492 notification settings of a chat (contract v2 chat-settings)."""
CSI_STATES = ("active", "inactive")
"""XEP-0352 client states (contract v2 csi-state)."""
CHOICES: dict[str, tuple[str, ...]] = {NOTIFY: NOTIFY_SETTINGS, CSI: CSI_STATES}
"""Field kinds whose value is one of a few strings."""

# Targets: which machine instance an event is sent to.
SESSION = "session"                # the session named by the `session` field
USER_REGISTRATIONS = "user"        # every registration of the user (fan-out)
REGISTRATION = "registration"      # the registration (user, jid, node)
KNOWN_REGISTRATION = "known_registration"  # that registration if the user has it, else no-op
USER_FACT = "user_fact"            # a fact of the user (model/facts.py), no machine
CLOCK = "clock"                    # time passes (the time-based rules are issue 14's)

CALL_EVENTS = {"propose": "push_call", "end": "push_call_end"}
"""Registration events rule e fans a call stanza out as (by Stanza.call), on the events that
bring a stanza for a user (EventSpec.calls)."""


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
    calls: bool = False
    """The event brings a stanza for a user: rule e (calls) applies to it (v2)."""
    version: int = 1
    """The contract version that added the event."""


AT = FieldSpec("at", TIME, required=False,
               doc="the server's clock in seconds; never decreasing (v2)")
"""Any event may carry ``at`` (contract v2, Time)."""


def _timed(*specs: EventSpec) -> tuple[EventSpec, ...]:
    """Every event also takes the optional ``at`` (tick requires it: declared there)."""
    return tuple(spec if any(f.name == "at" for f in spec.fields)
                 else EventSpec(spec.name, spec.class_name, (*spec.fields, AT), spec.target,
                                spec.machine_event, spec.user_field, spec.doc, spec.calls,
                                spec.version)
                 for spec in specs)


EVENTS: tuple[EventSpec, ...] = _timed(
    EventSpec(
        "session-bind", "SessionBind", (FieldSpec("session", FULL_JID),),
        SESSION, "session_bind", "session", "a resource was bound; the session is active",
    ),
    EventSpec(
        "push-enable", "PushEnable",
        (
            FieldSpec("session", FULL_JID),
            FieldSpec("jid", TEXT, doc="the app server (push service) JID"),
            FieldSpec("node", TEXT, doc="the pubsub node on the app server"),
            FieldSpec("secret", TEXT, required=False, doc="publish-options secret"),
            FieldSpec("publish_options", OPTIONS, required=False,
                      doc="further publish-options fields"),
        ),
        SESSION, "push_enable", "session",
        "XEP-0357 <enable/>: create or replace the registration and bind it to the session",
    ),
    EventSpec(
        "push-disable", "PushDisable",
        (FieldSpec("session", FULL_JID), FieldSpec("jid", TEXT),
         FieldSpec("node", TEXT, required=False)),
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
        "a stanza was sent to the session (added to its smacks queue)", calls=True,
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
        "MAM stored the stanza in for_user's archive", calls=True,
    ),
    EventSpec(
        "message/offline/handle", "MessageOfflineHandle",
        (FieldSpec("user", BARE_JID), FieldSpec("stanza", STANZA)),
        USER_REGISTRATIONS, "push_offline", "user", "offline storage took the stanza for user",
        calls=True,
    ),
    EventSpec(
        "push-result", "PushResult",
        (
            FieldSpec("user", BARE_JID), FieldSpec("jid", TEXT), FieldSpec("node", TEXT),
            FieldSpec("ok", BOOL), FieldSpec("error_type", ERROR_TYPE, required=False),
        ),
        REGISTRATION, "push_result", "user",
        "the app server's answer to the most recent push to that registration",
    ),
    EventSpec(
        "message/bare/groupchat", "MessageBareGroupchat",
        (FieldSpec("user", BARE_JID), FieldSpec("stanza", STANZA)),
        USER_REGISTRATIONS, "push_groupchat", "user",
        "a type=groupchat message to the user's bare JID (or a resource that is gone); no "
        "session receives it", calls=True, version=2,
    ),
    EventSpec(
        "csi-state", "CsiState",
        (FieldSpec("session", FULL_JID),
         FieldSpec("state", CSI, doc="`active` or `inactive` (XEP-0352)")),
        SESSION, "csi_state", "session",
        "XEP-0352 client state indication from the session", version=2,
    ),
    EventSpec(
        "chat-settings", "ChatSettings",
        (FieldSpec("user", BARE_JID), FieldSpec("chat", BARE_JID, doc="a contact or a room"),
         FieldSpec("notify", NOTIFY, doc="`always`, `on-mention` or `never` (XEP-0492)"),
         FieldSpec("nick", TEXT, required=False, doc="the user's nickname in that room")),
        USER_FACT, "chat_settings", "user",
        "XEP-0492 notification setting of user for one chat, read from the user's bookmarks",
        version=2,
    ),
    EventSpec(
        "push-remote-disable", "PushRemoteDisable",
        (FieldSpec("user", BARE_JID), FieldSpec("jid", TEXT), FieldSpec("node", TEXT)),
        KNOWN_REGISTRATION, "remote_disable", "user",
        "XEP-0357 section 8: the push service revoked the user's affiliation to that node",
        version=2,
    ),
    EventSpec(
        "tick", "Tick", (FieldSpec("at", TIME, doc="the server's clock in seconds"),),
        CLOCK, "tick", "at", "time passes; nothing else happens", version=2,
    ),
)

EVENTS_BY_NAME: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS}
