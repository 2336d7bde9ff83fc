"""Push: the decided push record keeps the behaviour of the frozen dataclass it replaced."""

from __future__ import annotations

import copy
import pickle

import pytest

from pushrules.model.records import Push


def _push(**changes: object) -> Push:
    values: dict[str, object] = {
        "user": "u@example.org", "jid": "push.example.net", "node": "n1", "rule": "a/queued",
        "stanzas": ("m1",), "important": True, "sender": "c@example.org/r", "body": "hi",
        "options": {"secret": "TOPSECRET-7"},
    }
    values.update(changes)
    return Push(**values)  # type: ignore[arg-type]


def test_fields_by_name_and_defaults() -> None:
    push = Push("u@example.org", "push.example.net", "n1", "c/offline", ("m1", None), False)
    assert (push.user, push.jid, push.node, push.rule) == (
        "u@example.org", "push.example.net", "n1", "c/offline")
    assert push.stanzas == ("m1", None) and push.important is False
    assert push.sender is None and push.body is None and push.options == {}
    assert push.options is not Push("u", "j", "n", "r", (), False).options  # a fresh dict


def test_immutable() -> None:
    push = _push()
    with pytest.raises(AttributeError):
        push.rule = "b/archive"  # type: ignore[misc]


def test_equality_and_hash_ignore_options() -> None:
    assert _push() == _push(options={})
    assert hash(_push()) == hash(_push(options={"secret": "other"}))
    assert _push() != _push(node="n2")
    assert _push() != tuple(_push())
    with pytest.raises(TypeError):
        _ = _push() < _push()  # type: ignore[operator]


def test_repr_and_json_never_show_options() -> None:
    push = _push()
    assert "TOPSECRET-7" not in repr(push) and "options" not in repr(push)
    assert repr(push).startswith("Push(user='u@example.org', jid='push.example.net'")
    assert push.to_json() == {"user": "u@example.org", "jid": "push.example.net", "node": "n1",
                              "rule": "a/queued", "stanzas": ["m1"], "important": True}


def test_copy_and_pickle_keep_every_field() -> None:
    push = _push()
    for twin in (copy.copy(push), copy.deepcopy(push), pickle.loads(pickle.dumps(push))):
        assert twin == push and twin.options == {"secret": "TOPSECRET-7"}
