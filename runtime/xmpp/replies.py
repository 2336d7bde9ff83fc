"""Matching IQ answers to publishes in O(1): one stream handler and a dict by id.

``Iq.send()`` registers one handler per IQ sent, and slixmpp offers every incoming stanza to
every registered handler in turn: with 512 publishes in flight, each answer is matched against
512 handlers. ``Replies`` registers one handler for all of them: a stanza is an answer when it is
an ``<iq type='result'|'error'>`` whose id is waiting and whose sender is the JID the publish
went to (an answer from anyone else is not one: the check slixmpp's own matcher makes).
"""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp.xmlstream import ET, StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

ANSWER_TYPES = ("result", "error")


class _Waiting:
    __slots__ = ("future", "to")

    def __init__(self, future: asyncio.Future[ET.Element], to: str) -> None:
        self.future = future
        self.to = to


class _AnswerMatcher(MatcherBase):
    def __init__(self, waiting: dict[str, _Waiting]) -> None:
        super().__init__(None)
        self.waiting = waiting

    def match(self, stanza: StanzaBase) -> bool:
        xml = stanza.xml
        if not xml.tag.endswith("}iq") or xml.get("type") not in ANSWER_TYPES:
            return False
        entry = self.waiting.get(xml.get("id", ""))
        return entry is not None and _same_jid(xml.get("from", ""), entry.to)


def _same_jid(sender: str, to: str) -> bool:
    # Addressed to a bare JID or a domain, the answer may come from it or a resource of it.
    return sender == to or sender.startswith(to + "/")


class Replies:
    """``await replies.request(stream, xml, iq_id, to, timeout)``: send one IQ written as a
    string and return the answer's element (type result or error); TimeoutError after
    ``timeout`` seconds."""

    def __init__(self, stream: Any, name: str = "pushrules-replies") -> None:
        self.stream = stream
        self._waiting: dict[str, _Waiting] = {}
        stream.register_handler(Callback(name, _AnswerMatcher(self._waiting), self._answer))

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def _answer(self, stanza: StanzaBase) -> None:
        entry = self._waiting.pop(stanza.xml.get("id", ""), None)
        if entry is not None and not entry.future.done():
            entry.future.set_result(stanza.xml)

    async def request(self, xml: str, iq_id: str, to: str, timeout: float) -> ET.Element:
        if iq_id in self._waiting:
            raise ValueError(f"an IQ with id {iq_id!r} is already waiting for its answer")
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        self._waiting[iq_id] = _Waiting(future, to)
        try:
            self.stream.send_raw(xml)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(iq_id, None)
