"""The hot-path publish (``publish_xml``) is exactly what the slixmpp stanza classes build: byte
for byte as a component stream writes it, over the XEP-0357 example and generated pushes."""

from __future__ import annotations

import asyncio
from xml.etree.ElementTree import canonicalize

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slixmpp import ComponentXMPP
from slixmpp.xmlstream import ET

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.runtime.xmpp.publish import (
    build_publish,
    fill_publish,
    parse_publish,
    publish_xml,
)

SENDER = "push.example.com"
# One stream object, never connected: what the transport's `self.Iq()` is bound to.
STREAM = ComponentXMPP(SENDER, "secret", "127.0.0.1", 5347)

# XEP-0357 section 5, "Server publishes a push notification": its sender, body, node, secret.
XEP_PUSH = Push(user="user@example.com", jid="push-5.client.example", node="yxs32uqsflafdk3iuqo",
                rule="c/offline", stanzas=("m1",), important=True,
                sender="juliet@capulet.example/balcony", body="Wherefore art thou, Romeo?",
                options={"secret": "eruio234vzxc2kla-91"})
CONFIGS = [Config(), Config(include_sender=True, include_body=True),
           Config(include_body=True, important_body="Neue Nachricht & mehr")]


def slixmpp_bytes(push: Push, config: Config, iq_id: str) -> str:
    iq = STREAM.Iq()
    iq["id"] = iq_id
    iq["from"] = SENDER
    return str(fill_publish(iq, push, config))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("options", [XEP_PUSH.options, {}, {"secret": "s", "endpoint": ""}])
def test_xep_example_byte_for_byte(config, options):
    push = Push(*XEP_PUSH[:8], options=options)
    assert publish_xml(push, config, SENDER, "n12") == slixmpp_bytes(push, config, "n12")


def test_the_stand_alone_build_is_the_same_xml():
    config = CONFIGS[1]
    slow = build_publish(XEP_PUSH, config, SENDER)
    slow["id"] = "n12"
    # The stand-alone IQ says jabber:client; on a component stream the namespace is implied.
    fast = publish_xml(XEP_PUSH, config, SENDER, "n12").replace(
        "<iq ", '<iq xmlns="jabber:client" ', 1)
    assert canonicalize(xml_data=fast) == canonicalize(xml_data=str(slow))


def test_what_the_app_server_reads_back():
    iq = STREAM.Iq(xml=ET.fromstring(publish_xml(XEP_PUSH, CONFIGS[1], SENDER, "n1")))
    published = parse_publish(iq)
    assert published.node == XEP_PUSH.node
    assert published.summary == {"message-count": "1",
                                 "last-message-sender": "juliet@capulet.example/balcony",
                                 "last-message-body": "Wherefore art thou, Romeo?"}
    assert published.options == XEP_PUSH.options


# Text as a server may hand it over: markup characters, quotes, non-ASCII, line breaks.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1,
                                      blacklist_characters="\x00"), max_size=30)
WORD = st.text(alphabet="abcXYZ019-._@/&<>'\" ", min_size=1, max_size=20)


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    return Push(user=draw(WORD), jid=draw(WORD), node=draw(WORD), rule="c/offline",
                stanzas=tuple(draw(st.lists(st.just("m"), min_size=1, max_size=5))),
                important=draw(st.booleans()), sender=draw(st.none() | TEXT),
                body=draw(st.none() | TEXT),
                options=draw(st.dictionaries(WORD, TEXT, max_size=3)),
                urgent=draw(st.booleans()))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(push=pushes(), config=st.sampled_from(CONFIGS), iq_id=WORD)
def test_generated_pushes_byte_for_byte(push, config, iq_id):
    assert publish_xml(push, config, SENDER, iq_id) == slixmpp_bytes(push, config, iq_id)


def test_the_raw_publish_is_masked_in_logs():
    from pushrules.runtime.xmpp.secrets import mask_publish_options

    text = "SEND: " + publish_xml(XEP_PUSH, CONFIGS[1], SENDER, "n1")
    masked = mask_publish_options(text)
    assert XEP_PUSH.options["secret"] not in masked
    assert "Wherefore art thou" in masked  # only publish-options values are masked


def test_stanza_ids_are_unique_in_a_stream_and_between_transports():
    """The publish's id is how its answer is matched (replies.py): a repeat within a stream
    would hand one push's answer to another; two transports (two runs) must not share ids."""
    from pushrules.runtime.xmpp.transport import PushTransport

    async def ids() -> tuple[list[str], list[str]]:
        one = PushTransport("push.example.org", "s", "127.0.0.1", 1, Config())
        two = PushTransport("push.example.org", "s", "127.0.0.1", 1, Config())
        return [one.new_id() for _ in range(20_000)], [two.new_id() for _ in range(100)]

    first, second = asyncio.run(ids())
    assert len(set(first)) == len(first)
    assert not set(first) & set(second)
