"""Keeping publish-options values (the secret) out of logs.

slixmpp logs every stanza it sends and receives at debug level ("SEND: <iq …>"); a publish
carries the registration's secret in its publish-options form. The filter rewrites such records
before any handler sees them.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_OPTIONS = re.compile(r"<(?:[\w.-]+:)?publish-options\b.*?(?:</(?:[\w.-]+:)?publish-options>|/>|$)",
                      re.DOTALL)
_VALUE = re.compile(r"(<(?:[\w.-]+:)?value\b[^>]*>)(.*?)(</(?:[\w.-]+:)?value>)", re.DOTALL)


def mask_publish_options(text: str) -> str:
    """``text`` with every value inside a publish-options element replaced by ***."""
    if "publish-options" not in text:
        return text
    return _OPTIONS.sub(lambda m: _VALUE.sub(rf"\g<1>{MASK}\g<3>", m.group(0)), text)


class SecretMaskFilter(logging.Filter):
    """Masks publish-options values in a record's message (formatting it first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        masked = mask_publish_options(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_FILTER = SecretMaskFilter()
_installed = False


def install_secret_mask() -> None:
    """Mask publish-options values in every record of a slixmpp logger, including loggers
    created later (a record factory), and attach the filter to the slixmpp loggers that exist.
    Idempotent."""
    global _installed
    names = [name for name in logging.root.manager.loggerDict if name.startswith("slixmpp")]
    for name in ["slixmpp", *names]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.name.startswith("slixmpp"):
            _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(masked_record)
