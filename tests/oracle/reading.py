"""Stanzas as the contract reads them: id, type, sender, importance, call elements, mentions.

Written from the contract text (shared/spec/events.md) and the README's definition of
"important"; the importance test mirrors model/stanza.py's classification so that the oracle and
the engine agree on what a person is woken for. Plain ElementTree: traces in the tests are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, fromstring

CLIENT = "jabber:client"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
JINGLE_MESSAGE = ("urn:xmpp:jingle-message:0", "urn:xmpp:jingle-message:1")
REFERENCE = "urn:xmpp:reference:0"
REPLY = "urn:xmpp:reply:0"

IMPORTANT_PAYLOADS = {
    "{eu.siacs.conversations.axolotl}encrypted",
    "{urn:xmpp:omemo:0}encrypted",
    "{urn:xmpp:omemo:1}encrypted",
    "{urn:xmpp:omemo:2}encrypted",
    "{jabber:x:encrypted}x",
    "{urn:xmpp:openpgp:0}openpgp",
} | {f"{{{ns}}}propose" for ns in JINGLE_MESSAGE}


@dataclass(frozen=True)
class Msg:
    """What the rules need of one stanza."""

    id: str | None
    kind: str
    type: str
    sender: str | None
    to: str | None
    important: bool
    call: str | None = None  # 'propose' or 'end' (<retract/>, <reject/>): direct children only
    call_id: str | None = None  # that element's id attribute
    mention_uris: tuple[str, ...] = ()
    reply_tos: tuple[str, ...] = ()

    @property
    def chat(self) -> str | None:
        return bare(self.sender)

    @property
    def to_bare(self) -> str | None:
        return bare(self.to)


def bare(jid: str | None) -> str | None:
    return None if jid is None else jid.split("/", 1)[0]


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def child(element: Element, name: str) -> Element | None:
    """The child `name` in the element's own namespace, else in jabber:client."""
    own = namespace(element.tag)
    for ns in (own, CLIENT):
        found = element.find(f"{{{ns}}}{name}" if ns else name)
        if found is not None:
            return found
    return None


def body_text(message: Element) -> str | None:
    body = child(message, "body")
    return None if body is None else (body.text or "")


def carbon_inner(root: Element) -> tuple[str, Element | None] | None:
    """('sent' | 'received', the forwarded message or None) for a carbon copy, else None."""
    for direction in ("received", "sent"):
        wrapper = root.find(f"{{{CARBONS}}}{direction}")
        if wrapper is None:
            continue
        forwarded = wrapper.find(f"{{{FORWARD}}}forwarded")
        inner = None
        if forwarded is not None:
            inner = next((c for c in forwarded if local(c.tag) == "message"), None)
        return direction, inner
    return None


def important(root: Element) -> bool:
    """A body, an encrypted payload or a call proposal; not chat states, headlines, MUC subjects,
    or carbons of one's own messages."""
    message = root
    carbon = carbon_inner(root)
    if carbon is not None:
        direction, inner = carbon
        if direction == "sent" or inner is None:
            return False
        message = inner
    if message.get("type") == "headline":
        return False
    if any(c.tag in IMPORTANT_PAYLOADS for c in message):
        return True
    if message.get("type") == "groupchat" and child(message, "subject") is not None:
        return False
    body = body_text(message)
    return bool(body and body.strip())


def call_element(root: Element) -> tuple[str | None, str | None]:
    """('propose' or 'end', call id) of the first call element among the direct children."""
    for c in root:
        if namespace(c.tag) not in JINGLE_MESSAGE:
            continue
        if local(c.tag) == "propose":
            return "propose", c.get("id")
        if local(c.tag) in ("retract", "reject"):
            return "end", c.get("id")
    return None, None


def mentions(root: Element) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(uris of mention references, `to`s of replies), direct children only."""
    uris = tuple(c.get("uri", "") for c in root
                 if c.tag == f"{{{REFERENCE}}}reference" and c.get("type") == "mention")
    tos = tuple(c.get("to", "") for c in root if c.tag == f"{{{REPLY}}}reply")
    return uris, tos


def read_stanza(xml: str) -> Msg:
    root = fromstring(xml)
    kind = local(root.tag)
    if kind != "message":
        return Msg(root.get("id"), kind, root.get("type") or "", root.get("from"),
                   root.get("to"), False)
    call, call_id = call_element(root)
    uris, tos = mentions(root)
    return Msg(root.get("id"), kind, root.get("type") or "normal", root.get("from"),
               root.get("to"), important(root), call, call_id, uris, tos)
