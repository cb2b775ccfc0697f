"""The audit spool's files: rows the database could not take, kept on local disk until it can
(mcpserver.audit_writer decides when to spool and replay). One JSON-lines file per worker
process in AUDIT_SPOOL_DIR, a line per row as the table would keep it; a worker renames a file
to a name of its own before replaying it, so no two replay the same file. Every function
blocks (file I/O): call them off the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from controlplane import audit, metrics
from controlplane.models import ToolCall

logger = logging.getLogger(__name__)

# Replayed rows per INSERT (and per transaction).
REPLAY_CHUNK_ROWS = 500
# audit-<pid>.jsonl: the file worker <pid> appends to; audit-<pid>-<claim>.jsonl: a spool file
# worker <pid> has taken to replay.
SPOOL_FILE = re.compile(r"^audit-(?P<pid>[1-9][0-9]*)(?P<claim>-[0-9a-f]+)?\.jsonl$")


def append(records: list[audit.ToolCallRecord]) -> Path:
    """Append the rows to this process's spool file and fsync it; returns the file. Blocking.
    Raises OSError (disk full, no permission), leaving the file as it was."""
    lines = b"".join(
        json.dumps(audit.tool_call_stored(record), default=str).encode() + b"\n"
        for record in records
    )
    directory = Path(settings.AUDIT_SPOOL_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"audit-{os.getpid()}.jsonl"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            if not _is_file_at(fd, path):
                continue  # the replay took this file meanwhile: write a new one
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                lines = b"\n" + lines  # a line cut short by a crash stays a line of its own
            try:
                view = memoryview(lines)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            if not size:
                _fsync_directory(directory)  # so the new file's name survives a power cut
            return path
        finally:
            os.close(fd)


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one named `path` (not renamed or deleted)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def files() -> list[Path]:
    """The spool files this process may replay: those it took before, the one it writes, then
    those of processes no longer alive. Blocking."""
    directory = Path(settings.AUDIT_SPOOL_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    own: list[tuple[bool, str]] = []
    orphaned: list[str] = []
    for name in sorted(names):
        match = SPOOL_FILE.match(name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid():
            own.append((match["claim"] is None, name))
        elif not _process_alive(pid):
            orphaned.append(name)
    return [directory / name for _, name in sorted(own)] + [directory / name for name in orphaned]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def claim(path: Path) -> Path | None:
    """`path` renamed to a name of this process's, so no other worker replays it and, if this
    process was writing it, its next rows go to a new file; None if another worker took it
    first. Blocking."""
    match = SPOOL_FILE.match(path.name)
    if match and match["claim"] and int(match["pid"]) == os.getpid():
        return path  # taken earlier
    claimed = path.with_name(f"audit-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a write in progress ends first
        if not _is_file_at(fd, path):
            return None
        os.rename(path, claimed)
    finally:
        os.close(fd)
    return claimed


def open_file(path: Path) -> BinaryIO:
    return path.open("rb")


def read_rows(spool: BinaryIO) -> list[ToolCall] | None:
    """The next rows of a spool file, None at its end. Blocking. A line that is no row (cut
    short when its writer died, before the rows counted as written) is logged and skipped."""
    rows: list[ToolCall] = []
    while len(rows) < REPLAY_CHUNK_ROWS:
        line = spool.readline()
        if not line:
            return rows or None
        if not line.strip():
            continue
        try:
            rows.append(audit.tool_call_restored(json.loads(line)))
        except (KeyError, TypeError, ValueError) as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            logger.error(
                "unreadable audit spool line skipped (%s): %r",
                type(exc).__name__,
                line[:1000],
                extra={"event": "audit_spool_line_unreadable"},
            )
    return rows
