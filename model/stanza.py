"""Stanzas as the rules see them, and which of them are important.

"Important" decides whether a push carries the important-body placeholder: a device should be
woken loudly for a message a person wrote or a call, not for chat states or headlines. The
classification follows mod_cloud_notify's ``is_important`` (prosody-cloud-notify.md section 4).
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLPullParser
from xml.parsers import expat

from .errors import PushrulesError

CLIENT_NS = "jabber:client"
SERVER_NS = "jabber:server"
STANZA_NAMESPACES = (CLIENT_NS, SERVER_NS, "")
"""A stanza's namespace: jabber:client, jabber:server, or none (the stream's default, when a
server writes a stanza cut out of its stream without it)."""
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

# Caps a server puts on what it relays (Prosody 0.12's defaults: c2s_stanza_size_limit 256 KiB,
# s2s_stanza_size_limit 512 KiB; a push payload carries at most 4 KB to APNs or FCM).
MAX_STANZA_BYTES = 512 * 1024
"""Longest stanza XML, in UTF-8 bytes: the larger of Prosody's two stream limits. Refused."""
MAX_ID_CHARS = 1024
"""Longest stanza id (it names the stanza in every push and in dedup). Refused."""
MAX_BODY_CHARS = 4096
"""Longest body kept (include_body puts it in the push; no push service carries more).
Longer bodies are cut to this length; importance is decided on the whole body."""
CACHE_BYTES = 4 * 1024 * 1024
"""Budget of the parse cache, in bytes of XML and parsed text held: some 8,000 ordinary
stanzas (a repeat comes soon after the first sighting). Larger costs more in garbage-collector
passes over the cached objects than it saves (measured: 32 MiB made replay ~40% slower)."""

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
    """The stanza is not well-formed XML, holds what XMPP forbids, or is not a stanza."""


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


# --- parsing -----------------------------------------------------------------------------------
# One path: a long-lived expat parser reads each stanza inside a wrapper element, as an XMPP
# stream is read (a new parser per stanza costs more than the parse itself). Inside an element
# a DOCTYPE or an XML declaration is a syntax error, and processing instructions and comments
# are reported as events: XMPP forbids all four (RFC 6120 section 11.1), so all are refused.
# What the reader accepts, a parse of the stanza alone accepts too, with the same tree; the
# checks in ``read`` close the gaps between element content and a document (text or a second
# element around the stanza, a forged end marker). A refused stanza is parsed once more, alone,
# only to word the error.

_SENTINEL = "pushrules-stanza-end"
_SENTINEL_XML = f"<{_SENTINEL}/>"
_XML_SPACE = " \t\r\n"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _StanzaReader:
    def __init__(self) -> None:
        self.parser: Any = XMLPullParser(events=("start", "pi", "comment"))
        self.parser.feed("<wrapper>")
        started: Any = next(iter(self.parser.read_events()))
        self.root: Element = started[1]

    def read(self, xml: str) -> Element | None:
        """The stanza's element, or None (the reader is then replaced) when the XML is not
        exactly one element free of what XMPP forbids."""
        root = self.root
        clean = True
        try:
            self.parser.feed(xml + _SENTINEL_XML)
            for kind, _ in self.parser.read_events():  # raises the parse error, if any
                if kind != "start":  # a processing instruction or a comment
                    clean = False
        except ParseError:
            clean = False
        # (``fromstring`` never hands in XML naming our marker: it cannot be forged here; an
        # open CDATA section swallows the marker, leaving one child.)
        if not (clean and len(root) == 2 and root.text is None and root[0].tail is None):
            _local_reader.reader = _StanzaReader()
            return None
        end = root[1]
        if end.tag != _SENTINEL or len(end) or end.text is not None:
            _local_reader.reader = _StanzaReader()  # the stanza forged or opened our marker
            return None
        element = root[0]
        root.clear()
        return element


_local_reader = threading.local()


def _read_alone(xml: str) -> Element | None:
    """The one element of ``xml`` parsed by a parser of its own (None: not exactly one element
    free of processing instructions and comments; ``fromstring`` has refused a leading DTD or
    declaration already)."""
    parser: Any = XMLPullParser(events=("start", "pi", "comment"))
    try:
        parser.feed(xml)
        events = list(parser.read_events())
        parser.close()
    except ParseError:
        return None
    if any(kind != "start" for kind, _ in events) or not events:
        return None
    root: Element = events[0][1]
    return root


def _reader() -> _StanzaReader:
    reader = getattr(_local_reader, "reader", None)
    if reader is None:
        reader = _local_reader.reader = _StanzaReader()
    return reader


class _Forbidden(Exception):
    pass


def _forbid(what: str) -> Callable[..., None]:
    def handler(*_: object) -> None:
        raise _Forbidden(what)
    return handler


def _why_refused(xml: str) -> str:
    """Why the reader refused ``xml``: a parse of it alone, with handlers that stop at the
    first construct XMPP forbids (before a DTD's internal subset is read)."""
    parser = expat.ParserCreate(None, "}")  # namespaces on, as ElementTree parses
    parser.StartDoctypeDeclHandler = _forbid("a DTD (<!DOCTYPE ...>)")
    parser.XmlDeclHandler = _forbid("an XML declaration (<?xml ...?>)")
    parser.ProcessingInstructionHandler = _forbid("a processing instruction")
    parser.CommentHandler = _forbid("a comment")
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as exc:
        return f"not well-formed XML: {exc}"
    except _Forbidden as exc:
        return f"not well-formed XML for a stanza: {exc} is forbidden in XMPP (RFC 6120 11.1)"
    return "not well-formed XML: not exactly one element"


def fromstring(xml: str) -> Element:
    """The one element of a stanza's XML, or StanzaError saying what is wrong."""
    size = len(xml)
    if size > MAX_STANZA_BYTES or (size > MAX_STANZA_BYTES // 4 and not xml.isascii() and
                                   len(xml.encode("utf-8", "surrogatepass")) > MAX_STANZA_BYTES):
        raise StanzaError(f"too long: more than {MAX_STANZA_BYTES} bytes")
    if not xml.isascii() and _SURROGATE.search(xml):
        raise StanzaError("not well-formed XML: holds a lone surrogate (not a character)")
    xml = xml.strip(_XML_SPACE)
    # The first and last constructs must be the stanza's own tags: nothing before its start
    # tag, no CDATA section after its end tag (element content allows one, a document not).
    if not xml.startswith("<") or xml[1:2] in ("!", "?", "/", "") or xml.endswith("]]>"):
        raise StanzaError(_why_refused(xml))
    # Our reader's end marker inside the XML could be forged to look closed: such rare XML is
    # parsed on its own instead.
    element = _read_alone(xml) if _SENTINEL in xml else _reader().read(xml)
    if element is None:
        raise StanzaError(_why_refused(xml))
    return element


class _ByteBoundedCache:
    """Parsed stanzas by XML, bounded by the bytes held (XML and parsed text), not by entries:
    a cache of a few large stanzas stays as small as one of many small ones. The oldest entry
    goes first (a stanza repeats soon after it is first seen: queued, then in the smacks queue,
    archived or stored offline), so a hit is one dict lookup. Thread-safe."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0
        self.entries: OrderedDict[str, tuple[Stanza, int]] = OrderedDict()  # O(1) oldest-out
        self._lock = threading.Lock()

    def put(self, xml: str, stanza: Stanza) -> None:
        cost = sys.getsizeof(xml) + 4 * len(stanza.body or "") + 200  # body: 4 bytes a char
        if cost > self.budget // 8:
            return  # one stanza never takes more than an eighth of the budget
        with self._lock:
            if self.entries.setdefault(xml, (stanza, cost))[0] is not stanza:
                return  # another thread cached it first
            self.held += cost
            while self.held > self.budget:
                self.held -= self.entries.popitem(last=False)[1][1]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.held = 0


_cache = _ByteBoundedCache(CACHE_BYTES)
_cached = _cache.entries.get


def parse_stanza(xml: str) -> Stanza:
    """Parse a stanza's XML; raise StanzaError saying what is wrong. Stanzas are immutable, so
    a repeated XML string (a queued stanza is listed again in the smacks queue, archived, stored
    offline) is parsed once (see _ByteBoundedCache); errors are not cached."""
    entry = _cached(xml)
    if entry is not None:
        return entry[0]
    stanza = _stanza(fromstring(xml))
    _cache.put(xml, stanza)
    return stanza


def _stanza(root: Element) -> Stanza:
    ns, local = _split(root.tag)
    if local not in ("message", "presence", "iq"):
        raise StanzaError(f"<{local}> is not a stanza (message, presence or iq)")
    if ns not in STANZA_NAMESPACES:
        raise StanzaError(f"<{local}> in namespace {ns!r} is not a stanza (jabber:client or "
                          "jabber:server)")
    get = root.get
    ident = get("id")
    if ident is not None and len(ident) > MAX_ID_CHARS:
        raise StanzaError(f"id too long: {len(ident)} characters (at most {MAX_ID_CHARS})")
    body = _body(root)
    if local != "message":
        return Stanza(ident, local, get("type"), get("from"), get("to"), False,
                      _clip(body))
    important = _important(root, body)
    call, call_id, mentions, replies = _v2_children(root)
    return Stanza(  # positional: id, kind, type, sender, to, important, body, v2 children
        ident, local, get("type"), get("from"), get("to"), important, _clip(body),
        call, call_id, mentions, replies)


def _clip(body: str | None) -> str | None:
    return body if body is None or len(body) <= MAX_BODY_CHARS else body[:MAX_BODY_CHARS]


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
    if not _is_message(root.tag):
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
                inner = next((c for c in forwarded if _is_message(c.tag)), None)
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


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag ("" when it has no namespace)."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _is_message(tag: str) -> bool:
    ns, local = _split(tag)
    return local == "message" and ns in STANZA_NAMESPACES
