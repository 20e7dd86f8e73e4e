"""The schema both databases share: the migrations (SQLite and PostgreSQL spellings side by side), the schema
version, the error for a database newer than this ivr, and the query of a read (with its chunk size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ivr.ops.cdr.record import COLUMNS, CdrError, _utc


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_MIGRATIONS: Final = (
    _Migration(
        1,
        "call detail records",
        sqlite=(
            """CREATE TABLE cdr (
                record_id TEXT PRIMARY KEY,
                call_id TEXT NOT NULL,
                instance TEXT NOT NULL,
                caller TEXT NOT NULL,
                dialled TEXT NOT NULL,
                client TEXT,
                flow TEXT,
                flow_version TEXT,
                started_at TEXT NOT NULL,
                answered_at TEXT,
                ended_at TEXT,
                end_reason TEXT,
                sip_status INTEGER,
                path TEXT NOT NULL DEFAULT '[]',
                inputs TEXT NOT NULL DEFAULT '[]',
                handoff TEXT,
                rtp_packets_sent INTEGER,
                rtp_packets_received INTEGER,
                rtp_packets_lost INTEGER,
                rtp_jitter_ms REAL,
                extra TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX cdr_started_at ON cdr (started_at)",
            "CREATE INDEX cdr_call_id ON cdr (call_id)",
            "CREATE INDEX cdr_open ON cdr (instance) WHERE ended_at IS NULL",
        ),
        postgres=(
            """CREATE TABLE cdr (
                record_id TEXT PRIMARY KEY,
                call_id TEXT NOT NULL,
                instance TEXT NOT NULL,
                caller TEXT NOT NULL,
                dialled TEXT NOT NULL,
                client TEXT,
                flow TEXT,
                flow_version TEXT,
                started_at TIMESTAMPTZ NOT NULL,
                answered_at TIMESTAMPTZ,
                ended_at TIMESTAMPTZ,
                end_reason TEXT,
                sip_status INTEGER,
                path JSONB NOT NULL DEFAULT '[]',
                inputs JSONB NOT NULL DEFAULT '[]',
                handoff JSONB,
                rtp_packets_sent BIGINT,
                rtp_packets_received BIGINT,
                rtp_packets_lost BIGINT,
                rtp_jitter_ms DOUBLE PRECISION,
                extra JSONB NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX cdr_started_at ON cdr (started_at)",
            "CREATE INDEX cdr_call_id ON cdr (call_id)",
            "CREATE INDEX cdr_open ON cdr (instance) WHERE ended_at IS NULL",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1].version


def _newer_schema(where: str, found: int) -> CdrError:
    return CdrError(
        f"{where}: the CDR schema is at version {found}, newer than this ivr knows ({SCHEMA_VERSION}); "
        "upgrade ivr or point it at another database"
    )


# -- queries -----------------------------------------------------------------------------------------------------

_FLUSH_ROWS: Final = 500
"""Rows a read hands over at a time: PostgreSQL's cursor prefetch, and what an export writes in one go."""


@dataclass(frozen=True, slots=True)
class _Query:
    since: datetime | None = None
    until: datetime | None = None
    call_id: str | None = None
    limit: int | None = None

    def sql(self, placeholder: Callable[[int], str], encode_time: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("started_at >= {}", None if self.since is None else encode_time(_utc(self.since))),
            ("started_at < {}", None if self.until is None else encode_time(_utc(self.until))),
            ("call_id = {}", self.call_id),
        ):
            if value is not None:
                params.append(value)
                clauses.append(clause.format(placeholder(len(params))))
        sql = f"SELECT {', '.join(COLUMNS)} FROM cdr"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at, record_id"
        if self.limit is not None:
            sql += f" LIMIT {int(self.limit)}"
        return sql, params
