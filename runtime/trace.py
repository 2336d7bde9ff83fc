"""Contract traces: JSON Lines -> typed events, with errors that name the line and field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any, NamedTuple

from pushrules.generated.events import EVENT_CLASSES
from pushrules.model import events as ev
from pushrules.model.errors import PushrulesError
from pushrules.model.stanza import Stanza, StanzaError, parse_stanza

_decoder = json.JSONDecoder()
_decode = _decoder.decode
_scan = _decoder.scan_once  # the C scanner behind decode, without its whitespace passes


def _json(text: str) -> Any:
    """json.loads for a stripped line: the scanner alone when the whole line is one value,
    else decode, which raises the usual JSONDecodeError."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        return _decode(text)
    return value if end == len(text) else _decode(text)


class TraceError(PushrulesError, ValueError):
    """A malformed trace line. ``str()`` names the line and, where there is one, the field."""

    def __init__(self, line: int, message: str, field: str | None = None) -> None:
        self.line = line
        self.field = field
        where = f"line {line}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


class TraceLine(NamedTuple):
    line: int
    event: Any


def parse_event(data: Any, line: int = 0) -> Any:
    """One decoded JSON value -> a typed event, or TraceError."""
    name = data.get("event") if type(data) is dict else None
    plan = _PLANS.get(name) if type(name) is str else None
    if plan is None:
        return _parse_event(data, line)
    cls, steps = plan
    values = []
    for field, name, required, fast in steps:
        raw = data.get(name)
        if raw is None:
            if required:
                raise TraceError(line, f"missing (required by {cls.EVENT})", name)
            values.append(None)
            continue
        value = fast(raw)
        values.append(_convert(field, raw, line) if value is _SLOW else value)
    return cls(*values)


def _parse_event(data: Any, line: int) -> Any:
    """The general path of parse_event: every check, with the error naming what is wrong."""
    if not isinstance(data, dict):
        raise TraceError(line, f"expected a JSON object, got {type(data).__name__}")
    name = data.get("event")
    if name is None:
        raise TraceError(line, "missing", "event")
    if not isinstance(name, str):
        raise TraceError(line, "must be a string", "event")
    spec = ev.EVENTS_BY_NAME.get(name)
    if spec is None:
        known = ", ".join(s.name for s in ev.EVENTS)
        raise TraceError(line, f"unknown event {name!r} (known: {known})", "event")
    values = {}
    for field in spec.fields:
        raw = data.get(field.name)
        if raw is None:
            if field.required:
                raise TraceError(line, f"missing (required by {name})", field.name)
            values[field.attr] = None
            continue
        values[field.attr] = _convert(field, raw, line)
    return EVENT_CLASSES[name](**values)


# Fast checks for well-formed values: each returns the converted value, or _SLOW to leave the
# value to _convert (which accepts the same values and words the error for the others).
_SLOW = object()


def _fast_full_jid(raw: Any) -> Any:
    if type(raw) is str:
        bare, slash, resource = raw.partition("/")
        if slash and resource and bare and bare[0] != "@":
            return raw
    return _SLOW


def _fast_bare_jid(raw: Any) -> Any:
    return raw if type(raw) is str and raw and "/" not in raw and raw[0] != "@" else _SLOW


def _fast_text(raw: Any) -> Any:
    return raw if type(raw) is str and raw else _SLOW


def _fast_bool(raw: Any) -> Any:
    return raw if raw is True or raw is False else _SLOW


def _fast_error_type(raw: Any) -> Any:
    return raw if type(raw) is str and raw in ev.ERROR_TYPES else _SLOW


def _fast_stanza(raw: Any) -> Any:
    if type(raw) is str:
        try:
            return parse_stanza(raw)
        except StanzaError:
            pass
    return _SLOW


def _fast_queue(raw: Any) -> Any:
    if type(raw) is list:
        try:
            return tuple([parse_stanza(item) for item in raw])
        except (StanzaError, TypeError):
            pass
    return _SLOW


def _slow(raw: Any) -> Any:
    return _SLOW


_FAST = {
    ev.FULL_JID: _fast_full_jid, ev.BARE_JID: _fast_bare_jid, ev.TEXT: _fast_text,
    ev.BOOL: _fast_bool, ev.ERROR_TYPE: _fast_error_type, ev.STANZA: _fast_stanza,
    ev.QUEUE: _fast_queue,
}


def _plan(spec: ev.EventSpec) -> tuple[type, tuple[tuple[Any, ...], ...]]:
    """The event class and one step per field, in the order of the class's fields (so the
    values are passed positionally)."""
    cls = EVENT_CLASSES[spec.name]
    by_attr = {f.attr: f for f in spec.fields}
    return cls, tuple((f, f.name, f.required, _FAST.get(f.kind, _slow))
                      for f in (by_attr[c.name] for c in fields(cls)))


_PLANS = {spec.name: _plan(spec) for spec in ev.EVENTS}


def _convert(field: ev.FieldSpec, raw: Any, line: int) -> Any:
    kind, name = field.kind, field.name

    def fail(message: str) -> TraceError:
        return TraceError(line, message, name)

    if kind == ev.BOOL:
        if not isinstance(raw, bool):
            raise fail(f"must be true or false, got {raw!r}")
        return raw
    if kind == ev.QUEUE:
        if not isinstance(raw, list):
            raise fail("must be a list of stanza XML strings")
        stanzas = []
        for index, item in enumerate(raw):
            if not isinstance(item, str):
                raise TraceError(line, "must be a stanza XML string", f"{name}[{index}]")
            try:
                stanzas.append(parse_stanza(item))
            except StanzaError as exc:
                raise TraceError(line, str(exc), f"{name}[{index}]") from None
        return tuple(stanzas)
    if kind == ev.TIME:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != raw \
                or raw in (float("inf"), float("-inf")):
            raise fail(f"must be a number of seconds, got {raw!r}")
        return raw
    if kind in ev.CHOICES:
        choices = ev.CHOICES[kind]
        if raw not in choices:
            raise fail(f"{raw!r} is not one of {', '.join(choices)}")
        return raw
    if kind == ev.OPTIONS:
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise fail("must be an object of string values")
        return dict(raw)
    if not isinstance(raw, str):
        raise fail(f"must be a string, got {type(raw).__name__}")
    if kind == ev.STANZA:
        try:
            return parse_stanza(raw)
        except StanzaError as exc:
            raise fail(str(exc)) from None
    if kind == ev.ERROR_TYPE:
        if raw not in ev.ERROR_TYPES:
            raise fail(f"{raw!r} is not one of {', '.join(ev.ERROR_TYPES)} or null")
        return raw
    if not raw:
        raise fail("must not be empty")
    # Structure checks only: the server has already validated and normalised its JIDs.
    if kind == ev.FULL_JID:
        bare, slash, resource = raw.partition("/")
        if not slash or not resource or not bare or bare.startswith("@"):
            raise fail(f"{raw!r} is not a full JID (user@host/resource)")
    elif kind == ev.BARE_JID and ("/" in raw or raw.startswith("@")):
        raise fail(f"{raw!r} is not a bare JID (user@host)")
    return raw


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
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise TraceError(number, f"not UTF-8: byte {exc.start + 1} "
                                         f"({raw[exc.start]:#04x})") from None
        else:
            text = raw
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = _json(stripped)
        except json.JSONDecodeError as exc:
            raise TraceError(number, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
        event = parse_event(data, number)
        at = event.at
        if at is not None:
            if at < last_at:  # contract v2: times never decrease within a trace
                raise TraceError(number, f"{at!r} is earlier than the previous event's "
                                         f"{last_at!r} (times never decrease)", "at")
            last_at = at
        yield TraceLine(number, event)
