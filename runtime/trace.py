"""Contract traces: JSON Lines -> typed events, with errors that name the line and field.

One path reads every line: bytes -> UTF-8 -> JSON (bounded in depth and number size) -> one
converter per field kind (model/events.py), which checks and converts in one step. Whatever
the input, the only exception that leaves ``parse_event`` is ``TraceError``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from functools import lru_cache
from typing import Any, NamedTuple

from slixmpp.jid import JID

from pushrules.generated.events import EVENT_CLASSES
from pushrules.model import events as ev
from pushrules.model.errors import PushrulesError
from pushrules.model.stanza import Stanza, StanzaError, parse_stanza

MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest input line, in bytes (UTF-8, newline excluded): a smacks queue of thousands of
ordinary stanzas, or 32 of the largest a default Prosody accepts. Readers enforce it while
reading; ``parse_event`` refuses a longer line it is given."""
MAX_JSON_DEPTH = 32
"""Nesting of JSON arrays and objects; the contract needs 2."""
MAX_NUMBER_DIGITS = 100
"""Digits of a JSON integer; the contract has none (v2's ``at`` is seconds)."""
MAX_NODE_CHARS = 1024
"""A pubsub node name (XEP-0357 nodes are short random ids)."""
MAX_TEXT_CHARS = 4096
"""The secret and every publish-options name and value."""

_SHOWN = 80  # characters of a bad value quoted in an error


class TraceError(PushrulesError, ValueError):
    """A malformed trace line. ``str()`` names the line and, where there is one, the field;
    ``reason`` is the message alone."""

    def __init__(self, line: int, message: str, field: str | None = None) -> None:
        self.line = line
        self.field = field
        self.reason = message
        where = f"line {line}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


class TraceLine(NamedTuple):
    line: int
    event: Any


class _Invalid(Exception):
    """A field value refused by its converter; ``at`` is appended to the field's name."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def _shown(value: Any) -> str:
    """A bad value as an error quotes it: repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} chars)"


# --- JSON -------------------------------------------------------------------------------------

class _JSONLimit(Exception):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _JSONLimit(f"a number of {len(digits.lstrip('-'))} digits "
                         f"(at most {MAX_NUMBER_DIGITS})")
    return int(digits)


def _parse_constant(name: str) -> Any:
    raise _JSONLimit(f"{name} is not a JSON number")


_decoder = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _too_deep(text: str) -> bool:
    """True when arrays and objects nest deeper than MAX_JSON_DEPTH. The bracket count
    decides almost every line; only a line with many brackets is measured exactly (brackets
    inside strings do not count), before the recursive decoder sees it."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += _DEPTH_STEP[bracket]
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _json(text: str, line: int) -> Any:
    """One JSON value filling the whole (stripped) line, or TraceError."""
    if _too_deep(text):
        raise TraceError(line, f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value, end = _decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise TraceError(line, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except _JSONLimit as exc:
        raise TraceError(line, f"not valid JSON: {exc}") from None
    except RecursionError:  # not reached below MAX_JSON_DEPTH; kept as the last guard
        raise TraceError(line, "not valid JSON: nested too deep") from None
    if end != len(text):
        raise TraceError(line, f"not valid JSON: Extra data at column {end + 1}")
    return value


def _text_of(raw: bytes | bytearray | str, line: int) -> str:
    """The line as text, length-checked; bytes are decoded as UTF-8 (a BOM on line 1 is
    dropped)."""
    if isinstance(raw, str):
        if len(raw) > MAX_LINE_BYTES // 4 and len(raw.encode("utf-8", "surrogatepass")) > \
                MAX_LINE_BYTES:
            raise TraceError(line, f"line too long (more than {MAX_LINE_BYTES} bytes)")
        return raw
    if len(raw) > MAX_LINE_BYTES and len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
        raise TraceError(line, f"line too long: more than {MAX_LINE_BYTES} bytes")
    try:
        return bytes(raw).decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(line, f"not UTF-8: byte {exc.start + 1} ({raw[exc.start]:#04x})") \
            from None


# --- field converters: check and convert in one step, or raise _Invalid ------------------------

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(raw: Any, limit: int, *, empty: bool = False) -> str:
    if type(raw) is not str:
        raise _Invalid(f"must be a string, got {type(raw).__name__}")
    if not raw and not empty:
        raise _Invalid("must not be empty")
    if len(raw) > limit:
        raise _Invalid(f"too long: {len(raw)} characters (at most {limit})")
    if raw.isascii() and raw.isprintable():  # the usual case: XML text for sure
        return raw
    bad = _NOT_XML.search(raw)
    if bad is not None:
        raise _Invalid(f"holds {bad.group()!r} at character {bad.start() + 1}, which XML "
                       "cannot carry")
    return raw


def _checked_jid(raw: str, want: str) -> str:
    """``raw`` if it is a valid JID of the wanted form (RFC 7622, by slixmpp's JID class)."""
    try:
        jid = JID(raw)
    except Exception as exc:  # InvalidJID, or what the Rust side raises for odd strings
        raise _Invalid(f"{_shown(raw)} is not a valid JID: {exc}") from None
    if want == ev.FULL_JID and not (jid.node and jid.resource):
        raise _Invalid(f"{_shown(raw)} is not a full JID (user@host/resource)")
    if want == ev.BARE_JID and not (jid.node and not jid.resource):
        raise _Invalid(f"{_shown(raw)} is not a bare JID (user@host)")
    return raw


# A trace names the same JIDs over and over: the usual ones (short) are checked once. Bounded
# in entries and in the length cached, so the cache holds at most ~16 MB.
_CACHED_JID_CHARS = 256
_cached_jid = lru_cache(maxsize=1 << 15)(_checked_jid)


def _jid_of(kind: str) -> Callable[[Any], str]:
    def convert(raw: Any) -> str:
        if type(raw) is not str:
            raise _Invalid(f"must be a string, got {type(raw).__name__}")
        if not raw:
            raise _Invalid("must not be empty")
        if len(raw) <= _CACHED_JID_CHARS:
            return _cached_jid(raw, kind)
        return _checked_jid(raw, kind)
    return convert


def _node(raw: Any) -> str:
    return _xml_text(raw, MAX_NODE_CHARS)


def _text(raw: Any) -> str:
    return _xml_text(raw, MAX_TEXT_CHARS)


def _bool(raw: Any) -> bool:
    if raw is True or raw is False:
        return raw
    raise _Invalid(f"must be true or false, got {_shown(raw)}")


def _error_type(raw: Any) -> str:
    if type(raw) is str and raw in ev.ERROR_TYPES:
        return raw
    if type(raw) is not str:
        raise _Invalid(f"must be a string, got {type(raw).__name__}")
    raise _Invalid(f"{_shown(raw)} is not one of {', '.join(ev.ERROR_TYPES)} or null")


def _stanza(raw: Any) -> Stanza:
    if type(raw) is not str:
        raise _Invalid(f"must be a string, got {type(raw).__name__}")
    try:
        return parse_stanza(raw)
    except StanzaError as exc:
        raise _Invalid(str(exc)) from None


def _queue(raw: Any) -> tuple[Stanza, ...]:
    if type(raw) is not list:
        raise _Invalid("must be a list of stanza XML strings")
    stanzas = []
    for index, item in enumerate(raw):
        if type(item) is not str:
            raise _Invalid("must be a stanza XML string", f"[{index}]")
        try:
            stanzas.append(parse_stanza(item))
        except StanzaError as exc:
            raise _Invalid(str(exc), f"[{index}]") from None
    return tuple(stanzas)


def _options(raw: Any) -> dict[str, str]:
    if type(raw) is not dict or not all(type(v) is str for v in raw.values()):
        raise _Invalid("must be an object of string values")
    for name, value in raw.items():
        try:
            _xml_text(name, MAX_TEXT_CHARS)
            _xml_text(value, MAX_TEXT_CHARS, empty=True)
        except _Invalid as exc:
            raise _Invalid(exc.message, f"[{_shown(name)}]") from None
    return dict(raw)


def _time(raw: Any) -> float:
    if type(raw) is int or (type(raw) is float and math.isfinite(raw)):
        return raw
    raise _Invalid(f"must be a number of seconds, got {_shown(raw)}")


def _choice_of(kind: str) -> Callable[[Any], str]:
    choices = ev.CHOICES[kind]

    def choice(raw: Any) -> str:
        if type(raw) is str and raw in choices:
            return raw
        if type(raw) is not str:
            raise _Invalid(f"must be a string, got {type(raw).__name__}")
        raise _Invalid(f"{_shown(raw)} is not one of {', '.join(choices)}")

    return choice


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    ev.FULL_JID: _jid_of(ev.FULL_JID), ev.BARE_JID: _jid_of(ev.BARE_JID),
    ev.JID: _jid_of(ev.JID), ev.NODE: _node, ev.TEXT: _text, ev.BOOL: _bool,
    ev.ERROR_TYPE: _error_type, ev.STANZA: _stanza, ev.QUEUE: _queue, ev.OPTIONS: _options,
    ev.TIME: _time, ev.NOTIFY: _choice_of(ev.NOTIFY), ev.CSI: _choice_of(ev.CSI),
}
"""Field kind -> converter (model/events.py names the kinds)."""

Step = tuple[str, bool, Callable[[Any], Any]]


def _plan(spec: ev.EventSpec) -> tuple[Any, tuple[Step, ...]]:
    """The event class and one step per field, in the order of the class's fields (so the
    values are passed positionally)."""
    cls = EVENT_CLASSES[spec.name]
    by_attr = {f.attr: f for f in spec.fields}
    return cls, tuple((f.name, f.required, CONVERTERS[f.kind])
                      for f in (by_attr[c.name] for c in fields(cls)))


_PLANS = {spec.name: _plan(spec) for spec in ev.EVENTS}
_KNOWN = ", ".join(spec.name for spec in ev.EVENTS)


# --- events -----------------------------------------------------------------------------------

def parse_event(data: Any, line: int = 0) -> Any:
    """A typed event from one input line (bytes or str: decoded, length- and depth-checked)
    or from one decoded JSON value. Returns None for a blank or ``#`` comment line; raises
    TraceError, and nothing else, for anything that is not a valid contract event."""
    try:
        if isinstance(data, (bytes, bytearray, str)):  # noqa: UP038 - a tuple is faster
            text = _text_of(data, line).strip()
            if not text or text.startswith("#"):
                return None
            data = _json(text, line)
        return _event(data, line)
    except TraceError:
        raise
    except Exception as exc:  # a bug or an exhausted resource: still one line's error
        raise TraceError(line, f"could not be read: {type(exc).__name__}: {exc}") from None


def _event(data: Any, line: int) -> Any:
    if type(data) is not dict:
        raise TraceError(line, f"expected a JSON object, got {_json_type(data)}")
    name = data.get("event")
    plan = _PLANS.get(name) if type(name) is str else None
    if plan is None:
        raise _bad_name(name, line)
    cls, steps = plan
    values: list[Any] = []
    for field, required, convert in steps:
        raw = data.get(field)
        if raw is None:
            if required:
                raise TraceError(line, f"missing (required by {name})", field)
            values.append(None)
            continue
        try:
            values.append(convert(raw))
        except _Invalid as exc:
            raise TraceError(line, exc.message, field + exc.at) from None
    return cls(*values)


def _bad_name(name: Any, line: int) -> TraceError:
    if name is None:
        return TraceError(line, "missing", "event")
    if type(name) is not str:
        return TraceError(line, "must be a string", "event")
    return TraceError(line, f"unknown event {_shown(name)} (known: {_KNOWN})", "event")


def _json_type(value: Any) -> str:
    return {list: "list", str: "str", int: "int", float: "float", bool: "bool",
            type(None): "null"}.get(type(value), type(value).__name__)


def event_json(event: Any, stanza_xml: Callable[[Stanza], str]) -> dict[str, Any]:
    """A typed event as the contract's JSON object (the inverse of parse_event); stanzas are
    written as ``stanza_xml(stanza)``, None fields are left out."""
    out: dict[str, Any] = {"event": event.EVENT}
    for f in fields(event):
        value = getattr(event, f.name)
        if value is None:
            continue
        if isinstance(value, Stanza):
            value = stanza_xml(value)
        elif isinstance(value, tuple):
            value = [stanza_xml(s) for s in value]
        out[f.name] = value
    return out


def read_trace(lines: Iterable[str | bytes]) -> Iterator[TraceLine]:
    """Typed events, in order; raises TraceError at the first malformed line (lazily, so the
    events before it can be processed first). Byte lines are decoded one by one as UTF-8, so a
    bad byte is reported on its own line instead of failing a whole read-ahead buffer."""
    last_at: float = 0
    for number, raw in enumerate(lines, start=1):
        event = parse_event(raw, number)
        if event is None:
            continue
        at = event.at
        if at is not None:
            if at < last_at:  # contract v2: times never decrease within a trace
                raise TraceError(number, f"{at!r} is earlier than the previous event's "
                                         f"{last_at!r} (times never decrease)", "at")
            last_at = at
        yield TraceLine(number, event)
