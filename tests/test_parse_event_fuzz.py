"""parse_event raises TraceError and nothing else, whatever it is given: arbitrary bytes,
arbitrary JSON, and contract events with fields replaced by arbitrary values."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replaykit import PHONE, PUSH, msg

from pushrules.generated.events import EVENT_CLASSES
from pushrules.model.events import EVENTS
from pushrules.runtime.trace import TraceError, parse_event

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
GOOD = {"session": PHONE, "user": "bob@example.org", "for_user": "bob@example.org",
        "jid": PUSH, "node": "n1", "secret": "s", "publish_options": {"a": "b"},
        "queue": [msg("m1")], "stanza": msg("m2"), "ok": False, "error_type": "wait",
        # version 2
        "at": 1.5, "state": "inactive", "chat": "room@muc.example.org", "notify": "on-mention",
        "nick": "bobby"}
TEXTS = st.text(alphabet=st.characters(codec=None), max_size=40) | st.sampled_from(
    ["bob@@x.org/phone", "a@b/", "@x", "x\x00y", "\ud800", "<message/>", "a" * 1100,
     "<!DOCTYPE a><a/>", "<?pi?><message/>"])


def parses_or_refuses(data: object, line: int = 7) -> None:
    try:
        event = parse_event(data, line)
    except TraceError as exc:
        assert exc.line == line
        assert str(exc).startswith(f"line {line}")
        return
    assert event is None or type(event) in EVENT_CLASSES.values()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    parses_or_refuses(raw)


@settings(max_examples=300)
@given(JSON)
def test_arbitrary_json_values_and_their_text(value: object) -> None:
    parses_or_refuses(value)
    parses_or_refuses(json.dumps(value))
    parses_or_refuses(json.dumps(value).encode())


@settings(max_examples=500)
@given(st.sampled_from(EVENTS), st.data())
def test_contract_events_with_any_field_replaced(spec, data) -> None:
    fields = {f.name: GOOD[f.name] for f in spec.fields}
    assert type(parse_event({"event": spec.name, **fields})) is EVENT_CLASSES[spec.name]
    name = data.draw(st.sampled_from([f.name for f in spec.fields]))
    fields[name] = data.draw(JSON | TEXTS | st.lists(TEXTS, max_size=3))
    parses_or_refuses({"event": spec.name, **fields})
    parses_or_refuses(json.dumps({"event": spec.name, **fields}))


def test_pathological_lines() -> None:
    for line in ["[" * 100_000, '{"a":' * 100_000, "9" * 5000, "-" + "9" * 5000,
                 '{"event": "session-bind", "session": ' + "1" * 4301 + "}",
                 "1e999999", '"' + "\\" * 10_001 + '"', "\ufeff{}", "{}" * 1000]:
        parses_or_refuses(line)
        parses_or_refuses(line.encode("utf-8", "surrogatepass"))
