"""The XEP-0357 publish IQ against the XEP's own example (section 5, "Publishing"), the summary
options, error reading and secret masking."""

from __future__ import annotations

import logging

import pytest
from slixmpp import Iq
from slixmpp.xmlstream import ET

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.runtime.xmpp.publish import PublishError, build_publish, parse_publish
from pushrules.runtime.xmpp.secrets import SecretMaskFilter, install_secret_mask
from pushrules.runtime.xmpp.transport import read_error

# XEP-0357 example "Server publishes a push notification" (fields as in the XEP).
XEP_EXAMPLE = """
<iq xmlns='jabber:client' type='set' from='user@example.com' to='push-5.client.example' id='n12'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='yxs32uqsflafdk3iuqo'>
      <item>
        <notification xmlns='urn:xmpp:push:0'>
          <x xmlns='jabber:x:data'>
            <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
            <field var='message-count'><value>1</value></field>
            <field var='last-message-sender'><value>juliet@capulet.example/balcony</value></field>
            <field var='last-message-body'><value>Wherefore art thou, Romeo?</value></field>
          </x>
        </notification>
      </item>
    </publish>
    <publish-options>
      <x xmlns='jabber:x:data' type='submit'>
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value>
        </field>
        <field var='secret'><value>eruio234vzxc2kla-91</value></field>
      </x>
    </publish-options>
  </pubsub>
</iq>"""

SECRET = "eruio234vzxc2kla-91"


def push(**changes) -> Push:
    values = dict(user="user@example.com", jid="push-5.client.example",
                  node="yxs32uqsflafdk3iuqo", rule="c/offline", stanzas=("m1",), important=True,
                  sender="juliet@capulet.example/balcony", body="Wherefore art thou, Romeo?",
                  options={"secret": SECRET})
    values.update(changes)
    return Push(**values)


def shape(element: ET.Element) -> list[tuple]:
    """Element paths with namespaces and field vars (values and attributes other than var,
    node and the iq's addressing left out)."""
    out = []

    def walk(el: ET.Element, path: str) -> None:
        here = f"{path}/{el.tag}"
        out.append((here, el.get("var"), el.get("node")))
        for child in el:
            walk(child, here)

    walk(element, "")
    return out


def without_values(rows: list[tuple]) -> list[tuple]:
    return [r for r in rows if not r[0].endswith("}value")]


def test_publish_matches_the_xep_example():
    config = Config(include_sender=True, include_body=True)
    ours = build_publish(push(), config, "user@example.com")
    theirs = ET.fromstring(XEP_EXAMPLE)
    assert without_values(shape(ours.xml)) == without_values(shape(theirs))
    assert ours["type"] == "set" and ours["to"] == "push-5.client.example"
    assert ours["from"] == "user@example.com"
    mine, xep = parse_publish(ours), parse_publish(Iq(xml=theirs))
    assert mine.node == xep.node == "yxs32uqsflafdk3iuqo"
    assert mine.summary == xep.summary
    assert mine.options == xep.options == {"secret": SECRET}


def test_form_types_are_hidden_and_forms_submitted():
    xml = build_publish(push(), Config(), "example.com").xml
    forms = xml.findall(".//{jabber:x:data}x")
    assert [f.get("type") for f in forms] == ["submit", "submit"]
    for form in forms:
        form_type = form.find("{jabber:x:data}field[@var='FORM_TYPE']")
        assert form_type is not None and form_type.get("type") == "hidden"


@pytest.mark.parametrize(
    ("config", "important", "expected"),
    [
        (Config(), True, {"message-count": "2", "last-message-body": "New Message!"}),
        (Config(), False, {"message-count": "2"}),
        (Config(important_body="Wake up"), True,
         {"message-count": "2", "last-message-body": "Wake up"}),
        (Config(include_sender=True), True,
         {"message-count": "2", "last-message-sender": "juliet@capulet.example/balcony",
          "last-message-body": "New Message!"}),
        (Config(include_body=True), True,
         {"message-count": "2", "last-message-body": "Wherefore art thou, Romeo?"}),
        (Config(include_body=True, include_sender=True), False,
         {"message-count": "2", "last-message-sender": "juliet@capulet.example/balcony"}),
    ],
)
def test_summary_follows_the_options(config, important, expected):
    body = "Wherefore art thou, Romeo?" if important else None
    p = push(stanzas=("m1", "m2"), important=important, body=body)
    assert parse_publish(build_publish(p, config, "example.com")).summary == expected


def test_include_body_without_a_body_falls_back_to_the_placeholder():
    p = push(body=None)  # important without a body: e.g. an OMEMO message
    summary = parse_publish(build_publish(p, Config(include_body=True), "example.com")).summary
    assert summary["last-message-body"] == "New Message!"


def test_no_publish_options_without_stored_options():
    iq = build_publish(push(options={}), Config(), "example.com")
    assert iq.xml.find(".//{http://jabber.org/protocol/pubsub}publish-options") is None
    assert parse_publish(iq).options == {}


def test_all_stored_options_are_published():
    p = push(options={"secret": SECRET, "endpoint": "https://push.example/x"})
    assert parse_publish(build_publish(p, Config(), "example.com")).options == p.options


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x: x.find(".//{http://jabber.org/protocol/pubsub}publish").attrib.pop("node"),
         "no node"),
        (lambda x: x.find(".//{jabber:x:data}value").__setattr__("text", "other"),
         "FORM_TYPE 'other'"),
        (lambda x: x.find(".//{http://jabber.org/protocol/pubsub}item").remove(
            x.find(".//{urn:xmpp:push:0}notification")), "no <notification"),
    ],
)
def test_parse_names_what_is_wrong(mutate, message):
    xml = ET.fromstring(XEP_EXAMPLE)
    mutate(xml)
    with pytest.raises(PublishError, match=message):
        parse_publish(Iq(xml=xml))


@pytest.mark.parametrize("ns", ["jabber:component:accept", "jabber:client"])
def test_error_type_is_read_in_either_namespace(ns):
    xml = ET.fromstring(
        f"<iq xmlns='{ns}' type='error' id='1'><error type='wait'>"
        "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>busy</text></error></iq>")
    answer = read_error(xml)
    assert (answer.ok, answer.error_type) == (False, "wait")
    assert answer.condition == "resource-constraint"


def test_error_without_or_with_unknown_type_has_none():
    for attrs in ("", " type='bogus'"):
        xml = ET.fromstring(f"<iq xmlns='jabber:component:accept' type='error' id='1'>"
                            f"<error{attrs}><undefined-condition "
                            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
        assert read_error(xml).error_type is None


def test_slixmpp_stanza_logging_never_shows_the_secret(caplog):
    install_secret_mask()
    iq = build_publish(push(), Config(), "example.com")
    logger = logging.getLogger("slixmpp.xmlstream.xmlstream")
    with caplog.at_level(logging.DEBUG, logger="slixmpp"):
        logger.debug("SEND: %s", iq)  # exactly how slixmpp logs what it sends
        logger.debug("RECV: %s", iq)
    text = caplog.text
    assert "SEND:" in text and "RECV:" in text
    assert SECRET not in text
    assert "<value>***</value>" in text
    assert "yxs32uqsflafdk3iuqo" in text  # only publish-options values are masked


def test_mask_keeps_unrelated_records():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", ("kept",), None)
    SecretMaskFilter().filter(record)
    assert record.getMessage() == "value kept"


def test_explain_and_input_errors_never_show_the_secret():
    import io
    import json

    from pushrules.runtime.replay import replay

    enable = {"event": "push-enable", "session": "bob@example.org/phone", "jid": "push.example",
              "node": "n1", "secret": SECRET}
    trace = [
        json.dumps({"event": "session-bind", "session": "bob@example.org/phone"}),
        json.dumps(enable),
        json.dumps({"event": "message/offline/handle", "user": "bob@example.org",
                    "stanza": "<message xmlns='jabber:client' id='m1' to='bob@example.org'>"
                              "<body>x</body></message>"}),
        json.dumps({**enable, "publish_options": {"secret": SECRET, "n": 1}}),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert replay(trace, out, err, explain=True) == 2
    assert '"stanzas": ["m1"]' in out.getvalue() and "line 4, field 'publish_options'" in \
        err.getvalue()
    assert SECRET not in out.getvalue() + err.getvalue()


def test_loggers_created_later_are_masked_too(caplog):
    install_secret_mask()
    iq = build_publish(push(), Config(), "example.com")
    late = logging.getLogger("slixmpp.plugins.some_plugin_loaded_later")
    with caplog.at_level(logging.DEBUG, logger="slixmpp"):
        late.debug("stanza %s", iq)
    assert "publish-options" in caplog.text and SECRET not in caplog.text


def test_an_urgent_push_carries_the_high_priority_marker_and_no_other_does() -> None:
    from pushrules.runtime.xmpp.publish import PRIORITY_NS

    for urgent in (True, False):
        push = Push("bob@example.org", "push.example.net", "n1",
                    "e/call" if urgent else "a/queued", ("p1",), True, urgent=urgent)
        iq = build_publish(push, Config(), "pushrules.example.org")
        assert parse_publish(iq).urgent is urgent
        found = iq.xml.find(f".//{{{PRIORITY_NS}}}priority")
        assert (found is not None and found.text == "high") is urgent
