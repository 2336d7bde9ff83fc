"""Answers matched by id with one handler (runtime/xmpp/replies.py), over a real Prosody: the
result, an error, nothing (timeout), and an answer with the right id from the wrong JID."""

from __future__ import annotations

import asyncio

import pytest
from harness import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer
from slixmpp import ComponentXMPP

from pushrules.model.config import Config
from pushrules.model.records import Push
from pushrules.runtime.xmpp.publish import publish_xml
from pushrules.runtime.xmpp.replies import Replies
from pushrules.runtime.xmpp.transport import read_error

pytestmark = pytest.mark.integration


def push(node: str) -> Push:
    return Push("ann@localhost", APP_JIDS[0], node, "c/offline", ("m1",), False, None, None,
                {"secret": "s"})


async def component(port: int) -> tuple[ComponentXMPP, Replies]:
    stream = ComponentXMPP(PUSH_JID, PUSH_SECRET, "127.0.0.1", port)
    replies = Replies(stream)
    online = asyncio.Event()
    stream.add_event_handler("session_start", lambda _: online.set())
    stream.connect()
    await asyncio.wait_for(online.wait(), 10)
    return stream, replies


async def ask(replies: Replies, node: str, iq_id: str, timeout: float = 5.0):
    xml = publish_xml(push(node), Config(), PUSH_JID, iq_id)
    return await replies.request(xml, iq_id, APP_JIDS[0], timeout)


def test_answers_are_matched_by_id_and_sender(prosody):
    async def main():
        app = await AppServer(APP_JIDS[0], prosody.port).start()
        other = await AppServer(APP_JIDS[1], prosody.port).start()
        stream, replies = await component(prosody.port)
        try:
            app.answer("n-err", "cancel")
            app.answer("n-none", "none")
            ok, err = await asyncio.gather(ask(replies, "n-ok", "id-1"),
                                           ask(replies, "n-err", "id-2"))
            assert ok.get("type") == "result"
            assert err.get("type") == "error" and read_error(err).error_type == "cancel"
            assert [r.publish.node for r in app.received] == ["n-ok", "n-err"]
            assert app.received[0].publish.options == {"secret": "s"}

            waiting = asyncio.ensure_future(ask(replies, "n-none", "id-3", timeout=1.0))
            await asyncio.sleep(0.2)
            assert replies.in_flight == 1
            with pytest.raises(ValueError, match="already waiting"):
                await ask(replies, "n-none", "id-3")
            # the right id from another JID is not the answer
            other.send_raw(f"<iq type='result' id='id-3' from='{APP_JIDS[1]}' to='{PUSH_JID}'/>")
            with pytest.raises(TimeoutError):
                await waiting
            assert replies.in_flight == 0
        finally:
            await stream.disconnect(wait=1.0)
            await app.stop()
            await other.stop()

    asyncio.run(main())
