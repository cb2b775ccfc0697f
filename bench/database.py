"""The throw-away database `make bench` runs the control plane against.

With a PostgreSQL DATABASE_URL the bench creates `bench_<pid>` on that server and drops it at
the end; otherwise it uses a SQLite file in the run's log directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


@dataclass
class BenchDatabase:
    """A dedicated database: `bench_<pid>` on the PostgreSQL of DATABASE_URL, or SQLite."""

    url: str
    vendor: str
    name: str
    admin_url: str = ""

    @classmethod
    def create(cls, base_url: str, log_dir: Path) -> BenchDatabase:
        if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            path = log_dir / "bench.sqlite3"
            return cls(url=f"sqlite:///{path}", vendor="sqlite", name=str(path))
        import psycopg

        name = f"bench_{os.getpid()}"
        parts = urlsplit(base_url)
        admin_url = urlunsplit(parts._replace(scheme="postgresql"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(parts._replace(path=f"/{name}"))
        return cls(url=url, vendor="postgresql", name=name, admin_url=admin_url)

    def url_through(self, host: str, port: int) -> str:
        """This database's URL with the server address replaced (for the wire counter)."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 5432

    def drop(self) -> None:
        if self.vendor != "postgresql":
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.vendor == "postgresql":
            import psycopg

            admin = urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{self.name}"))
            with psycopg.connect(admin, autocommit=True) as conn:
                return list(conn.execute(sql, params).fetchall())
        import sqlite3

        with sqlite3.connect(self.name, timeout=20) as conn:
            return list(conn.execute(sql, params).fetchall())

    def tool_call_outcomes(self) -> dict[str, int]:
        rows = self._query("SELECT outcome, COUNT(*) FROM controlplane_toolcall GROUP BY outcome")
        return {str(outcome): int(count) for outcome, count in rows}

    def server_counters(self) -> dict[str, int] | None:
        """PostgreSQL's own counters for this database (transactions, sessions opened)."""
        if self.vendor != "postgresql":
            return None
        rows = self._query(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s",
            (self.name,),
        )
        # This query is itself one transaction and one session on the bench database.
        return {"transactions": int(rows[0][0]), "sessions": int(rows[0][1])}
