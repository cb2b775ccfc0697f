"""A logging filter that masks anything shaped like a token or key before it is written."""

from __future__ import annotations

import logging
import re

PATTERNS = (
    # Our own API keys.
    re.compile(r"qmcp_[A-Za-z0-9_\-]{8,}"),
    # Bearer credentials in headers or URLs.
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    # key=value pairs that name a secret.
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|secret_id|password|token)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
    ),
    # Vault tokens.
    re.compile(r"\b(?:hvs|s|b)\.[A-Za-z0-9]{20,}"),
)


def redact(text: str) -> str:
    for pattern in PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
