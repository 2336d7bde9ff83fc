"""XEP-0357 dispatch over XMPP (slixmpp): publish stanzas, transport, dispatcher, sidecar."""

from .dispatcher import Dispatcher, Outcome, RetryPolicy
from .publish import Published, build_publish, parse_publish
from .secrets import install_secret_mask
from .transport import Answer, PushTransport

__all__ = ["Answer", "Dispatcher", "Outcome", "Published", "PushTransport", "RetryPolicy",
           "build_publish", "install_secret_mask", "parse_publish"]
