"""The stanza parser and the "important" classifier (mod_cloud_notify's is_important, see
shared/research/prosody-cloud-notify.md section 4)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from replaykit import msg

from pushrules.model.stanza import StanzaError, parse_stanza

CS = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
CARBON = ("<{d} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
          "<message xmlns='jabber:client' id='inner' from='x@example.org/a' to='y@example.org' "
          "type='chat'>{inner}</message></forwarded></{d}>")

IMPORTANT = {
    "chat with a body": msg("m", "hi"),
    "normal message with a body": msg("m", "hi", type_="normal"),
    "message without type": "<message xmlns='jabber:client' id='m'><body>hi</body></message>",
    "groupchat with a body": msg("m", "hi all", type_="groupchat"),
    "legacy OMEMO, no body": msg("m", inner="<encrypted xmlns='eu.siacs.conversations.axolotl'/>"),
    "OMEMO 0.x": msg("m", inner="<encrypted xmlns='urn:xmpp:omemo:0'/>"),
    "OMEMO 1": msg("m", inner="<encrypted xmlns='urn:xmpp:omemo:1'/>"),
    "OMEMO 2": msg("m", inner="<encrypted xmlns='urn:xmpp:omemo:2'/>"),
    "legacy OpenPGP": msg("m", inner="<x xmlns='jabber:x:encrypted'>AAAA</x>"),
    "OX": msg("m", inner="<openpgp xmlns='urn:xmpp:openpgp:0'>AAAA</openpgp>"),
    "Jingle propose": msg("m", inner="<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>"),
    "Jingle propose v1": msg("m", inner="<propose xmlns='urn:xmpp:jingle-message:1' id='c'/>"),
    "received carbon with a body": msg("m", inner=CARBON.format(d="received",
                                                                inner="<body>x</body>")),
    "received carbon of OMEMO": msg("m", inner=CARBON.format(
        d="received", inner="<encrypted xmlns='urn:xmpp:omemo:2'/>")),
    "body plus chat state": msg("m", inner="<body>hi</body>" + CS),
}

UNIMPORTANT = {
    "chat state only": msg("m", inner=CS),
    "empty body": msg("m", ""),
    "whitespace-only body (Prosody: important; here nothing to read)": msg("m", "  \n "),
    "no payload": msg("m", None),
    "headline with a body": msg("m", "news", type_="headline"),
    "headline with OMEMO": msg("m", type_="headline",
                               inner="<encrypted xmlns='urn:xmpp:omemo:2'/>"),
    "groupchat subject": msg("m", type_="groupchat", inner="<subject>topic</subject>"),
    "groupchat subject with a body": msg("m", type_="groupchat",
                                         inner="<subject>topic</subject><body>x</body>"),
    "sent carbon with a body": msg("m", inner=CARBON.format(d="sent", inner="<body>x</body>")),
    "sent carbon of a call": msg("m", inner=CARBON.format(
        d="sent", inner="<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>")),
    "received carbon of a chat state": msg("m", inner=CARBON.format(d="received", inner=CS)),
    "carbon without forwarded message": msg("m", inner="<received xmlns='urn:xmpp:carbons:2'/>"),
    "body in a foreign namespace": msg("m", inner="<body xmlns='urn:example'>x</body>"),
    "propose in a foreign namespace": msg("m", inner="<propose xmlns='urn:example' id='c'/>"),
    "presence": "<presence xmlns='jabber:client' id='p' from='a@example.org/x'/>",
    "iq": "<iq xmlns='jabber:client' id='i' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
}


@pytest.mark.parametrize("case", sorted(IMPORTANT))
def test_important(case: str) -> None:
    assert parse_stanza(IMPORTANT[case]).important is True


@pytest.mark.parametrize("case", sorted(UNIMPORTANT))
def test_unimportant(case: str) -> None:
    assert parse_stanza(UNIMPORTANT[case]).important is False


def test_fields() -> None:
    s = parse_stanza(msg("m1", "hello", to="bob@example.org/phone"))
    assert (s.id, s.kind, s.type, s.sender, s.to, s.to_bare, s.body) == (
        "m1", "message", "chat", "alice@example.org/pc", "bob@example.org/phone",
        "bob@example.org", "hello")
    assert parse_stanza(msg(None)).id is None


@pytest.mark.parametrize("xml, words", [
    ("<message", "not well-formed XML"),
    ("", "not well-formed XML"),
    ("<message><body>x</message>", "not well-formed XML"),
    ("<message/><message/>", "not well-formed XML"),
    ("<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
     "<features> is not a stanza"),
    ("<!DOCTYPE m [<!ENTITY a 'x'>]><message><body>&a;</body></message>",
     "not well-formed XML"),
])
def test_rejected(xml: str, words: str) -> None:
    with pytest.raises(StanzaError, match=words):
        parse_stanza(xml)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_stanza_error(text: str) -> None:
    with contextlib.suppress(StanzaError):  # anything else (a crash) fails the test
        parse_stanza(text)


TEXT = st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"],
                                      exclude_characters="<>&'\""), max_size=30)


@given(body=TEXT, type_=st.sampled_from(["chat", "normal", "groupchat", "headline"]))
def test_a_body_is_important_unless_blank_or_headline(body: str, type_: str) -> None:
    expected = bool(body.strip()) and type_ != "headline"
    assert parse_stanza(msg("m", body, type_=type_)).important is expected
