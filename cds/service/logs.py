"""Structured JSON logs for the service (one JSON object per line).

What is logged about a hook call: the service id and its trial id (``trial``; feedback lines too),
the hook instance id, timings, the outcome (status, verdict, number of cards), which prefetch keys
came from the EHR or the FHIR server and which types are incomplete. What is never logged: patient
ids, names, birth dates or any resource content, the ``fhirAuthorization`` token, the
``Authorization`` header, FHIR URLs (they hold ids), exception messages from data (only exception
types), JWTs or the reasons' inputs (an authentication failure logs a fixed reason code only).

Third-party loggers that would log FHIR URLs (httpx logs every request URL at INFO, httpcore traces
at DEBUG) are capped at WARNING by `configure_logging`, whatever the root logger's level.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__  # type only: messages may quote data
        return json.dumps(out, default=str, ensure_ascii=False)


QUIET_LOGGERS = ("httpx", "httpcore", "hpack")


def configure_logging(level: str = "INFO") -> None:
    """Send the ``cds`` loggers to stderr as JSON lines (idempotent); cap URL-logging libraries."""
    for name in QUIET_LOGGERS:
        quiet = logging.getLogger(name)
        if quiet.level < logging.WARNING:  # NOTSET (0) included
            quiet.setLevel(logging.WARNING)
    logger = logging.getLogger("cds")
    logger.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
