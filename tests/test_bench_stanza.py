"""The long-lived stanza reader (model/stanza.py, added for replay speed) accepts exactly what a
parse of the stanza alone accepts, gives the same tree, and leaves the same errors."""

from __future__ import annotations

from xml.etree.ElementTree import ParseError, tostring
from xml.etree.ElementTree import fromstring as plain_fromstring

import pytest
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

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


def outcome(parse, xml: str):
    try:
        return "ok", tostring(parse(xml))
    except (ParseError, DefusedXmlException) as exc:
        return type(exc).__name__, str(exc)


def reference(xml: str):
    return defused_fromstring(xml) if "<!" in xml else plain_fromstring(xml)


@pytest.mark.parametrize("xml", INPUTS)
def test_same_tree_or_same_error_as_a_parse_alone(xml):
    assert outcome(st.fromstring, xml) == outcome(reference, xml)


def test_a_bad_stanza_does_not_spoil_the_next_ones():
    for xml in INPUTS * 2:  # every input after every other, through the same reader
        assert outcome(st.fromstring, xml) == outcome(reference, xml)
        good = "<message xmlns='jabber:client' id='n'><body>next</body></message>"
        assert outcome(st.fromstring, good) == outcome(reference, good)


def test_entity_declarations_are_still_refused():
    bomb = "<!DOCTYPE a [<!ENTITY e 'x'><!ENTITY f '&e;&e;'>]><a>&f;</a>"
    with pytest.raises(st.StanzaError):
        st.parse_stanza(bomb)


def test_reader_keeps_nothing_between_stanzas():
    for n in range(50):
        st.fromstring(f"<message id='{n}'><body>b</body></message>")
    assert len(st._reader().root) == 0
