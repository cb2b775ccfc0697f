"""A TCP proxy in front of PostgreSQL that counts round trips on the wire.

The control plane cannot be instrumented from the bench (its code is not ours to change), and
pg_stat_statements is not loaded on a stock server, so the bench counts what the client sends:
every message that makes the client wait for the server is one round trip. That is a startup
packet (or SSL/GSS request), a password message, a simple Query ('Q'), or a Sync ('S') closing
an extended-protocol batch (Parse/Bind/Describe/Execute travel together with their Sync).
Connections opened are counted too: with CONN_MAX_AGE=0 each one costs a backend fork.
Reads are the statements (simple Query or Parse) that begin with SELECT: a warm call should
send none, whatever the audit writer's batches add to the round trips.

The proxy is only in the path during the bench's counting phase, never while latency and
throughput are measured.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
WAITING_TYPES = frozenset(b"QSp")
STATEMENT_TYPES = frozenset(b"QP")


@dataclass
class WireCounts:
    connections: int = 0
    round_trips: int = 0
    queries: int = 0
    syncs: int = 0
    reads: int = 0

    def copy(self) -> WireCounts:
        return WireCounts(self.connections, self.round_trips, self.queries, self.syncs, self.reads)


def _is_read(kind: int, body: bytes | bytearray) -> bool:
    """A simple Query's text, or a Parse's after its statement name, begins with SELECT."""
    if kind == ord("P"):
        body = body[body.find(0) + 1 :]
    return bytes(body[:64]).lstrip(b" \t\r\n(").upper().startswith(b"SELECT")


class _ClientStream:
    """Parses the client-to-server byte stream incrementally and updates the counts."""

    def __init__(self, counts: WireCounts) -> None:
        self.counts = counts
        self.buffer = bytearray()
        self.started = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return
                length, code = struct.unpack("!II", self.buffer[:8])
                if len(self.buffer) < length:
                    return
                del self.buffer[:length]
                self.counts.round_trips += 1
                if code not in (SSL_REQUEST, GSSENC_REQUEST):
                    self.started = True
                continue
            if len(self.buffer) < 5:
                return
            kind = self.buffer[0]
            (length,) = struct.unpack("!I", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            if kind in STATEMENT_TYPES and _is_read(kind, self.buffer[5 : 1 + length]):
                self.counts.reads += 1
            del self.buffer[: 1 + length]
            if kind in WAITING_TYPES:
                self.counts.round_trips += 1
            if kind == ord("Q"):
                self.counts.queries += 1
            elif kind == ord("S"):
                self.counts.syncs += 1


class PostgresWireCounter:
    """Listen on a loopback port, forward to `upstream`, count; runs in a daemon thread."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts = WireCounts()
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgwire", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(10)
        return self.port

    def snapshot(self) -> WireCounts:
        with self.lock:
            return self.counts.copy()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        with self.lock:
            self.counts.connections += 1
        stream = _ClientStream(self.counts)

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                with self.lock:
                    stream.feed(data)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(client_to_server(), server_to_client())
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            up_writer.close()
