"""What the integration tests share: the Prosody and app-server launcher (installed, in
pushrules.benchmarks.servers, because the serve benchmark starts them too) and helpers that drive
the runtime with contract events."""

from __future__ import annotations

import os

from pushrules.benchmarks.servers import (  # noqa: F401 - re-exported for the tests
    APP_JIDS,
    APP_SECRET,
    CONDITIONS,
    DOMAIN,
    PUSH_JID,
    PUSH_SECRET,
    STANZAS_NS,
    AppServer,
    Prosody,
    Received,
    free_port,
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --- driving the runtime with contract events ---------------------------------------------------

def message(mid: str, to: str, body: str | None = "hi", sender: str = "alice@localhost/pc",
            kind: str = "chat") -> str:
    inner = "" if body is None else f"<body>{body}</body>"
    return (f"<message xmlns='jabber:client' id='{mid}' from='{sender}' to='{to}' "
            f"type='{kind}'>{inner}</message>")


def enable_events(user: str, node: str, app: str = APP_JIDS[0], resource: str = "phone",
                  secret: str | None = None) -> list[dict]:
    session = f"{user}/{resource}"
    return [
        {"event": "session-bind", "session": session},
        {"event": "push-enable", "session": session, "jid": app, "node": node,
         "secret": secret or f"secret-{node}"},
    ]


def offline_event(user: str, mid: str, body: str = "hi") -> dict:
    return {"event": "message/offline/handle", "user": user, "stanza": message(mid, user, body)}
