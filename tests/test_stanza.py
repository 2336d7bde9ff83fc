"""The stanza parser and the "important" classifier (mod_cloud_notify's is_important, see
shared/research/prosody-cloud-notify.md section 4)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from replaykit import msg

from pushrules.model import stanza as st_mod
from pushrules.model.stanza import StanzaError, fromstring, parse_stanza

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


# --- what XMPP forbids, other namespaces, caps, the cache -------------------------------------

@pytest.mark.parametrize("xml, words", [
    ("<!DOCTYPE message [<!ATTLIST message id CDATA 'evil'>]><message xmlns='jabber:client'/>",
     "a DTD"),
    ("<!DOCTYPE message SYSTEM 'http://example.org/x.dtd'><message/>", "a DTD"),
    ("<message xmlns='jabber:client'><?pi x?><body>hi</body></message>",
     "a processing instruction"),
    ("<message xmlns='jabber:client'/><?pi x?>", "a processing instruction"),
    ("<?xml version='1.0'?><message xmlns='jabber:client'/>", "an XML declaration"),
    ("<message xmlns='jabber:client'><!-- c --><body>hi</body></message>", "a comment"),
])
def test_forbidden_xml_is_refused(xml: str, words: str) -> None:
    with pytest.raises(StanzaError, match=words) as caught:
        parse_stanza(xml)
    assert "forbidden in XMPP" in str(caught.value)


def test_a_dtd_never_sets_an_id() -> None:
    with pytest.raises(StanzaError):
        parse_stanza("<!DOCTYPE message [<!ATTLIST message id CDATA 'evil'>]><message/>")
    assert parse_stanza("<message xmlns='jabber:client'/>").id is None


@pytest.mark.parametrize("xml", [
    '<message id="a"/><pushrules-stanza-end/>', '<message id="a"/><pushrules-stanza-end>',
    '<message id="a"><pushrules-stanza-end>', "<message/><![CDATA[]]>", "<![CDATA[]]><message/>",
    "<message/></wrapper>", "<message/><message/>",
])
def test_the_reader_accepts_nothing_a_parse_alone_refuses(xml: str) -> None:
    with pytest.raises(StanzaError, match="not well-formed XML"):
        parse_stanza(xml)
    assert parse_stanza(msg("after")).id == "after"  # and the next stanza still reads


@pytest.mark.parametrize("ns", ["urn:example", "jabber:component:accept", "http://jabber.org/"])
def test_a_message_in_another_namespace_is_not_a_message(ns: str) -> None:
    with pytest.raises(StanzaError, match="is not a stanza"):
        parse_stanza(f"<message xmlns='{ns}' id='m'><body>hi</body></message>")


def test_stanza_namespaces() -> None:
    server = parse_stanza("<message xmlns='jabber:server' id='s'><body>hi</body></message>")
    bare = parse_stanza("<message id='d'><body>hi</body></message>")  # the stream's default
    assert (server.kind, server.important, server.body) == ("message", True, "hi")
    assert (bare.kind, bare.important, bare.body) == ("message", True, "hi")


def test_a_carbon_of_a_foreign_message_is_not_important() -> None:
    foreign = CARBON.format(d="received", inner="<body>x</body>").replace(
        "<message xmlns='jabber:client' id='inner'", "<message xmlns='urn:example' id='inner'")
    assert parse_stanza(msg("m", inner=foreign)).important is False


def test_id_and_body_caps() -> None:
    assert parse_stanza(msg("i" * st_mod.MAX_ID_CHARS)).id == "i" * st_mod.MAX_ID_CHARS
    with pytest.raises(StanzaError, match="id too long"):
        parse_stanza(msg("i" * (st_mod.MAX_ID_CHARS + 1)))
    long_body = " " * 5000 + "x"  # important: the whole body decides, not the kept part
    s = parse_stanza(msg("m", long_body))
    assert s.body == long_body[:st_mod.MAX_BODY_CHARS] and s.important is True
    with pytest.raises(StanzaError, match="too long"):
        parse_stanza(msg("m", "b" * st_mod.MAX_STANZA_BYTES))
    with pytest.raises(StanzaError, match="too long"):  # bytes, not characters
        parse_stanza(msg("m", "\u00e9" * (st_mod.MAX_STANZA_BYTES // 2)))


def test_parse_cache_is_bounded_in_bytes() -> None:
    cache = st_mod._cache
    cache.clear()
    big = [msg(f"big{n}", "x" * 400_000) for n in range(100)]  # 100 distinct 400 KB stanzas
    for xml in big:
        assert parse_stanza(xml).id == xml.split("'")[3]
    assert cache.held <= cache.budget
    assert sum(len(x) for x in cache.entries) <= cache.budget
    assert len(cache.entries) < len(big)
    small = msg("small")
    assert parse_stanza(small) is parse_stanza(small)  # a repeat is parsed once
    cache.clear()


@pytest.mark.parametrize("xml", [
    "<a/><pushrules-stanza-end><![CDATA[",
    "<pushrules-stanza-end/><pushrules-stanza-end/><![CDATA[<a>",
    "<a/><![CDATA[",
])
def test_xml_forging_or_swallowing_the_readers_marker_is_refused_and_the_reader_goes_on(xml):
    # Found by hypothesis (test_bench_stanza.py): a forged, open marker element was taken as
    # the reader's own, and the open CDATA then swallowed every later stanza.
    with pytest.raises(StanzaError, match="not well-formed XML"):
        fromstring(xml)
    assert fromstring("<message id='m1'><body>b</body></message>").get("id") == "m1"


def test_a_stanza_naming_the_readers_marker_in_its_text_still_parses():
    body = fromstring("<message id='m1'><body>pushrules-stanza-end</body></message>")[0]
    assert body.text == "pushrules-stanza-end"
