"""Where the oracle's reading of the contract and the engine differed, one test each: a
disagreement still open is xfail(strict=True) (it fails as XPASS once the engine is changed);
none is open today."""

from __future__ import annotations

import json

from .traces import engine_replay, oracle_replay

PHONE = "bob@example.org/phone"
M1 = ("<message xmlns='jabber:client' id='m1' from='alice@example.org/pc' "
      "to='bob@example.org' type='chat'><body>{}</body></message>")


def lines(*events: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def test_one_id_twice_in_a_queue_is_pushed_once() -> None:
    """Was a disagreement (the engine pushed ['m1', 'm1']); fixed with issue 13."""
    text = lines({"event": "session-bind", "session": PHONE},
                 {"event": "push-enable", "session": PHONE, "jid": "push.example.net",
                  "node": "n1"},
                 {"event": "smacks-hibernation-start", "session": PHONE,
                  "queue": [M1.format("a"), M1.format("b")]})
    assert oracle_replay(text, version=1).pushes[0]["stanzas"] == ["m1"]
    assert engine_replay(text).pushes == oracle_replay(text, version=1).pushes
