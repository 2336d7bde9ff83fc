"""The long-lived stanza reader (model/stanza.py, kept for replay speed) never accepts what a
parse of the stanza alone refuses, gives the same tree when it accepts, and refuses what XMPP
forbids in a stanza (DTD, XML declaration, processing instruction, comment) even where the
plain parser takes it."""

from __future__ import annotations

from xml.etree.ElementTree import ParseError, tostring
from xml.etree.ElementTree import fromstring as plain_fromstring

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from pushrules.model import stanza as st

INPUTS = [
    '<message xmlns="jabber:client" id="a" to="u@x" from="c@x/r"><body>hi &amp; bye</body>'
    '</message>',
    "<message xmlns='jabber:client' type='groupchat'><subject>s</subject></message>",
    '<message xmlns="jabber:client"><sent xmlns="urn:xmpp:carbons:2"><forwarded '
    'xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client"><body>x</body></message>'
    '</forwarded></sent></message>',
    "<presence/>", "<iq type='get' id='1'><query xmlns='q'/></iq>", "<a><?pi x?></a>",
    "<message>\u00e9\U0001f600</message>",
    # not a single well-formed element, or not one alone
    "", " ", "<message", "<message>", "<a></b>", "</wrapper>", "<a/></wrapper>",
    "<a/><b/>", "<a/>junk", "junk<a/>", " <a/>", "<a/> ", "<a/>\n", "x>", "<a/>x>",
    "<pushrules-stanza-end/>", "<a/><pushrules-stanza-end/>",
    "<a>&foo;</a>", "<a>&#0;</a>", "<a x='1' x='2'/>", "<p:a/>", "<a>\x00</a>",
    "<?xml version='1.0'?><a/>", "<?pi?><a/>", "<a/><?pi?>",
    "<!-- c --><a/>", "<a><![CDATA[x]]></a>",
    "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
]


FORBIDDEN = {"<a><?pi x?></a>", "<?xml version='1.0'?><a/>", "<?pi?><a/>", "<a/><?pi?>",
             "<!-- c --><a/>", "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>"}


def outcome(xml: str):
    try:
        return "ok", tostring(st.fromstring(xml))
    except st.StanzaError as exc:
        return "refused", str(exc)


def plain(xml: str):
    try:
        return "ok", tostring(plain_fromstring(xml.strip(" \t\r\n")))
    except ParseError as exc:
        return "refused", f"not well-formed XML: {exc}"


def check(xml: str) -> None:
    ours, reference = outcome(xml), plain(xml)
    if xml in FORBIDDEN:
        assert ours[0] == "refused" and "forbidden in XMPP" in ours[1], ours
    elif reference[0] == "refused":
        assert ours == reference  # refused, with the plain parser's own words and position
    else:
        assert ours == reference or ours[0] == "refused", (ours, reference)


@pytest.mark.parametrize("xml", INPUTS)
def test_never_accepts_what_a_parse_alone_refuses(xml):
    check(xml)


def test_plain_stanzas_are_accepted_with_the_same_tree():
    for xml in INPUTS[:7]:
        if xml not in FORBIDDEN:
            assert outcome(xml) == plain(xml)


def test_a_bad_stanza_does_not_spoil_the_next_ones():
    for xml in INPUTS * 2:  # every input after every other, through the same reader
        check(xml)
        good = "<message xmlns='jabber:client' id='n'><body>next</body></message>"
        assert outcome(good) == plain(good)


PIECES = hs.sampled_from(["<a>", "</a>", "<a/>", "<b x='1'>", "</b>", "<pushrules-stanza-end>",
                          "<pushrules-stanza-end/>", "</pushrules-stanza-end>", "</wrapper>",
                          "<wrapper>", "<![CDATA[", "]]>", "<!--", "-->", "<?p", "?>", "x", " ",
                          "&amp;", "&x;", "<", ">", "'", "<!DOCTYPE a>", "<?xml version='1.0'?>"])


@given(hs.lists(PIECES, max_size=8).map("".join))
def test_random_fragments_never_accepted_beyond_the_plain_parser(xml):
    ours, reference = outcome(xml), plain(xml)
    if ours[0] == "ok":
        assert ours == reference, xml


def test_entity_declarations_are_still_refused():
    bomb = "<!DOCTYPE a [<!ENTITY e 'x'><!ENTITY f '&e;&e;'>]><a>&f;</a>"
    with pytest.raises(st.StanzaError):
        st.parse_stanza(bomb)


def test_reader_keeps_nothing_between_stanzas():
    for n in range(50):
        st.fromstring(f"<message id='{n}'><body>b</body></message>")
    assert len(st._reader().root) == 0
