"""Matching IQ answers to publishes in O(1): one stream handler and a dict by id.

``Iq.send()`` registers one handler per IQ sent, and slixmpp offers every incoming stanza to
every registered handler in turn: with 512 publishes in flight, each answer is matched against
512 handlers. ``Replies`` registers one handler for all of them: a stanza is an answer when it is
an ``<iq type='result'|'error'>`` whose id is waiting and whose sender is the JID the publish
went to (an answer from anyone else is not one: the check slixmpp's own matcher makes).

The IQs requested during one loop iteration are written together at its end (one socket write:
a write per publish was a send() system call each, 16% of the sidecar's CPU in the profile).
"""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp.xmlstream import ET, StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase
from slixmpp.xmlstream.xmlstream import NotConnectedError

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
        self._outgoing: list[str] = []
        self._outgoing_ids: list[str] = []
        stream.register_handler(Callback(name, _AnswerMatcher(self._waiting), self._answer))

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def _answer(self, stanza: StanzaBase) -> None:
        entry = self._waiting.pop(stanza.xml.get("id", ""), None)
        if entry is not None and not entry.future.done():
            entry.future.set_result(stanza.xml)

    async def request(self, xml: str, iq_id: str, to: str, timeout: float) -> ET.Element:
        """NotConnectedError when the stream was down at the end of the iteration (not sent)."""
        if iq_id in self._waiting:
            raise ValueError(f"an IQ with id {iq_id!r} is already waiting for its answer")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ET.Element] = loop.create_future()
        self._waiting[iq_id] = _Waiting(future, to)
        if not self._outgoing:
            loop.call_soon(self._send_outgoing)
        self._outgoing.append(xml)
        self._outgoing_ids.append(iq_id)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(iq_id, None)

    def _send_outgoing(self) -> None:
        xml, ids = "".join(self._outgoing), self._outgoing_ids
        self._outgoing, self._outgoing_ids = [], []
        try:
            self.stream.send_raw(xml)
        except NotConnectedError:
            for iq_id in ids:
                entry = self._waiting.get(iq_id)
                if entry is not None and not entry.future.done():
                    entry.future.set_exception(NotConnectedError())
