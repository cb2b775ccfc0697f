"""`make bench BENCH_ARGS=--audit-scale`: the audit trail's operator paths at 20 million rows.

The tool-call table grows without bound, and what an operator does with it (the dashboard,
the admin list and its filters, `export_audit`, `prune_audit`) must stay fast when it holds
months of calls. This phase fills `qmcp_audit_scale` on the PostgreSQL server of
DATABASE_URL with `--audit-rows` rows over 90 days (bench/audit_fill.py), keeps it between
runs because the fill is the expensive part, migrates it on every run so the indexes measured
are the current migrations', then times the project's own code against it:

  - `dashboard_activity(now=anchor)`, for every tenant and for one, and the admin changelist
    through django.test.Client, in a child process configured for that database;
  - `manage.py export_audit` over one and seven days, with its peak RSS;
  - `manage.py prune_audit` deleting the oldest ~2 days while another session inserts a row
    every 50 ms, then the deleted slots are filled again so the next run has as many rows.

Everything is relative to the anchor, the newest row's time, recorded in the database: the
real now moves away from it between runs. EXPLAIN (ANALYZE, BUFFERS) of every audit query
the dashboard and the changelist views send is written to the run's log directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg

from bench.audit_fill import (
    SPAN,
    TABLE,
    Population,
    RowMaker,
    build,
    bulk_fill,
    copy_rows,
    secondaries,
    vacuum_analyze,
)
from bench.stack import PYTHON, ROOT

DEFAULT_ROWS = 20_000_000
DATABASE = "qmcp_audit_scale"
SLUG_PREFIX = "scale-"
TENANTS = 50
API_KEYS = 300
ADMIN_USER = "scale-admin"
REPEATS = 5
STATEMENT_TIMEOUT_MS = 120_000
COMMAND_TIMEOUT_S = 3600
DASHBOARD_TARGET_MS = 300.0
CHANGELIST_TARGET_MS = 500.0
INSERT_WAIT_TARGET_MS = 1000.0
EXPORT_RSS_GROWTH = 0.10
PRUNE_KEEP_DAYS = 88  # prune the oldest ~2 of the 90 days
PROBE_EVERY_S = 0.05
WAIT_SAMPLE_EVERY_S = 0.01
SLOW_INSERT_MS = 100.0
CHANGELIST = "/admin/controlplane/toolcall/"
RESULT_MARK = "AUDIT_SCALE_RESULT "
NOT_POSTGRES = "--audit-scale needs PostgreSQL: set DATABASE_URL=postgres://..."


def log(message: str) -> None:
    print(f"audit-scale: {message}", flush=True)


def require_postgres(database_url: str) -> None:
    """Refuse before anything long runs: the phase is about PostgreSQL's plans."""
    if not database_url.startswith(("postgres://", "postgresql://", "pgsql://")):
        raise SystemExit(NOT_POSTGRES)


@dataclass
class ScaleDatabase:
    """`qmcp_audit_scale` on the server of DATABASE_URL; other row counts get a database of
    their own, so a quick development run does not throw away the 20-million-row fill."""

    name: str
    url: str  # DATABASE_URL for the project's processes
    server_url: str  # libpq URL of DATABASE_URL's own database, for CREATE/DROP DATABASE

    @classmethod
    def for_rows(cls, base_url: str, rows: int) -> ScaleDatabase:
        require_postgres(base_url)
        name = DATABASE if rows == DEFAULT_ROWS else f"{DATABASE}_{rows}"
        parts = urlsplit(base_url)
        return cls(
            name=name,
            url=urlunsplit(parts._replace(path=f"/{name}")),
            server_url=urlunsplit(parts._replace(scheme="postgresql")),
        )

    def connect(self, autocommit: bool = False) -> psycopg.Connection:
        parts = urlsplit(self.server_url)
        return psycopg.connect(
            urlunsplit(parts._replace(path=f"/{self.name}")), autocommit=autocommit
        )

    def sibling(self, name: str) -> ScaleDatabase:
        parts = urlsplit(self.url)
        return ScaleDatabase(name, urlunsplit(parts._replace(path=f"/{name}")), self.server_url)

    def drop(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def exists(self) -> bool:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.name,))
            return row.fetchone() is not None

    def create(self, drop_first: bool) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            if drop_first:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')


@dataclass
class Meta:
    """What the database holds: `bench_audit_scale_meta`, one row, written by this phase."""

    anchor: datetime
    target_rows: int
    complete: bool
    details: dict[str, Any]

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS bench_audit_scale_meta ("
        "id integer PRIMARY KEY CHECK (id = 1), anchor timestamptz NOT NULL, "
        "target_rows bigint NOT NULL, complete boolean NOT NULL, "
        "details jsonb NOT NULL DEFAULT '{}')"
    )

    @classmethod
    def read(cls, conn: psycopg.Connection) -> Meta | None:
        exists = conn.execute("SELECT to_regclass('bench_audit_scale_meta')").fetchone()
        if not exists or exists[0] is None:
            return None
        row = conn.execute(
            "SELECT anchor, target_rows, complete, details FROM bench_audit_scale_meta"
        ).fetchone()
        return None if row is None else cls(row[0], int(row[1]), bool(row[2]), dict(row[3]))

    def write(self, conn: psycopg.Connection) -> None:
        conn.execute(self.SCHEMA)
        conn.execute(
            "INSERT INTO bench_audit_scale_meta (id, anchor, target_rows, complete, details) "
            "VALUES (1, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET anchor = EXCLUDED.anchor, "
            "target_rows = EXCLUDED.target_rows, complete = EXCLUDED.complete, "
            "details = EXCLUDED.details",
            (self.anchor, self.target_rows, self.complete, json.dumps(self.details)),
        )
        conn.commit()


class Phase:
    """One run of the phase against one database; `run` returns the facts for the report."""

    def __init__(self, database: ScaleDatabase, rows: int, refill: bool, log_dir: Path):
        self.db, self.rows, self.refill, self.log_dir = database, rows, refill, log_dir
        self.env = django_env(database.url)
        self.measures: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}

    # -- the project's processes ---------------------------------------------------------

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        completed = subprocess.run(  # noqa: S603 - argv is built here
            [PYTHON, "manage.py", *args],
            capture_output=True,
            text=True,
            env=env or self.env,
            cwd=ROOT,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{completed.stderr[-3000:]}")
        return completed.stdout

    def child(self, mode: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Run `mode` in a Django process configured for this database; returns its result."""
        completed = subprocess.run(  # noqa: S603 - argv is built here
            [PYTHON, "-m", "bench.audit_scale", "--child", mode, "--spec", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            check=False,
        )
        (self.log_dir / f"audit-scale-{mode}.log").write_text(
            completed.stdout + "\n--- stderr ---\n" + completed.stderr
        )
        marked = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
        if completed.returncode != 0 or not marked:
            raise RuntimeError(f"audit-scale {mode} failed:\n{completed.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(marked[-1][len(RESULT_MARK) :])
        return result

    # -- preparing the database ---------------------------------------------------------

    def prepare(self) -> Meta | None:
        """Create, migrate and seed the database; the meta row if it already holds the fill."""
        meta = None
        if self.db.exists() and not self.refill:
            with self.db.connect() as conn:
                meta = Meta.read(conn)
            if meta is None or not meta.complete or meta.target_rows != self.rows:
                log(f"{self.db.name} holds no complete fill of {self.rows:,} rows: filling anew")
                self.db.create(drop_first=True)
                meta = None
        else:
            log(f"creating database {self.db.name}" + (" (refill)" if self.refill else ""))
            self.db.create(drop_first=self.refill)
        began = time.monotonic()
        out = self.manage("migrate", "--noinput")
        applied = [line.strip() for line in out.splitlines() if line.strip().startswith("Apply")]
        migrate_s = time.monotonic() - began
        log(f"migrate in {migrate_s:.1f} s" + (f": {'; '.join(applied)}" if applied else ""))
        self.facts["migrate_s"] = round(migrate_s, 1)
        self.facts["migrations_applied"] = applied
        self.child("seed", {"tenants": TENANTS, "api_keys": API_KEYS})
        return meta

    def sync_schema(self) -> None:
        """Give the reused table the indexes and constraints a fresh `migrate` gives today.

        `migrate` applies new migrations, but a migration edited after it was applied here
        (as happens while one is being written) would leave stale indexes measured; so a
        scratch database is migrated from scratch and the two catalogs compared."""
        scratch = self.db.sibling(f"{self.db.name}_schema")
        scratch.create(drop_first=True)
        try:
            self.manage("migrate", "--noinput", env=django_env(scratch.url))
            with scratch.connect() as conn:
                fresh = secondaries(conn)
        finally:
            scratch.drop()
        with self.db.connect() as conn:
            mine = secondaries(conn)
            fresh_by, mine_by = {i.name: i for i in fresh}, {i.name: i for i in mine}
            stale = [i for i in mine if fresh_by.get(i.name) != i]
            missing = [i for i in fresh if mine_by.get(i.name) != i]
            self.facts["schema_synced"] = {
                "dropped": [i.name for i in stale],
                "built": [i.name for i in missing],
            }
            if not stale and not missing:
                log("schema: the table's indexes and constraints match a fresh migrate")
                return
            log(f"schema: dropping {[i.name for i in stale]}, building {[i.name for i in missing]}")
            for item in reversed(stale):
                conn.execute(item.drop)
            conn.commit()
            build(conn, missing, log, "schema")
            conn.execute("ANALYZE controlplane_toolcall")
            conn.commit()

    def population(self) -> tuple[Population, list[str]]:
        from qontak.endpoints import ENDPOINTS  # plain data, no Django setup needed

        with self.db.connect() as conn:
            return Population.load(conn, SLUG_PREFIX), [e.name for e in ENDPOINTS]

    def fill(self) -> Meta:
        anchor = datetime.now(UTC).replace(microsecond=0)
        population, tools = self.population()
        maker = RowMaker(population, tools, anchor, self.rows)
        with self.db.connect() as conn:
            Meta(anchor, self.rows, complete=False, details={}).write(conn)
            log(f"filling {self.rows:,} rows over {SPAN.days} days up to {anchor.isoformat()}")
            began = time.monotonic()
            timings = bulk_fill(conn, maker, self.rows, log)
            total_s = time.monotonic() - began
            details = {
                **{k: round(v, 1) for k, v in timings.items()},
                "total_s": round(total_s, 1),
                "copy_rows_per_s": round(self.rows / timings["copy_s"]),
                "rows_per_s": round(self.rows / total_s),
                "filled_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "commit": git_commit(),
            }
            meta = Meta(anchor, self.rows, complete=True, details=details)
            meta.write(conn)
        log(
            f"filled {self.rows:,} rows in {total_s:,.0f} s ({details['rows_per_s']:,} rows/s "
            f"overall; COPY alone {details['copy_rows_per_s']:,} rows/s)"
        )
        return meta

    def top_up(self, meta: Meta) -> int:
        """Remove probe rows an interrupted run left (after the anchor) and refill the oldest
        slots a prune emptied, so the table holds exactly the target rows; returns rows added."""
        with self.db.connect() as conn:
            conn.execute("DELETE FROM controlplane_toolcall WHERE created_at > %s", (meta.anchor,))
            conn.commit()
        have = self.count_rows()
        missing = self.rows - have
        if missing < 0:
            raise RuntimeError(f"{self.db.name} holds {have:,} rows, more than {self.rows:,}")
        if missing:
            log(f"{have:,} rows: refilling the {missing:,} oldest slots")
            self.refill_oldest(meta, missing)
        return missing

    def refill_oldest(self, meta: Meta, count: int) -> float:
        """COPY the `count` oldest rows again (fresh ids), with every index in place."""
        population, tools = self.population()
        maker = RowMaker(population, tools, meta.anchor, self.rows)
        with self.db.connect() as conn:
            seconds = copy_rows(conn, maker, 0, count, "refill")
            conn.execute("ANALYZE controlplane_toolcall")
            conn.commit()
        return seconds

    # -- measurements ---------------------------------------------------------------------

    def add(
        self,
        measure: str,
        samples_ms: list[float] | None,
        target: str,
        met: bool | None,
        **extra: Any,
    ) -> None:
        median = statistics.median(samples_ms) if samples_ms else None
        self.measures.append(
            {
                "measure": measure,
                "median_ms": None if median is None else round(median, 1),
                "max_ms": round(max(samples_ms), 1) if samples_ms else None,
                "target": target,
                "met": met,
                **extra,
            }
        )

    def web(self, meta: Meta) -> None:
        """The dashboard and the admin changelist, timed in a Django child process."""
        with self.db.connect() as conn:
            busiest, quietest = busiest_and_quietest(conn)
            middle = meta.anchor - SPAN / 2
            found = conn.execute(
                "SELECT id, request_id FROM controlplane_toolcall WHERE created_at >= %s "
                "ORDER BY created_at LIMIT 1",
                (middle,),
            ).fetchone()
        assert found is not None
        explain_path = self.log_dir / "audit-explain.txt"
        result = self.child(
            "measure",
            {
                "anchor": meta.anchor.isoformat(),
                "busiest_slug": busiest[1],
                "quiet_tenant_id": quietest[0],
                "quiet_slug": quietest[1],
                "search_pk": found[0],
                "search_request_id": found[1],
                "repeats": REPEATS,
                "explain_path": str(explain_path),
            },
        )
        for item in result["timings"]:
            target = DASHBOARD_TARGET_MS if item["kind"] == "dashboard" else CHANGELIST_TARGET_MS
            samples = item["samples_ms"]
            met = not item.get("error") and statistics.median(samples) < target
            self.add(
                item["name"], samples or None, f"< {target:.0f} ms", met, error=item.get("error")
            )
        self.facts["explain_log"] = str(explain_path)
        self.facts["explain"] = result["explain"]

    def time_index_alternative(self, meta: Meta) -> None:
        """The migrations' B-tree on created_at against a BRIN index in its place, on the
        queries the changelist and the dashboard send: built, timed and rolled back, so the
        reason for the B-tree is measured on every run rather than remembered."""
        week_ago = meta.anchor - timedelta(days=7)
        hour_ago = meta.anchor - timedelta(hours=1)
        queries = (
            (
                "newest 100 rows",
                "SELECT id FROM controlplane_toolcall ORDER BY created_at DESC LIMIT 100",
                (),
            ),
            (
                "newest 100 of the past 7 days",
                "SELECT id FROM controlplane_toolcall WHERE created_at >= %s "
                "ORDER BY created_at DESC LIMIT 100",
                (week_ago,),
            ),
            (
                "last hour by tenant and outcome",
                "SELECT tenant_id, outcome, count(*) FROM controlplane_toolcall "
                "WHERE created_at >= %s GROUP BY 1, 2",
                (hour_ago,),
            ),
        )

        def timed(conn: psycopg.Connection) -> list[float]:
            samples = []
            for _, sql, params in queries:
                started = time.perf_counter()
                conn.execute(sql, params).fetchall()
                samples.append((time.perf_counter() - started) * 1000)
            return samples

        with self.db.connect() as conn:
            btree = conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                "WHERE indrelid = %s::regclass AND indnatts = 1 AND pg_get_indexdef(indexrelid) "
                "LIKE '%%btree (created_at)'",
                (TABLE,),
            ).fetchone()
            if btree is None:
                log("no B-tree on created_at alone: index alternative not timed")
                return
            timed(conn)  # warm the pages both runs read
            with_btree = timed(conn)
            started = time.monotonic()
            conn.execute(
                "CREATE INDEX bench_brin_time ON controlplane_toolcall USING brin (created_at)"
            )
            brin_build_s = time.monotonic() - started
            row = conn.execute("SELECT pg_relation_size('bench_brin_time')").fetchone()
            brin_bytes = int(row[0]) if row else 0
            conn.execute(f'DROP INDEX "{btree[0]}"')
            with_brin = timed(conn)
            conn.rollback()
        log(f"BRIN built in {brin_build_s:.1f} s, {brin_bytes / 1024:,.0f} KiB; rolled back")
        for (label, _, _), fast, slow in zip(queries, with_btree, with_brin, strict=True):
            self.add(
                f"{label}: B-tree on created_at ({btree[1] / 2**20:,.0f} MiB) vs BRIN "
                f"({brin_bytes / 1024:,.0f} KiB, built {brin_build_s:.0f} s) in its place: "
                f"{fast:,.1f} vs {slow:,.1f} ms",
                [fast],
                "-",
                None,
                brin_ms=round(slow, 1),
            )

    def export(self, meta: Meta) -> None:
        """`export_audit` over no row (the command's start-up), one and seven days: wall
        time, rows/s net of the start-up, and peak RSS, which must not grow with the rows."""
        peaks: dict[int, int] = {}
        startup_s = 0.0
        for days in (0, 1, 7):
            since = meta.anchor - timedelta(days=days) if days else meta.anchor + SPAN
            with self.db.connect() as conn:
                found = conn.execute(
                    "SELECT count(*) FROM controlplane_toolcall WHERE created_at >= %s", (since,)
                ).fetchone()
            rows = int(found[0]) if found else 0
            argv = ["export_audit", "--since", since.isoformat(), "--format", "csv"]
            seconds, peak_kib = run_measured([PYTHON, "manage.py", *argv], self.env)
            peaks[days] = peak_kib
            if not days:
                startup_s = seconds
                log(f"export of no row: {seconds:.1f} s, peak RSS {peak_kib / 1024:.1f} MiB")
                self.add(
                    f"export_audit of no row (start-up): peak RSS {peak_kib / 1024:.1f} MiB",
                    [seconds * 1000],
                    "-",
                    None,
                    peak_rss_kib=peak_kib,
                )
                continue
            rate = rows / max(seconds - startup_s, 1e-3)
            log(
                f"export {days} day(s): {rows:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s "
                f"after start-up), peak RSS {peak_kib / 1024:.1f} MiB"
            )
            growth = peak_kib / peaks[1] - 1
            self.add(
                f"export_audit --since anchor-{days}d csv: {rows:,} rows, {rate:,.0f} rows/s "
                f"after start-up, peak RSS {peak_kib / 1024:.1f} MiB",
                [seconds * 1000],
                "peak RSS 7d within 10% of 1d" if days == 7 else "-",
                growth <= EXPORT_RSS_GROWTH if days == 7 else None,
                rows=rows,
                rows_per_s=round(rate),
                peak_rss_kib=peak_kib,
            )

    def prune(self, meta: Meta) -> None:
        """`prune_audit` of the oldest ~2 days while a probe inserts a row every 50 ms; then
        VACUUM and refill the emptied slots so the next run finds as many rows."""
        now = datetime.now(UTC)
        days = round((now - (meta.anchor - timedelta(days=PRUNE_KEEP_DAYS))) / timedelta(days=1))
        sizes = {"before prune": self.table_bytes()}
        with self.db.connect() as conn:
            checkpoints_before, wal_before = checkpoints(conn), wal_lsn(conn)
        probe = InsertProbe(self.db)
        probe.start()
        time.sleep(1.0)  # a baseline of undisturbed inserts
        began = time.monotonic()
        out = self.manage("prune_audit", "--older-than", str(days))
        prune_s = time.monotonic() - began
        time.sleep(1.0)
        waits = probe.stop()
        with self.db.connect() as conn:
            checkpointed = checkpoints(conn) - checkpoints_before
            wal_bytes = wal_lsn(conn) - wal_before
        slow = probe.slow_insert_waits(SLOW_INSERT_MS)
        log(
            f"prune: {wal_bytes / 2**20:,.0f} MiB of WAL, {checkpointed} checkpoint(s); "
            f"{slow['inserts']} inserts over "
            f"{SLOW_INSERT_MS:.0f} ms, sampled waits: probe {slow['probe']}, "
            f"checkpointer {slow['checkpointer']}; longest sample {slow['longest_sample_ms']} ms"
        )
        found = re.search(r"Deleted (\d+)", out)
        deleted = int(found.group(1)) if found else -1
        sizes["after prune"] = self.table_bytes()
        with self.db.connect() as conn:
            vacuum_s = vacuum_analyze(conn)
        sizes["after prune + VACUUM"] = self.table_bytes()
        log(
            f"prune --older-than {days}: {deleted:,} rows in {prune_s:.1f} s; inserts "
            f"meanwhile: {len(waits)}, p99 {percentile(waits, 0.99):.1f} ms, "
            f"max {max(waits):.1f} ms; VACUUM {vacuum_s:.1f} s"
        )
        refill_s = self.refill_oldest(meta, self.rows - self.count_rows()) if deleted > 0 else 0.0
        sizes["after refill"] = self.table_bytes()
        self.add(
            f"prune_audit --older-than {days}: {deleted:,} rows in {prune_s:.1f} s "
            "(start-up included); "
            f"{len(waits)} concurrent inserts, p99 {percentile(waits, 0.99):.1f} ms "
            "(median/max: insert wait)",
            waits,
            "longest insert wait < 1000 ms",
            max(waits) < INSERT_WAIT_TARGET_MS,
            deleted=deleted,
            prune_s=round(prune_s, 2),
            insert_p99_ms=round(percentile(waits, 0.99), 1),
            checkpoints=checkpointed,
            wal_mib=round(wal_bytes / 2**20),
            slow_insert_waits=slow,
        )
        rate = f", {deleted / refill_s:,.0f} rows/s with every index" if refill_s else ""
        self.add(
            f"VACUUM after prune {vacuum_s:.1f} s; refill of {deleted:,} rows {refill_s:.1f} s"
            + rate,
            None,
            "-",
            None,
        )
        self.facts["table_bytes"] = sizes
        self.add(
            "table + indexes: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in sizes.items()),
            None,
            "-",
            None,
        )

    def table_bytes(self) -> int:
        with self.db.connect() as conn:
            row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (TABLE,)).fetchone()
        return int(row[0]) if row else 0

    def count_rows(self) -> int:
        with self.db.connect() as conn:
            row = conn.execute("SELECT count(*) FROM controlplane_toolcall").fetchone()
        return int(row[0]) if row else 0

    # -- the whole phase ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        meta = self.prepare()
        if meta is None:
            meta = self.fill()
            self.facts["fill"] = {"reused": False, **meta.details}
        else:
            self.sync_schema()
            added = self.top_up(meta)
            self.facts["fill"] = {"reused": True, "topped_up": added, **meta.details}
        fill = meta.details
        self.add(
            f"fill of {self.rows:,} rows (COPY {fill['copy_rows_per_s']:,} rows/s, indexes "
            f"{fill['index_s']:.0f} s, VACUUM {fill['vacuum_s']:.0f} s; "
            f"{'reused, filled ' + fill['filled_at'] if self.facts['fill']['reused'] else 'now'})",
            [fill["total_s"] * 1000],
            "-",
            None,
        )
        self.web(meta)
        self.time_index_alternative(meta)
        self.export(meta)
        self.prune(meta)
        held = self.count_rows()
        if held != self.rows:
            log(f"warning: {held:,} rows left, not {self.rows:,}")
        self.facts["rows_held_after"] = held
        return {
            "rows": self.rows,
            "database": self.db.name,
            "anchor": meta.anchor.isoformat(),
            "repeats": REPEATS,
            "commit": git_commit(),
            "elapsed_s": round(time.monotonic() - started, 1),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cores": os.cpu_count(),
            "measures": self.measures,
            **self.facts,
        }


def run(database_url: str, rows: int, refill: bool, log_dir: Path) -> dict[str, Any]:
    """The phase, as bench/run.py calls it; returns what goes into facts["audit_scale"]."""
    database = ScaleDatabase.for_rows(database_url, rows)
    log(f"database {database.name}, {rows:,} rows, logs in {log_dir}")
    phase = Phase(database, rows, refill, log_dir)
    try:
        return phase.run()
    except Exception as exc:  # the rest of the bench's results are still written
        traceback.print_exc()
        return {
            "rows": rows,
            "database": database.name,
            "anchor": "n/a",
            "repeats": REPEATS,
            "commit": git_commit(),
            "error": f"{type(exc).__name__}: {str(exc)[-500:]}",
            "measures": phase.measures,
            **phase.facts,
        }


def django_env(database_url: str) -> dict[str, str]:
    """The project's processes against the scale database, without the bench's services."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "DATABASE_URL", "REDIS_URL", "QONTAK_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DATABASE_URL": database_url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + secrets.token_hex(16),
            "API_KEY_PEPPER": "bench-" + secrets.token_hex(16),
            # django.test.Client's host.
            "ALLOWED_HOSTS": "testserver",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "plain",
        }
    )
    return env


def git_commit() -> str:
    """The commit measured, "+dirty" when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "-C", str(ROOT), *args],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    dirty = git("status", "--short", "--untracked-files=no")
    return git("log", "-1", "--format=%h") + ("+dirty" if dirty else "")


def busiest_and_quietest(conn: psycopg.Connection) -> tuple[tuple[int, str], tuple[int, str]]:
    """The tenants with the most and fewest rows (by the fill's weights: first and last)."""
    tenants = [
        (int(pk), str(slug))
        for pk, slug in conn.execute(
            "SELECT id, slug FROM controlplane_tenant WHERE slug LIKE %s ORDER BY slug",
            (SLUG_PREFIX + "%",),
        )
    ]
    return tenants[0], tenants[-1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a running process, 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run `argv` with its output discarded; its wall seconds and its peak RSS in KiB.

    The peak is VmHWM, polled while it runs: wait4's ru_maxrss would not do, as Linux
    carries the forking process's high-water mark over the exec into the child's."""
    with tempfile.TemporaryFile() as errors:
        began = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - argv is built here
            argv, stdout=subprocess.DEVNULL, stderr=errors, env=env, cwd=ROOT
        )
        peak = 0
        while True:
            peak = max(peak, peak_rss_kib(process.pid))
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - began > COMMAND_TIMEOUT_S:
                process.kill()
            time.sleep(0.02)
        seconds = time.monotonic() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(
                f"{argv[2]} failed ({process.returncode}) after {seconds:.0f} s:\n"
                + errors.read()[-3000:].decode(errors="replace")
            )
    return seconds, peak


class InsertProbe:
    """Another session writing the audit: one INSERT every 50 ms, each one's latency kept.
    Its rows are dated now, after the anchor, and deleted when it stops. A second session
    samples what the probe's backend and the checkpointer wait on, so a slow insert can be
    explained (lock, WAL flush, I/O) rather than guessed at."""

    def __init__(self, database: ScaleDatabase):
        self.db = database
        self.waits_ms: list[float] = []
        self.windows: list[tuple[float, float]] = []  # (began, ended) per insert, monotonic
        # (asked, answered, probe's wait, checkpointer's): the sampler's own query can stall too
        self.samples: list[tuple[float, float, str, str]] = []
        self.ids: list[int] = []
        self.pid: int | None = None
        self.halt = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, name="insert-probe", daemon=True),
            threading.Thread(target=self._sample, name="wait-sampler", daemon=True),
        ]
        self.failure: BaseException | None = None

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        try:
            with self.db.connect(autocommit=True) as conn:
                tenant = conn.execute(
                    "SELECT id, pg_backend_pid() FROM controlplane_tenant WHERE slug LIKE %s "
                    "ORDER BY slug LIMIT 1",
                    (SLUG_PREFIX + "%",),
                ).fetchone()
                assert tenant is not None
                self.pid = int(tenant[1])
                tick = time.monotonic()
                while not self.halt.is_set():
                    began = time.monotonic()
                    row = conn.execute(
                        "INSERT INTO controlplane_toolcall (created_at, tenant_id, key_prefix, "
                        "tool, arguments, arguments_digest, outcome, upstream_status, latency_ms, "
                        "qontak_user, person, oauth_client, request_id, message, call_id) "
                        "VALUES (now(), %s, '', 'list_contacts', '{}', %s, 'ok', 200, 1.0, "
                        "'', '', '', %s, '', %s) RETURNING id",
                        (
                            tenant[0],
                            secrets.token_hex(32),
                            secrets.token_hex(16),
                            secrets.token_hex(16),
                        ),
                    ).fetchone()
                    ended = time.monotonic()
                    self.waits_ms.append((ended - began) * 1000)
                    self.windows.append((began, ended))
                    if row:
                        self.ids.append(int(row[0]))
                    tick += PROBE_EVERY_S
                    self.halt.wait(max(0.0, tick - time.monotonic()))
                conn.execute("DELETE FROM controlplane_toolcall WHERE id = ANY(%s)", (self.ids,))
        except BaseException as exc:
            self.failure = exc

    def _sample(self) -> None:
        try:
            with self.db.connect(autocommit=True) as conn:
                while not self.halt.is_set():
                    if self.pid is not None:
                        asked = time.monotonic()
                        rows = conn.execute(
                            "SELECT pid = %s, state, wait_event_type, wait_event "
                            "FROM pg_stat_activity "
                            "WHERE pid = %s OR backend_type = 'checkpointer'",
                            (self.pid, self.pid),
                        ).fetchall()
                        probe = checkpointer = "-"
                        for is_probe, state, kind, event in rows:
                            what = f"{kind}:{event}" if event else "on CPU"
                            if is_probe:
                                probe = what if state == "active" else f"({state})"
                            else:
                                checkpointer = what
                        self.samples.append((asked, time.monotonic(), probe, checkpointer))
                    self.halt.wait(WAIT_SAMPLE_EVERY_S)
        except BaseException as exc:
            self.failure = exc

    def stop(self) -> list[float]:
        self.halt.set()
        for thread in self.threads:
            thread.join()
        if self.failure is not None:
            raise RuntimeError(f"the insert probe failed: {self.failure}") from self.failure
        return self.waits_ms

    def slow_insert_waits(self, over_ms: float) -> dict[str, Any]:
        """For inserts slower than `over_ms`: how often each wait was sampled on the probe's
        backend and on the checkpointer while they ran."""
        slow = [(b, e) for b, e in self.windows if (e - b) * 1000 > over_ms]
        during = [s for s in self.samples if any(s[0] <= e and s[1] >= b for b, e in slow)]
        return {
            "over_ms": over_ms,
            "inserts": len(slow),
            "probe": dict(Counter(s[2] for s in during).most_common()),
            "checkpointer": dict(Counter(s[3] for s in during).most_common()),
            "longest_sample_ms": round(
                max(((a2 - a1) * 1000 for a1, a2, _, _ in self.samples), default=0.0), 1
            ),
        }


def wal_lsn(conn: psycopg.Connection) -> int:
    """Where the server's write-ahead log is now, in bytes since it began."""
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def checkpoints(conn: psycopg.Connection) -> int:
    """Checkpoints the server has run so far (the view moved in PostgreSQL 17)."""
    version = conn.info.server_version
    sql = (
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
        if version >= 170000
        else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    )
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


# -- the child processes: Django configured for the scale database -----------------------


def _seed(spec: dict[str, Any]) -> dict[str, Any]:
    """Tenants (named scale-NN), API keys spread by tenant size, and the admin superuser."""
    import hashlib

    from django.contrib.auth import get_user_model

    from controlplane.models import ApiKey, Tenant

    count, keys = int(spec["tenants"]), int(spec["api_keys"])
    weights = [1 / rank**0.9 for rank in range(1, count + 1)]
    for rank in range(1, count + 1):
        slug = f"{SLUG_PREFIX}{rank:02d}"
        digest = hashlib.sha256(slug.encode()).hexdigest()
        sso = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        tenant, _ = Tenant.objects.get_or_create(
            slug=slug,
            defaults={"name": f"Scale tenant {rank}", "default_qontak_user": sso},
        )
        for n in range(max(1, round(keys * weights[rank - 1] / sum(weights)))):
            prefix = f"qmcp_{hashlib.sha256(f'{slug}/{n}'.encode()).hexdigest()[:8]}"
            ApiKey.objects.get_or_create(
                prefix=prefix,
                defaults={
                    "tenant": tenant,
                    "label": f"assistant {n + 1}",
                    "digest": hashlib.sha256(prefix.encode()).hexdigest(),
                },
            )
    user_model = get_user_model()
    if not user_model.objects.filter(username=ADMIN_USER).exists():
        user_model.objects.create_superuser(ADMIN_USER, f"{ADMIN_USER}@example.com", None)
    return {"tenants": Tenant.objects.count(), "api_keys": ApiKey.objects.count()}


def _explain(sql: str) -> tuple[str, list[str], float]:
    """EXPLAIN (ANALYZE, BUFFERS) text, its plan node types and its execution time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        lines = [str(row[0]) for row in cursor.fetchall()]
    nodes = []
    for line in lines:
        text = line.strip().removeprefix("->").strip()
        if "(cost=" in text:
            nodes.append(text.split("  (cost=")[0])
    found = [
        float(m.group(1)) for line in lines if (m := re.search(r"Execution Time: ([\d.]+)", line))
    ]
    return "\n".join(lines), nodes, found[0] if found else 0.0


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the dashboard and the changelist views `repeats` times each, then EXPLAIN the
    audit queries each one sends."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.backends.signals import connection_created
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from controlplane.operator.dashboard import dashboard_activity

    def cap(sender: Any, connection: Any, **kwargs: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")

    connection_created.connect(cap)
    anchor = datetime.fromisoformat(spec["anchor"])
    repeats = int(spec["repeats"])
    request_id, search_pk = str(spec["search_request_id"]), int(spec["search_pk"])
    client = Client()
    client.force_login(get_user_model().objects.get(username=ADMIN_USER))

    def page(query: dict[str, Any], must_show: tuple[str, ...] = ()) -> Callable[[], None]:
        url = CHANGELIST + ("?" + urlencode(query) if query else "")

        def fetch() -> None:
            response = client.get(url)
            if response.status_code != 200:
                raise AssertionError(f"GET {url}: HTTP {response.status_code}")
            body = response.content.decode()
            for text in must_show:
                if text not in body:
                    raise AssertionError(f"GET {url}: {text!r} not in the page")

        return fetch

    day = anchor.replace(hour=0, minute=0, second=0, microsecond=0)
    # The query string DateFieldListFilter's "Past 7 days" link carries (str of an aware
    # datetime), for the day of the anchor rather than today.
    week = {
        "created_at__gte": str(day - timedelta(days=7)),
        "created_at__lt": str(day + timedelta(days=1)),
    }
    tenant = {"tenant__id__exact": spec["quiet_tenant_id"]}
    views: list[tuple[str, str, Callable[[], Any]]] = [
        ("dashboard", "dashboard: all tenants, last hour", lambda: dashboard_activity(now=anchor)),
        (
            "dashboard",
            f"dashboard: tenant {spec['busiest_slug']} (busiest), last hour",
            lambda: dashboard_activity(now=anchor, tenant_slug=spec["busiest_slug"]),
        ),
        ("changelist", "changelist: first page, unfiltered", page({})),
        ("changelist", "changelist: past 7 days (date filter)", page(week)),
        ("changelist", f"changelist: tenant {spec['quiet_slug']} (quietest)", page(tenant)),
        ("changelist", "changelist: outcome denied", page({"outcome__exact": "denied"})),
        (
            "changelist",
            "changelist: search one request id",
            page(
                {"q": request_id},
                (request_id, f"{CHANGELIST}{search_pk}/change/"),
            ),
        ),
        ("changelist", "changelist: tenant + past 7 days", page({**tenant, **week})),
    ]
    client.get("/admin/")  # sessions, templates and the connection warmed once
    timings: list[dict[str, Any]] = []
    explained: list[dict[str, Any]] = []
    for kind, name, action in views:
        samples: list[float] = []
        error = ""
        try:
            for _ in range(repeats):
                began = time.perf_counter()
                action()
                samples.append((time.perf_counter() - began) * 1000)
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
            connection.close()  # a cancelled statement leaves the transaction unusable
        timings.append({"kind": kind, "name": name, "samples_ms": samples, "error": error})
        print(f"{name}: {samples} {error}", flush=True)
        if error:
            continue
        with CaptureQueriesContext(connection) as captured:
            action()
        for query in captured.captured_queries:
            sql = query["sql"]
            if TABLE not in sql or not sql.lstrip().upper().startswith("SELECT"):
                continue
            try:
                text, nodes, execution = _explain(sql)
            except Exception as exc:
                text, nodes, execution = f"EXPLAIN failed: {exc}", [], -1.0
                connection.close()
            explained.append(
                {"view": name, "sql": sql, "plan": text, "nodes": nodes, "ms": execution}
            )
    with Path(spec["explain_path"]).open("w") as out:
        out.write(f"EXPLAIN (ANALYZE, BUFFERS) of the audit queries, anchor {anchor}\n")
        for item in explained:
            out.write(f"\n=== {item['view']}: {item['ms']:.1f} ms: {' > '.join(item['nodes'])}\n")
            out.write(item["sql"] + "\n\n" + item["plan"] + "\n")
    summary = [{"view": e["view"], "ms": e["ms"], "nodes": e["nodes"]} for e in explained]
    return {"timings": timings, "explain": summary}


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_scale")
    parser.add_argument("--child", choices=["seed", "measure"], required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    import django

    django.setup()
    spec = json.loads(args.spec)
    result = _seed(spec) if args.child == "seed" else _measure(spec)
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    child_main(sys.argv[1:])
