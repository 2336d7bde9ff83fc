"""XEP-0357 dispatch over XMPP (slixmpp): publish stanzas, transport, sidecar."""
