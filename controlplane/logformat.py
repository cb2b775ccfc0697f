"""JSON log lines for security and operations events, configured through Django's LOGGING.

A log call names its event in `extra={"event": ...}` with whatever context it has (tenant,
request_id, tool, reason); the formatter writes one JSON object per line. The redaction
filter runs before it, so nothing here needs to know about secrets.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("event", "tenant", "request_id", "tool", "outcome", "reason", "key_prefix")


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
