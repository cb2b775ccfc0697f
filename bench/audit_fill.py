"""Rows for the audit-at-scale phase (bench/audit_scale.py), generated in Python and COPYed.

Twenty million rows must fill in minutes on two cores, one of which the PostgreSQL backend
parsing the COPY needs. Formatting every field of every row in Python would be the bottleneck,
so each row's "who and what" (tenant, key or person, tool, outcome, arguments and digest,
message) is drawn from a pool of precomputed row middles built with the wanted skews; only the
time, the latency and the two ids are formatted per row. A generator thread makes chunks while
the main thread sends the previous one, so Python and the backend run at the same time.

Rows are spread evenly over `SPAN` ending at the anchor and their times increase with the row
index, as in a real append-only table. While the bulk fill runs, the table's secondary
indexes and its foreign-key and unique constraints are dropped and rebuilt afterwards from the
definitions the catalog had (COPY maintaining a dozen indexes, one of them on random ids, is
several times slower than building them once); the schema stays the migrations'.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

TABLE = "controlplane_toolcall"
SPAN = timedelta(days=90)
CHUNK_ROWS = 50_000
COMMIT_ROWS = 1_000_000
COLUMNS = (
    "created_at",
    "latency_ms",
    "request_id",
    "call_id",
    "tenant_id",
    "api_key_id",
    "key_prefix",
    "tool",
    "arguments",
    "arguments_digest",
    "outcome",
    "upstream_status",
    "qontak_user",
    "person",
    "oauth_client",
    "message",
)
COPY_SQL = f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN"
# The few tools assistants call most, in order; every other endpoint follows with a long tail.
POPULAR = (
    "list_contacts",
    "get_contact",
    "list_deals",
    "get_deal",
    "list_tasks",
    "create_task",
    "update_deal",
    "list_tickets",
    "get_company",
    "create_contact",
)
OUTCOMES = (
    ("ok", 0.90, ""),
    ("denied", 0.03, "Tool {tool} is not allowed for this key."),
    ("rate_limited", 0.025, "Rate limit 120/m reached; retry in a few seconds."),
    ("invalid_input", 0.02, "Invalid arguments: field 'id' must be a positive integer."),
    ("upstream_error", 0.015, "Qontak answered HTTP {status}."),
    ("unavailable", 0.01, "Qontak did not answer within 30 s."),
)
OAUTH_CLIENTS = ("Claude", "ChatGPT", "Cursor")
PERSON_SHARE = 0.20
POOL_SIZE = 1 << 16
MINUTE_US = 60_000_000


@dataclass(frozen=True)
class Population:
    """The tenants and keys rows are attributed to, busiest tenant first."""

    tenants: list[tuple[int, str]]  # (id, default Qontak user or "")
    keys: dict[int, list[tuple[int, str]]]  # tenant id -> [(key id, prefix)]

    @classmethod
    def load(cls, conn: psycopg.Connection, slug_prefix: str) -> Population:
        tenants = [
            (int(pk), str(user))
            for pk, user in conn.execute(
                "SELECT id, default_qontak_user FROM controlplane_tenant WHERE slug LIKE %s "
                "ORDER BY slug",
                (slug_prefix + "%",),
            )
        ]
        keys: dict[int, list[tuple[int, str]]] = {pk: [] for pk, _ in tenants}
        for pk, tenant_id, prefix in conn.execute(
            "SELECT id, tenant_id, prefix FROM controlplane_apikey ORDER BY id"
        ):
            if tenant_id in keys:
                keys[tenant_id].append((int(pk), str(prefix)))
        if not tenants:
            raise RuntimeError(f"no tenant named {slug_prefix}* to attribute audit rows to")
        return cls(tenants=tenants, keys=keys)


def zipf_weights(count: int, exponent: float) -> list[float]:
    """Cumulative weights 1/rank^exponent: a few items dominate, the rest form a long tail."""
    return list(itertools.accumulate(1 / (rank**exponent) for rank in range(1, count + 1)))


def _arguments(tool: str, rng: random.Random) -> dict[str, object]:
    if tool.startswith("list_"):
        return {"page": rng.choice((1, 1, 1, 2, 3)), "per_page": 25}
    if tool.startswith(("create_", "update_")):
        body: dict[str, object] = {"name": "[redacted]"}
        if tool.startswith("update_"):
            body["id"] = rng.randint(1, 200_000)
        return body
    if tool.startswith(("get_", "delete_")) and "template" not in tool and "required" not in tool:
        return {"id": rng.randint(1, 200_000)}
    return {}


def build_middles(population: Population, tools: list[str], seed: int) -> list[str]:
    """`POOL_SIZE` row middles (tenant_id .. message, tab-separated) drawn with the skews."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    ranked = [t for t in POPULAR if t in tools] + [t for t in tools if t not in POPULAR]
    tool_weights = zipf_weights(len(ranked), 1.3)
    tenant_weights = zipf_weights(len(population.tenants), 0.9)
    outcome_weights = list(itertools.accumulate(share for _, share, _ in OUTCOMES))
    key_weights = {pk: zipf_weights(len(keys), 1.0) for pk, keys in population.keys.items()}
    middles = []
    for _ in range(POOL_SIZE):
        tenant_id, qontak_user = rng.choices(population.tenants, cum_weights=tenant_weights)[0]
        tool = rng.choices(ranked, cum_weights=tool_weights)[0]
        outcome, _, message = rng.choices(OUTCOMES, cum_weights=outcome_weights)[0]
        status = "\\N"
        if outcome == "ok":
            status = "201" if tool.startswith("create_") else "200"
        elif outcome == "upstream_error":
            status = rng.choice(("500", "502", "503", "422"))
        keys = population.keys.get(tenant_id, [])
        person = client = ""
        if rng.random() < PERSON_SHARE or not keys:
            key_id, prefix = "\\N", ""
            person = f"user{rng.randint(1, 40)}.{tenant_id}@example.com"
            client = rng.choice(OAUTH_CLIENTS)
        else:
            chosen_id, prefix = rng.choices(keys, cum_weights=key_weights[tenant_id])[0]
            key_id = str(chosen_id)
        arguments = json.dumps(_arguments(tool, rng), sort_keys=True)
        digest = hashlib.sha256(arguments.encode()).hexdigest()
        middles.append(
            "\t".join(
                (
                    str(tenant_id),
                    key_id,
                    prefix,
                    tool,
                    arguments,
                    digest,
                    outcome,
                    status,
                    qontak_user,
                    person,
                    client,
                    message.format(tool=tool, status=status),
                )
            )
        )
    return middles


class RowMaker:
    """Makes rows `index` of `total` as COPY text; row `total - 1` is at the anchor."""

    def __init__(self, population: Population, tools: list[str], anchor: datetime, total: int):
        self.middles = [m + "\n" for m in build_middles(population, tools, seed=total)]
        rng = random.Random(total + 1)  # noqa: S311 - test data, not secrets
        # Most calls are quick reads; a tail reaches the 400 ms cap.
        self.latencies = [
            f"{min(400.0, max(1.0, rng.lognormvariate(3.6, 0.8))):.1f}\t" for _ in range(4096)
        ]
        self.total = total
        span_us = int(SPAN.total_seconds() * 1_000_000)
        self.step = span_us // total  # whole microseconds, so times come from a range()
        if self.step < 2:
            raise ValueError(f"{total:,} rows do not fit {SPAN} a microsecond apart")
        self.start_us = int(anchor.timestamp() * 1_000_000) - total * self.step
        # Up to half a step earlier than its slot: times still increase from row to row.
        self.jitters = [rng.randrange(self.step // 2) for _ in range(4096)]

    def chunk(self, first: int, count: int, rng: random.Random) -> bytes:
        """Rows first .. first+count-1: increasing times, fresh random request and call ids.

        Only the time is formatted row by row in Python; everything else is drawn from pools
        or made by C code (choices, hex with a separator, slice assignment, join)."""
        step = self.step
        slots = range(
            self.start_us + (first + 1) * step, self.start_us + (first + count + 1) * step, step
        )
        jitters = rng.choices(self.jitters, k=count)
        if first + count == self.total:
            jitters[-1] = 0  # the newest row is exactly at the anchor
        times = list(map(operator.sub, slots, jitters))
        minutes = {
            minute: time.strftime("%Y-%m-%d %H:%M:", time.gmtime(minute * 60))
            for minute in range(times[0] // MINUTE_US, times[-1] // MINUTE_US + 1)
        }
        pieces = ["\t"] * (7 * count)
        pieces[0::7] = [f"{minutes[t // MINUTE_US]}{t % MINUTE_US / 1e6:09.6f}+00\t" for t in times]
        pieces[1::7] = rng.choices(self.latencies, k=count)
        pieces[2::7] = os.urandom(16 * count).hex("\n", 16).split("\n")  # request_id
        pieces[4::7] = os.urandom(16 * count).hex("\n", 16).split("\n")  # call_id
        pieces[6::7] = rng.choices(self.middles, k=count)
        return "".join(pieces).encode()


def _chunks(maker: RowMaker, first: int, count: int, seed: int) -> Iterator[tuple[int, bytes]]:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    done = 0
    while done < count:
        size = min(CHUNK_ROWS, count - done)
        yield size, maker.chunk(first + done, size, rng)
        done += size


def _threaded(
    chunks: Iterator[tuple[int, bytes]],
) -> Generator[tuple[int, bytes], None, None]:
    """`chunks` made on a thread, at most 3 ahead, so memory stays flat."""
    ahead: queue.Queue[tuple[int, bytes] | BaseException | None] = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        ahead.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            ahead.put(exc)

    thread = threading.Thread(target=produce, name="audit-rows", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class Progress:
    """Prints rows done, rows/s and the time left every `every` seconds."""

    def __init__(self, label: str, total: int, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.started = self.last = time.monotonic()
        self.done = 0

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            print(
                f"audit-scale: {self.label} {self.done:,}/{self.total:,} rows, "
                f"{rate:,.0f} rows/s, ETA {eta:,.0f} s",
                flush=True,
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def copy_rows(
    conn: psycopg.Connection, maker: RowMaker, first: int, count: int, label: str
) -> float:
    """COPY rows first .. first+count-1, committing every `COMMIT_ROWS`; returns seconds."""
    progress = Progress(label, count)
    conn.execute("SET synchronous_commit = off")
    in_copy = 0
    chunks = _threaded(_chunks(maker, first, count, seed=int.from_bytes(os.urandom(8))))
    try:
        while progress.done < count:
            with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
                in_copy = 0
                for rows, data in chunks:
                    copy.write(data)
                    progress.add(rows)
                    in_copy += rows
                    if in_copy >= COMMIT_ROWS:
                        break
            conn.commit()
    finally:
        chunks.close()
    return progress.elapsed


@dataclass(frozen=True)
class Secondary:
    """A secondary index or a foreign-key or unique constraint of the table, as the catalog
    defines it: what the bulk fill drops and rebuilds, and what a schema check compares."""

    name: str
    create: str
    drop: str


def secondaries(conn: psycopg.Connection) -> list[Secondary]:
    """In the order to build them: plain indexes, unique constraints (which build their
    index), then foreign keys (each scans the table once to validate)."""
    indexes = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid "
        "AND c.conrelid = x.indrelid) ORDER BY i.relname",
        (TABLE,),
    )
    found = [Secondary(str(name), str(ddl), f'DROP INDEX "{name}"') for name, ddl in indexes]
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('f', 'u') ORDER BY contype DESC, conname",
        (TABLE,),
    )
    found += [
        Secondary(
            str(name),
            f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {ddl}',
            f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"',
        )
        for name, ddl in constraints
    ]
    return found


def build(
    conn: psycopg.Connection, items: list[Secondary], log: Callable[[str], None], label: str
) -> float:
    """Create `items` one by one (each committed, each timed); returns the seconds in all."""
    started = time.monotonic()
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")  # 2 cores: leader + 1 worker
    for item in items:
        began = time.monotonic()
        conn.execute(item.create)  # the catalog's own DDL
        conn.commit()
        log(f"{label}: built {item.name} in {time.monotonic() - began:,.1f} s")
    return time.monotonic() - started


def bulk_fill(
    conn: psycopg.Connection, maker: RowMaker, count: int, log: Callable[[str], None]
) -> dict[str, float]:
    """Fill an empty table with `count` rows: drop the secondary indexes and constraints,
    COPY, rebuild them from the catalog's own definitions, then VACUUM (ANALYZE)."""
    items = secondaries(conn)
    for item in reversed(items):
        conn.execute(item.drop)  # catalog names, quoted
    conn.commit()
    copy_s = copy_rows(conn, maker, 0, count, "fill")
    log(f"fill: COPY {count:,} rows in {copy_s:,.1f} s ({count / copy_s:,.0f} rows/s)")
    index_s = build(conn, items, log, "fill")
    vacuum_s = vacuum_analyze(conn)
    log(f"fill: VACUUM (ANALYZE) in {vacuum_s:,.1f} s")
    return {"copy_s": copy_s, "index_s": index_s, "vacuum_s": vacuum_s}


def vacuum_analyze(conn: psycopg.Connection) -> float:
    began = time.monotonic()
    conn.commit()
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(f"VACUUM (ANALYZE) {TABLE}")
    finally:
        conn.autocommit = autocommit
    return time.monotonic() - began
