"""One log format on stderr for `pushrules serve`: text (default) or JSON lines.

Both the logging records (slixmpp, the dispatcher, the transport) and the sidecar's own
messages about input lines (``error: stdin line 4: ...``) go through the same format, and
publish-options values (the secret) are masked in both (secrets.py)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from .secrets import install_secret_mask, mask_publish_options

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_format = "text"
_LEVELS = {"error": "ERROR", "warning": "WARNING"}


def _iso(created: float) -> str:
    millis = int(created % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class OneLineFormatter(logging.Formatter):
    """Log records without tracebacks (one line per problem: an operator's log, never a dump
    of the input that caused it)."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return f"({ei[0].__name__}: {ei[1]})" if ei and ei[0] is not None else ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return ""


class JsonFormatter(OneLineFormatter):
    """One JSON object per record: ts (UTC), level, logger, message (and exc when any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name,
                "message": mask_publish_options(record.getMessage())}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (stderr) in ``fmt``; mask secrets."""
    global _format
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of: {', '.join(FORMATS)}")
    _format = fmt
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else OneLineFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    install_secret_mask()


def format_line(message: str, logger: str = "pushrules.serve") -> str:
    """A sidecar message (``error: ...``, ``warning: ...`` or a summary) in the log format."""
    if _format != "json":
        return message
    head = message.split(":", 1)[0]
    return json.dumps({"ts": _iso(time.time()), "level": _LEVELS.get(head, "INFO"),
                       "logger": logger, "message": mask_publish_options(message)},
                      ensure_ascii=False)
