"""The XMPP transport: an external component (XEP-0114) on slixmpp that publishes pushes and
reports what the app server answered. Retrying is the dispatcher's business, not this module's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from dataclasses import dataclass

from slixmpp import ComponentXMPP
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.xmlstream import NotConnectedError

from pushrules.model.config import Config
from pushrules.model.events import ERROR_TYPES
from pushrules.model.records import Push

from .publish import publish_xml
from .replies import Replies
from .secrets import install_secret_mask

log = logging.getLogger(__name__)

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one publish: a result, an error (type may be None: no or unknown
    type attribute), or nothing within the IQ timeout."""

    ok: bool
    error_type: str | None = None
    condition: str | None = None
    timed_out: bool = False

    def describe(self) -> str:
        if self.ok:
            return "result"
        if self.timed_out:
            return "timeout"
        return f"error type={self.error_type or 'none'} condition={self.condition or 'none'}"


RESULT = Answer(ok=True)
TIMEOUT = Answer(ok=False, timed_out=True)


class ComponentRefused(ConnectionError):
    """The server closed the component's stream before accepting it (wrong secret, unknown
    component JID): retrying cannot help."""

def read_error(iq_xml: ET.Element) -> Answer:
    """The error of an ``<iq type='error'>``, whatever namespace the <error> child is in.

    Prosody routes a component's stanza with its children in jabber:component:accept, while
    slixmpp's Error plugin only looks in jabber:client; so read the element by local name."""
    error = next((c for c in iq_xml if c.tag.rsplit("}", 1)[-1] == "error"), None)
    if error is None:
        return Answer(ok=False)
    error_type = error.get("type")
    condition = next((c.tag.rsplit("}", 1)[-1] for c in error
                      if c.tag.startswith(f"{{{STANZAS_NS}}}") and not c.tag.endswith("}text")),
                     None)
    return Answer(ok=False, error_type=error_type if error_type in ERROR_TYPES else None,
                  condition=condition)


class PushTransport(ComponentXMPP):
    """Connects as component ``jid`` to ``host:port`` and publishes pushes.

    ``await transport.start()`` connects (reconnecting after every loss until ``close()``);
    ``await transport.publish(push)`` waits while disconnected, then returns an ``Answer``.
    """

    def __init__(self, jid: str, secret: str, host: str, port: int, config: Config, *,
                 iq_timeout: float = 10.0, reconnect_delay: float = 1.0) -> None:
        self._id_prefix = secrets.token_hex(6)  # (before slixmpp's __init__, which may ask)
        self._id_count = itertools.count(1)
        super().__init__(jid, secret, host, port)  # type: ignore[no-untyped-call]
        self.rules = config
        self.iq_timeout = iq_timeout
        self.reconnect_delay = reconnect_delay
        self.online = asyncio.Event()
        self.refused: str | None = None
        """Why the server refused the stream before the first handshake succeeded."""
        self._refused = asyncio.Event()
        self._ever_online = False
        self._closing = False
        self.replies = Replies(self)
        self.add_event_handler("session_start", self._on_online)
        self.add_event_handler("disconnected", self._on_offline)
        self.add_event_handler("stream_error", self._on_stream_error)
        install_secret_mask()

    def new_id(self) -> str:
        """A stanza id unique in this stream and, by a random prefix per transport, across
        runs: slixmpp's uuid4 per publish read the kernel's randomness each time (~2% of the
        sidecar's CPU at saturation)."""
        return f"{self._id_prefix}{next(self._id_count):x}"

    async def start(self, timeout: float | None = 10.0) -> None:
        """Connect and wait until the server accepted the handshake: TimeoutError when it has
        not within ``timeout`` (reconnecting goes on in the background), ComponentRefused when
        the server refused the stream (e.g. the secret: no retry)."""
        self.connect()
        online = asyncio.ensure_future(self.online.wait())
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({online, refused}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            online.cancel()
            refused.cancel()
        if self.online.is_set():
            return
        if self.refused is not None:
            raise ComponentRefused(self.refused)
        raise TimeoutError(f"no handshake with {self.server_host}:{self.server_port} "
                           f"within {timeout}s")

    def _on_stream_error(self, error: object) -> None:
        condition = error["condition"] if hasattr(error, "__getitem__") else ""
        text = error["text"] if hasattr(error, "__getitem__") else ""
        if self._ever_online:
            log.warning("component %s: stream error %s %s", self.boundjid, condition, text)
            return
        hint = " (wrong component secret?)" if condition == "not-authorized" else ""
        self.refused = (f"the server at {self.server_host}:{self.server_port} refused component "
                        f"{self.boundjid}: {condition or 'stream error'}"
                        f"{': ' + text if text else ''}{hint}")
        self._refused.set()

    async def close(self) -> None:
        self._closing = True
        self.online.clear()
        self.cancel_connection_attempt()  # slixmpp retries failed connects until told not to
        if self.is_connected():
            await self.disconnect(wait=2.0)

    def _on_online(self, _event: object) -> None:
        log.info("component %s connected to %s:%s", self.boundjid, self.server_host,
                 self.server_port)
        self._ever_online = True
        self.online.set()

    def _on_offline(self, reason: object) -> None:
        # After a lost stream; failed connection attempts are retried by slixmpp itself.
        was_online = self.online.is_set()
        self.online.clear()
        if self._closing or self.refused is not None:
            return
        if was_online:
            log.warning("component %s lost its connection (%s); reconnecting", self.boundjid,
                        reason)
        self.loop.call_later(self.reconnect_delay, self._reconnect)

    def _reconnect(self) -> None:
        if not self._closing and not self.is_connected():
            self.connect()

    async def publish(self, push: Push) -> Answer:
        """Send one publish and return the answer (never raises for an app-server answer).

        The IQ is written as a string (``publish_xml``: the bytes the stanza classes write) and
        its answer matched by id (``Replies``): building and serialising a stanza tree, and
        slixmpp's one handler per IQ in flight, were most of the sidecar's CPU per push."""
        while True:
            await self.online.wait()
            iq_id = self.new_id()
            xml = publish_xml(push, self.rules, self.boundjid.full, iq_id)
            try:
                reply = await self.replies.request(xml, iq_id, push.jid, self.iq_timeout)
            except NotConnectedError:
                self.online.clear()  # not sent: the link went down meanwhile; wait for it
                continue
            except TimeoutError:
                return TIMEOUT
            return RESULT if reply.get("type") == "result" else read_error(reply)
