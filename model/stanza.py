"""Stanzas as the rules see them, and which of them are important.

"Important" decides whether a push carries the important-body placeholder: a device should be
woken loudly for a message a person wrote or a call, not for chat states or headlines. The
classification follows mod_cloud_notify's ``is_important`` (prosody-cloud-notify.md section 4).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from xml.etree.ElementTree import Element, ParseError, XMLPullParser
from xml.etree.ElementTree import fromstring as _plain_fromstring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

from .errors import PushrulesError

CLIENT_NS = "jabber:client"
CARBONS_NS = "urn:xmpp:carbons:2"
FORWARD_NS = "urn:xmpp:forward:0"
JINGLE_MESSAGE_NS = ("urn:xmpp:jingle-message:0", "urn:xmpp:jingle-message:1")
REFERENCE_NS = "urn:xmpp:reference:0"
REPLY_NS = "urn:xmpp:reply:0"

PROPOSE = "propose"
CALL_END = "end"
"""Stanza.call: an XEP-0353 <propose/> starts a call (rule e/call); <retract/> or <reject/>
ends it (rule e/call-end)."""
_CALL_TAGS = {f"{{{ns}}}{name}": (PROPOSE if name == "propose" else CALL_END)
              for ns in JINGLE_MESSAGE_NS for name in ("propose", "retract", "reject")}
_REFERENCE_TAG = f"{{{REFERENCE_NS}}}reference"
_REPLY_TAG = f"{{{REPLY_NS}}}reply"

# Payloads that make a message important even without a body: end-to-end encrypted messages
# (OMEMO in its versions, legacy OpenPGP, OX) and Jingle call proposals.
IMPORTANT_PAYLOADS: tuple[tuple[str, str], ...] = (
    ("eu.siacs.conversations.axolotl", "encrypted"),
    ("urn:xmpp:omemo:0", "encrypted"),
    ("urn:xmpp:omemo:1", "encrypted"),
    ("urn:xmpp:omemo:2", "encrypted"),
    ("jabber:x:encrypted", "x"),
    ("urn:xmpp:openpgp:0", "openpgp"),
    ("urn:xmpp:jingle-message:0", "propose"),
    ("urn:xmpp:jingle-message:1", "propose"),
)
_IMPORTANT_TAGS = frozenset(f"{{{ns}}}{name}" for ns, name in IMPORTANT_PAYLOADS)


class StanzaError(PushrulesError, ValueError):
    """The stanza is not well-formed XML or not a stanza."""


@dataclass(frozen=True, slots=True)
class Stanza:
    """A stanza reduced to what the rules need. ``id`` names it in the output."""

    id: str | None
    kind: str
    type: str | None
    sender: str | None
    to: str | None
    important: bool
    body: str | None = None
    call: str | None = None
    """PROPOSE or CALL_END when an XEP-0353 call element is a direct child of <message>."""
    call_id: str | None = None
    """The call element's ``id`` attribute (call ids are per user)."""
    mentions: tuple[str, ...] = ()
    """``uri`` of each XEP-0372 <reference type='mention'/> that is a direct child."""
    replies: tuple[str, ...] = ()
    """``to`` of each XEP-0461 <reply/> that is a direct child."""

    @property
    def to_bare(self) -> str | None:
        return None if self.to is None else self.to.split("/", 1)[0]

    @property
    def chat(self) -> str | None:
        """The chat a stanza belongs to (for chat settings): the bare JID of its ``from``."""
        return None if self.sender is None else self.sender.split("/", 1)[0]

    @property
    def notify_type(self) -> str:
        """The message type chat settings go by: a message without ``type`` is ``normal``."""
        return self.type or "normal"


def fromstring(xml: str) -> Element:
    """defusedxml's parse, made cheap for the common case. Entities can only be declared in a
    DOCTYPE, which starts with ``<!``; XML without ``<!`` (no DOCTYPE, comment or CDATA) has
    nothing defusedxml guards against, so the C parser reads it (same tree, same errors).
    Anything else goes through defusedxml."""
    if "<!" in xml:
        return _defused_fromstring(xml)
    if xml.startswith("<") and not xml.startswith("<?"):
        element = _reader().read(xml)
        if element is not None:
            return element
    return _plain_fromstring(xml)


_SENTINEL = "pushrules-stanza-end"
_SENTINEL_XML = f"<{_SENTINEL}/>"


class _StanzaReader:
    """One long-lived parser reading stanzas one after another inside a wrapper element, as
    an XMPP stream is read: a new expat parser per stanza costs more than the parse itself
    (measured: ~6 us against ~2 us). ``read`` returns the stanza's element when the XML is
    exactly one element with nothing before or after it, else None (and starts a fresh
    parser): the caller then parses it alone, which accepts it or words the error."""

    def __init__(self) -> None:
        self.parser: XMLPullParser[Element] = XMLPullParser(events=("start",))
        self.parser.feed("<wrapper>")
        # A "start" event carries the element.
        self.root = cast("tuple[str, Element]", next(iter(self.parser.read_events())))[1]

    def read(self, xml: str) -> Element | None:
        root = self.root
        try:
            self.parser.feed(xml + _SENTINEL_XML)  # flushes any text after it into its .tail
            for _ in self.parser.read_events():  # raises the parse error, if any
                pass
        except ParseError:
            _local_reader.reader = _StanzaReader()
            return None
        if len(root) != 2 or root[1].tag != _SENTINEL or root[0].tail is not None:
            _local_reader.reader = _StanzaReader()
            return None
        element = root[0]
        root.clear()
        return element


_local_reader = threading.local()


def _reader() -> _StanzaReader:
    reader = getattr(_local_reader, "reader", None)
    if reader is None:
        reader = _local_reader.reader = _StanzaReader()
    return reader


@lru_cache(maxsize=4096)
def parse_stanza(xml: str) -> Stanza:
    """Parse a stanza's XML; raise StanzaError saying what is wrong. Stanzas are immutable, so
    a repeated XML string (a queued stanza is listed again in the smacks queue, archived, stored
    offline) is parsed once; errors are not cached."""
    try:
        root = fromstring(xml)
    except (ParseError, DefusedXmlException) as exc:
        raise StanzaError(f"not well-formed XML: {exc}") from None
    local = _local(root.tag)
    if local not in ("message", "presence", "iq"):
        raise StanzaError(f"<{local}> is not a stanza (message, presence or iq)")
    body = _body(root)
    get = root.get
    if local != "message":
        return Stanza(get("id"), local, get("type"), get("from"), get("to"), False, body)
    call, call_id, mentions, replies = _v2_children(root)
    return Stanza(  # positional: id, kind, type, sender, to, important, body, v2 children
        get("id"), local, get("type"), get("from"), get("to"), _important(root, body), body,
        call, call_id, mentions, replies,
    )


def _v2_children(root: Element) -> tuple[str | None, str | None, tuple[str, ...],
                                         tuple[str, ...]]:
    """(call kind, call id, mention uris, reply tos) from the direct children of <message>
    only: a call or mention nested in another element (a forward, a wrapper) does not count."""
    call = call_id = None
    mentions: list[str] = []
    replies: list[str] = []
    for child in root:
        tag = child.tag
        kind = _CALL_TAGS.get(tag)
        if kind is not None:
            if call is None:  # the first call element decides
                call, call_id = kind, child.get("id")
        elif tag == _REFERENCE_TAG:
            if child.get("type") == "mention":
                mentions.append(child.get("uri", ""))
        elif tag == _REPLY_TAG:
            replies.append(child.get("to", ""))
    return call, call_id, tuple(mentions), tuple(replies)


def is_important(root: Element) -> bool:
    """True for a message a person should be woken for (see module docstring)."""
    if _local(root.tag) != "message":
        return False
    return _important(root, _body(root))


def _important(root: Element, body: str | None) -> bool:
    """is_important for a <message> root; ``body`` is the text of its own <body>."""
    message = root
    carbon = _carbon(root)
    if carbon is not None:
        direction, forwarded = carbon
        if direction == "sent":  # the user's own outgoing message, copied to this device
            return False
        if forwarded is None:
            return False
        message = forwarded
        body = _body(message)
    if message.get("type") == "headline":
        return False
    for child in message:
        if child.tag in _IMPORTANT_TAGS:
            return True
    if message.get("type") == "groupchat" and _child(message, "subject") is not None:
        return False
    return bool(body and body.strip())


_CARBON_TAGS = tuple((d, f"{{{CARBONS_NS}}}{d}") for d in ("received", "sent"))
_FORWARDED_TAG = f"{{{FORWARD_NS}}}forwarded"
_CLIENT_PREFIX = f"{{{CLIENT_NS}}}"


def _carbon(root: Element) -> tuple[str, Element | None] | None:
    for direction, tag in _CARBON_TAGS:
        wrapper = root.find(tag)
        if wrapper is not None:
            forwarded = wrapper.find(_FORWARDED_TAG)
            inner = None
            if forwarded is not None:
                inner = next((c for c in forwarded if _local(c.tag) == "message"), None)
            return direction, inner
    return None


def _body(message: Element) -> str | None:
    body = _child(message, "body")
    return None if body is None else (body.text or "")


def _child(element: Element, name: str) -> Element | None:
    if element.tag.startswith(_CLIENT_PREFIX):  # the usual case: one lookup, no fallback
        return element.find(_CLIENT_PREFIX + name)
    ns = element.tag[1:].split("}", 1)[0] if element.tag.startswith("{") else ""
    found = element.find(f"{{{ns}}}{name}" if ns else name)
    if found is None and ns != CLIENT_NS:
        found = element.find(f"{{{CLIENT_NS}}}{name}")
    return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
