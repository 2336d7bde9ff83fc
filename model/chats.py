"""Chat settings (contract v2): which stanzas a user's setting for their chat lets through.

A stanza's chat is the bare JID of its ``from``. With the user's setting for that chat:
``always`` pushes as the rules say, ``never`` pushes nothing, ``on-mention`` only a stanza that
mentions the user (XEP-0372 reference or XEP-0461 reply, direct children of <message>, exact
strings; the body is never searched). Without a setting: ``always`` for chat and normal
messages, the option ``groupchat_default`` for groupchat. The room's echo of the user's own
groupchat message (from chat/nick) is never pushed, calls included; calls ignore settings.
"""

from __future__ import annotations

from .records import ChatSetting
from .stanza import Stanza

ALWAYS, ON_MENTION, NEVER = "always", "on-mention", "never"


def is_echo(stanza: Stanza, setting: ChatSetting | None) -> bool:
    """The room sending the user's own groupchat message back (needs the user's nick)."""
    return (setting is not None and setting.nick is not None and stanza.type == "groupchat"
            and stanza.sender == f"{stanza.chat}/{setting.nick}")


def mentions_user(stanza: Stanza, user: str, setting: ChatSetting | None) -> bool:
    """An XEP-0372 mention of ``xmpp:`` + the user's bare JID or chat/nick, or an XEP-0461
    reply to the bare JID, any ``user/resource``, or chat/nick."""
    own = {user}
    if setting is not None and setting.nick is not None:
        own.add(f"{stanza.chat}/{setting.nick}")
    if any(uri.startswith("xmpp:") and uri[5:] in own for uri in stanza.mentions):
        return True
    resource_prefix = user + "/"
    return any(to in own or (to.startswith(resource_prefix) and len(to) > len(resource_prefix))
               for to in stanza.replies)


def setting_blocks(stanza: Stanza, user: str, setting: ChatSetting | None,
                   groupchat_default: str) -> str | None:
    """Why the chat setting keeps this stanza from being pushed, or None when it lets it
    through (the echo rule is apart: ``is_echo``)."""
    if setting is not None:
        notify, source = setting.notify, f"the setting for {stanza.chat}"
    elif stanza.notify_type == "groupchat":
        notify, source = groupchat_default, "groupchat_default"
    else:
        return None
    if notify == NEVER:
        return f"{source} is never"
    if notify == ON_MENTION and not mentions_user(stanza, user, setting):
        return f"{source} is on-mention and it does not mention {user}"
    return None
