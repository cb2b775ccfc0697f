"""JSON log lines for security and operations events, configured through Django's LOGGING.

A log call names its event in `extra={"event": ...}` with whatever context it has (tenant,
request_id, tool, reason); the formatter writes one JSON object per line. The redaction
filter runs before it, so nothing here needs to know about secrets. During an outage the same
warning would repeat on every call: AggregateRepeats lets the first through and then one per
REPEAT_WINDOW_SECONDS, carrying how many it held back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = (
    "event",
    "tenant",
    "request_id",
    "tool",
    "outcome",
    "reason",
    "key_prefix",
    "status",
    "client",
    "repeated",
)
REPEAT_WINDOW_SECONDS = 10.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_text or record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(line, ensure_ascii=False, default=str)


class AggregateRepeats(logging.Filter):
    """Holds back warnings and errors that repeat an event (same logger, event, tenant and
    request) within REPEAT_WINDOW_SECONDS; the next one let through says how many were held
    back in `repeated`. Records without an event, anything below WARNING, and the audit
    trail's own lines (a row the database did not take is kept only there) pass untouched."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if record.levelno < logging.WARNING or event is None or str(event).startswith("audit_"):
            return True
        key = (
            record.name,
            str(event),
            (getattr(record, "tenant", None), getattr(record, "request_id", None)),
        )
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (0.0, 0))
            if now - last < REPEAT_WINDOW_SECONDS:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # forget old events rather than grow without bound
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < 60}
        if held:
            record.repeated = held
        return True
