"""Call detail records: one row per call, written when the call starts and completed when it ends.

A record is inserted at call start, updated when the call is answered (and whenever the controller wants the path so
far to survive a crash), and completed when the call ends, so a crash loses no call: at the next start,
:meth:`CdrStore.close_interrupted` closes the rows this instance left open with end reason ``interrupted``.

Stores, by URL (:meth:`CdrStore.open`):

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the default; SQLAlchemy's spelling). WAL mode.
  Query options: ``synchronous=full|normal|off`` (default ``full``: a committed record survives power loss; ``normal``
  survives a process crash only) and ``busy_timeout=SECONDS`` (default 5).
  All writes go through one dedicated writer thread fed by a queue. Why not aiosqlite: it also runs one thread per
  connection, but commits statement by statement; the writer thread here takes everything queued since its last
  commit and commits it as one transaction (group commit), which is what keeps ``synchronous=full`` affordable under
  load, keeps the writes of one call in order, and needs no dependency.
* ``postgresql://user:password@host:port/db`` (asyncpg, imported only then): one writer task with its own connection,
  the same batching, reconnection with back-off when the server goes away (writes wait in the queue, none is lost).

Every write method returns an :class:`asyncio.Future` at once (nothing blocks the event loop): ``await`` it to know
the write is committed, or drop it (a failure is logged and counted in :attr:`CdrStore.write_errors`). Writes of one
store are applied in the order they were made.

Values the flow marks sensitive are masked when the :class:`InputHeard` is built (``"12345678"`` -> ``"12****78"``), so
the unmasked value never reaches the store's queue. ``handoff`` and ``extra`` are scrubbed of bytes and secret keys.

Several ivr nodes may share one PostgreSQL database: every row carries the ``instance`` that wrote it, and
``close_interrupted`` only closes the rows of its own instance, so give every node a distinct, stable instance name.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib
import io
import json
import queue
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import structlog

from ivr.ops.redact import mask_value, scrub

__all__ = [
    "COLUMNS",
    "DEFAULT_URL",
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "INTERRUPTED",
    "SCHEMA_VERSION",
    "CallRecord",
    "CdrError",
    "CdrStore",
    "ExportFormat",
    "InputHeard",
    "MediaQuality",
    "display_url",
    "export_records",
    "write_export",
]

log = structlog.get_logger("ivr.ops.cdr")

DEFAULT_URL: Final = "sqlite:///cdr.db"
INTERRUPTED: Final = "interrupted"
EXPORT_FORMATS: Final = ("csv", "json", "jsonl")
ExportFormat = Literal["csv", "json", "jsonl"]
MAX_BATCH: Final = 512
"""Writes committed in one transaction at most."""
_FLUSH_ROWS: Final = 500
_T = TypeVar("_T")


class CdrError(Exception):
    """A call detail record could not be written or read; the message says which and why."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- the record ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputHeard:
    """One input the caller gave at a node: ``kind`` is ``dtmf``, ``speech``, ... When ``sensitive``, ``value`` is
    masked right here, on construction."""

    node: str
    kind: str
    value: str
    sensitive: bool = False

    def __post_init__(self) -> None:
        if self.sensitive:
            object.__setattr__(self, "value", mask_value(self.value))

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "value": self.value, "sensitive": self.sensitive}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputHeard:
        return cls(str(data["node"]), str(data["kind"]), str(data["value"]), bool(data.get("sensitive", False)))


@dataclass(frozen=True, slots=True)
class MediaQuality:
    """RTP figures of the call: packets both ways, packets lost (RFC 3550) and interarrival jitter."""

    packets_sent: int
    packets_received: int
    packets_lost: int
    jitter_ms: float

    @property
    def loss_ratio(self) -> float:
        expected = self.packets_received + self.packets_lost
        return self.packets_lost / expected if expected > 0 else 0.0

    @classmethod
    def from_stream(cls, record: Mapping[str, object]) -> MediaQuality:
        """From ``MediaStream.call_record()`` (keys ``rtp_packets_sent``, ``rtp_packets_received``,
        ``rtp_packets_lost``, ``rtp_jitter_ms``; missing ones count as 0)."""

        def number(key: str) -> float:
            value = record.get(key, 0)
            return float(value) if isinstance(value, int | float) else 0.0

        return cls(
            packets_sent=int(number("rtp_packets_sent")),
            packets_received=int(number("rtp_packets_received")),
            packets_lost=max(0, int(number("rtp_packets_lost"))),
            jitter_ms=number("rtp_jitter_ms"),
        )


COLUMNS: Final = (
    "record_id",
    "call_id",
    "instance",
    "caller",
    "dialled",
    "client",
    "flow",
    "flow_version",
    "started_at",
    "answered_at",
    "ended_at",
    "end_reason",
    "sip_status",
    "path",
    "inputs",
    "handoff",
    "rtp_packets_sent",
    "rtp_packets_received",
    "rtp_packets_lost",
    "rtp_jitter_ms",
    "extra",
)
_TIME_COLUMNS: Final = frozenset({"started_at", "answered_at", "ended_at"})
_JSON_COLUMNS: Final = frozenset({"path", "inputs", "handoff", "extra"})
EXPORT_COLUMNS: Final = (*COLUMNS[:11], "duration_s", *COLUMNS[11:])


@dataclass(slots=True)
class CallRecord:
    """One call. Build it at call start (``call_id``, ``caller``, ``dialled``; the rest as far as known)."""

    call_id: str
    caller: str
    dialled: str
    started_at: datetime = field(default_factory=utcnow)
    client: str | None = None
    flow: str | None = None
    flow_version: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    path: list[str] = field(default_factory=list)
    inputs: list[InputHeard] = field(default_factory=list)
    handoff: dict[str, Any] | None = None
    media: MediaQuality | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    instance: str = ""
    """The ivr node that wrote the record (set by the store)."""
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """The row's key: a Call-ID alone is not trusted to be unique."""

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, ``None`` while open."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def columns(self) -> dict[str, Any]:
        """The row as Python values (times aware UTC, JSON columns as lists and dicts)."""
        media = self.media
        return {
            "record_id": self.record_id,
            "call_id": self.call_id,
            "instance": self.instance,
            "caller": self.caller,
            "dialled": self.dialled,
            "client": self.client,
            "flow": self.flow,
            "flow_version": self.flow_version,
            "started_at": _utc(self.started_at),
            "answered_at": None if self.answered_at is None else _utc(self.answered_at),
            "ended_at": None if self.ended_at is None else _utc(self.ended_at),
            "end_reason": self.end_reason,
            "sip_status": self.sip_status,
            "path": list(self.path),
            "inputs": [heard.as_dict() for heard in self.inputs],
            "handoff": None if self.handoff is None else scrub(self.handoff),
            "rtp_packets_sent": None if media is None else media.packets_sent,
            "rtp_packets_received": None if media is None else media.packets_received,
            "rtp_packets_lost": None if media is None else media.packets_lost,
            "rtp_jitter_ms": None if media is None else media.jitter_ms,
            "extra": scrub(self.extra),
        }

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> CallRecord:
        """From a row of either store (times as ISO text or datetime, JSON columns as text or decoded)."""

        def moment(key: str) -> datetime | None:
            value = row[key]
            if value is None:
                return None
            return _utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))

        def decoded(key: str) -> Any:
            value = row[key]
            return json.loads(value) if isinstance(value, str) else value

        media = None
        if row["rtp_packets_sent"] is not None:
            media = MediaQuality(
                int(row["rtp_packets_sent"]),
                int(row["rtp_packets_received"] or 0),
                int(row["rtp_packets_lost"] or 0),
                float(row["rtp_jitter_ms"] or 0.0),
            )
        started = moment("started_at")
        assert started is not None  # NOT NULL in both schemas
        return cls(
            call_id=row["call_id"],
            caller=row["caller"],
            dialled=row["dialled"],
            started_at=started,
            client=row["client"],
            flow=row["flow"],
            flow_version=row["flow_version"],
            answered_at=moment("answered_at"),
            ended_at=moment("ended_at"),
            end_reason=row["end_reason"],
            sip_status=row["sip_status"],
            path=[str(node) for node in decoded("path") or []],
            inputs=[InputHeard.from_dict(item) for item in decoded("inputs") or []],
            handoff=decoded("handoff"),
            media=media,
            extra=decoded("extra") or {},
            instance=row["instance"],
            record_id=row["record_id"],
        )

    def export_row(self) -> dict[str, Any]:
        """The record as the export writes it: :data:`EXPORT_COLUMNS`, times as ISO 8601 UTC text."""
        row = self.columns()
        for key in _TIME_COLUMNS:
            if row[key] is not None:
                row[key] = row[key].isoformat(timespec="milliseconds")
        duration = self.duration
        row["duration_s"] = None if duration is None else round(duration, 3)
        return {key: row[key] for key in EXPORT_COLUMNS}


# -- writes, as data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Insert:
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Update:
    record_id: str
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _CloseOpen:
    instance: str
    at: datetime


_Op = _Insert | _Update | _CloseOpen
_Work = tuple[_Op, "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _check_update(op: _Op, result: Any) -> BaseException | None:
    if isinstance(op, _Update) and result == 0:
        return CdrError(f"record {op.record_id} is not in the store (its insert failed?)")
    return None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# -- schema ------------------------------------------------------------------------------------------------------


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


# -- export formats ----------------------------------------------------------------------------------------------


_FORMULA = re.compile(r"^[=@\t\r]|^[+-](?![\d\s().-]*$)")


def _csv_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (a caller can put ``=HYPERLINK(...)`` in From) gets a
    leading ``'``; phone numbers such as ``+359 2 123`` stay as they are."""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


class _Exporter:
    def __init__(self, fmt: str) -> None:
        if fmt not in EXPORT_FORMATS:
            raise CdrError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        self.fmt = fmt
        self.count = 0
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")

    def header(self) -> str:
        if self.fmt == "csv":
            return self._csv_line(list(EXPORT_COLUMNS))
        return "[" if self.fmt == "json" else ""

    def row(self, record: CallRecord) -> str:
        data = record.export_row()
        first = self.count == 0
        self.count += 1
        if self.fmt == "csv":
            cells = [
                "" if value is None else _dumps(value) if key in _JSON_COLUMNS else _csv_safe(value)
                for key, value in data.items()
            ]
            return self._csv_line(cells)
        text = _dumps(data)
        if self.fmt == "json":
            return ("\n" if first else ",\n") + text
        return text + "\n"

    def footer(self) -> str:
        if self.fmt == "json":
            return "\n]\n" if self.count else "]\n"
        return ""

    def _csv_line(self, cells: list[Any]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._csv.writerow(cells)
        return self._buffer.getvalue()


def write_export(records: Iterable[CallRecord], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``records`` to ``out`` as CSV (a header line, JSON text in the list/dict cells), a JSON array, or JSON
    lines. Returns how many were written."""
    exporter = _Exporter(fmt)
    chunk = [exporter.header()]
    for record in records:
        chunk.append(exporter.row(record))
        if len(chunk) >= _FLUSH_ROWS:
            out.write("".join(chunk))
            chunk.clear()
    chunk.append(exporter.footer())
    out.write("".join(chunk))
    out.flush()
    return exporter.count


# -- URLs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SqliteTarget:
    path: Path
    synchronous: str
    busy_timeout: float


@dataclass(frozen=True, slots=True)
class _PostgresTarget:
    dsn: str


def _parse_url(url: str) -> _SqliteTarget | _PostgresTarget:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise CdrError(f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = unquote(parts.path[1:])
        if path == ":memory:":
            raise CdrError(f"{url!r}: an in-memory database would lose every record; give a file")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise CdrError(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))}; known: synchronous, busy_timeout")
        synchronous = options.get("synchronous", "full").lower()
        if synchronous not in ("off", "normal", "full", "extra"):
            raise CdrError(f"{url!r}: synchronous must be off, normal, full or extra")
        try:
            busy = float(options.get("busy_timeout", "5"))
        except ValueError:
            raise CdrError(f"{url!r}: busy_timeout must be a number of seconds") from None
        return _SqliteTarget(Path(path), synchronous.upper(), busy)
    if scheme in ("postgresql", "postgres"):
        return _PostgresTarget(url)
    raise CdrError(f"{url!r}: unsupported CDR store; use sqlite:///path.db or postgresql://user@host/db")


def display_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _asyncpg() -> Any:
    try:
        return importlib.import_module("asyncpg")
    except ImportError:
        raise CdrError("PostgreSQL call records need asyncpg: pip install asyncpg") from None


# -- SQLite ------------------------------------------------------------------------------------------------------

_SQLITE_TRANSIENT: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PROTOCOL}
)
_STOP: Final = object()


def _sqlite_time(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="microseconds")


def _sqlite_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _TIME_COLUMNS:
        return _sqlite_time(value)
    if key in _JSON_COLUMNS:
        return _dumps(value)
    return value


def _sqlite_connect(target: _SqliteTarget) -> sqlite3.Connection:
    target.path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(target.path), isolation_level=None, timeout=target.busy_timeout, check_same_thread=False)
    try:
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise CdrError(f"{target.path}: SQLite refused WAL mode (got {mode}); put the database on a local disk")
        conn.execute(f"PRAGMA synchronous={target.synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _sqlite_migrate(conn: sqlite3.Connection, where: str) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cdr_schema "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM cdr_schema").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise _newer_schema(where, current)
        for migration in _MIGRATIONS:
            if migration.version > current:
                for statement in migration.sqlite:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO cdr_schema (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, _sqlite_time(utcnow())),
                )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return max(current, SCHEMA_VERSION)


def _sqlite_apply(conn: sqlite3.Connection, op: _Op) -> Any:
    if isinstance(op, _Insert):
        names = list(op.columns)
        conn.execute(
            f"INSERT INTO cdr ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            "ON CONFLICT (record_id) DO NOTHING",
            [_sqlite_value(name, op.columns[name]) for name in names],
        )
        return None
    if isinstance(op, _Update):
        names = list(op.columns)
        cursor = conn.execute(
            f"UPDATE cdr SET {', '.join(f'{name} = ?' for name in names)} WHERE record_id = ?",
            [*(_sqlite_value(name, op.columns[name]) for name in names), op.record_id],
        )
        return cursor.rowcount
    cursor = conn.execute(
        "UPDATE cdr SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL AND instance = ?",
        (_sqlite_time(op.at), INTERRUPTED, op.instance),
    )
    return cursor.rowcount


class _SqliteWriter:
    """One thread, one connection, a FIFO of writes; everything queued since the last commit goes in one transaction."""

    def __init__(self, target: _SqliteTarget, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self._loop = loop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=f"cdr-writer:{target.path.name}", daemon=True)
        self._stopping = False
        self._ready: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._ready = self._loop.create_future()
        self._thread.start()
        await self._ready

    def submit(self, op: _Op, future: asyncio.Future[Any]) -> None:
        self._queue.put((op, future))

    async def close(self, timeout: float) -> bool:
        self._stopping = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout)
        await asyncio.sleep(0)  # let the last batch's results land
        return not self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _main(self) -> None:
        ready = self._ready
        assert ready is not None
        try:
            conn = _sqlite_connect(self.target)
            try:
                _sqlite_migrate(conn, str(self.target.path))
            except BaseException:
                conn.close()
                raise
        except BaseException as exc:
            error = exc if isinstance(exc, CdrError) else CdrError(f"{self.target.path}: {exc}")
            self._post(_fail_if_pending, ready, error)
            return
        self._post(_succeed_if_pending, ready, None)
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            stop = item is _STOP
            work: list[_Work] = [] if stop else [item]  # type: ignore[list-item]
            while not stop and len(work) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    work.append(item)  # type: ignore[arg-type]
            if work:
                self._post(_resolve, self._run(conn, work))
            if stop:
                return

    def _run(self, conn: sqlite3.Connection, work: list[_Work]) -> list[_Outcome]:
        delay = 0.05
        attempts = 0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                results = [_sqlite_apply(conn, op) for op, _ in work]
                conn.execute("COMMIT")
                return [
                    (fut, result, _check_update(op, result)) for (op, fut), result in zip(work, results, strict=True)
                ]
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                code = getattr(exc, "sqlite_errorcode", None)
                transient = code is not None and (code & 0xFF) in _SQLITE_TRANSIENT
                if not transient or (self._stopping and attempts >= 20):
                    break
                if attempts % 20 == 0:
                    log.warning("cdr write retrying", db=str(self.target.path), error=str(exc), writes=len(work))
                attempts += 1
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        outcomes: list[_Outcome] = []
        for op, fut in work:  # one at a time, so one bad write does not take the others with it
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = _sqlite_apply(conn, op)
                conn.execute("COMMIT")
                outcomes.append((fut, result, _check_update(op, result)))
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                outcomes.append((fut, None, CdrError(f"{self.target.path}: {exc}")))
        return outcomes


def _sqlite_read(target: _SqliteTarget, query: _Query, consume: Callable[[Iterator[CallRecord]], _T]) -> _T:
    if not target.path.is_file():
        raise CdrError(f"{target.path}: no such CDR database")
    conn = sqlite3.connect(str(target.path), timeout=target.busy_timeout)
    try:
        sql, params = query.sql(lambda _: "?", _sqlite_time)
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise CdrError(f"{target.path}: {exc} (not a CDR database?)") from None
        return consume(CallRecord.from_columns(dict(zip(COLUMNS, row, strict=True))) for row in cursor)
    finally:
        conn.close()


# -- PostgreSQL --------------------------------------------------------------------------------------------------

_PG_LOCK_KEY: Final = 0x1C7CD8  # advisory lock serialising schema migrations of several nodes


def _pg_value(key: str, value: Any) -> Any:
    if value is not None and key in _JSON_COLUMNS:
        return _dumps(value)
    return value


def _pg_param(key: str, index: int) -> str:
    return f"${index}::jsonb" if key in _JSON_COLUMNS else f"${index}"


def _pg_rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _pg_apply(conn: Any, op: _Op) -> Any:
    if isinstance(op, _Insert):
        names = list(op.columns)
        params = ", ".join(_pg_param(name, i) for i, name in enumerate(names, 1))
        await conn.execute(
            f"INSERT INTO cdr ({', '.join(names)}) VALUES ({params}) ON CONFLICT (record_id) DO NOTHING",
            *(_pg_value(name, op.columns[name]) for name in names),
        )
        return None
    if isinstance(op, _Update):
        names = list(op.columns)
        sets = ", ".join(f"{name} = {_pg_param(name, i)}" for i, name in enumerate(names, 1))
        status = await conn.execute(
            f"UPDATE cdr SET {sets} WHERE record_id = ${len(names) + 1}",
            *(_pg_value(name, op.columns[name]) for name in names),
            op.record_id,
        )
        return _pg_rowcount(status)
    status = await conn.execute(
        "UPDATE cdr SET ended_at = $1, end_reason = $2 WHERE ended_at IS NULL AND instance = $3",
        op.at,
        INTERRUPTED,
        op.instance,
    )
    return _pg_rowcount(status)


async def _pg_migrate(conn: Any, where: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS cdr_schema "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM cdr_schema"))
        if current > SCHEMA_VERSION:
            raise _newer_schema(where, current)
        for migration in _MIGRATIONS:
            if migration.version > current:
                for statement in migration.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO cdr_schema (version, description, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.description,
                    utcnow(),
                )


class _PostgresWriter:
    """One task, one connection, a FIFO of writes, batched into transactions; reconnects when the server goes away."""

    def __init__(self, target: _PostgresTarget, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self._loop = loop
        self._pg = _asyncpg()
        exceptions = self._pg.exceptions
        self._connection_errors: tuple[type[BaseException], ...] = (
            OSError,
            TimeoutError,
            exceptions.PostgresConnectionError,
            exceptions.OperatorInterventionError,
            exceptions.InterfaceError,
        )
        self._queue: asyncio.Queue[_Work | None] = asyncio.Queue()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def where(self) -> str:
        return display_url(self.target.dsn)

    async def _connect(self) -> Any:
        return await self._pg.connect(self.target.dsn, timeout=10)

    async def start(self) -> None:
        try:
            self._conn = await self._connect()
            await _pg_migrate(self._conn, self.where)
        except CdrError:
            await self._drop_connection()
            raise
        except Exception as exc:
            await self._drop_connection()
            raise CdrError(f"{self.where}: {exc}") from exc
        self._task = self._loop.create_task(self._serve(), name="cdr-writer:postgres")

    def submit(self, op: _Op, future: asyncio.Future[Any]) -> None:
        self._queue.put_nowait((op, future))

    async def close(self, timeout: float) -> bool:
        self._stopping = True
        self._queue.put_nowait(None)
        done = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                done = False
        await self._drop_connection()
        return done

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2)
            except Exception:
                conn.terminate()

    async def _serve(self) -> None:
        while True:
            item = await self._queue.get()
            stop = item is None
            work: list[_Work] = [] if item is None else [item]
            while not stop and len(work) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stop = True
                else:
                    work.append(item)
            if work:
                _resolve(await self._run(work))
            if stop:
                return

    async def _run(self, work: list[_Work]) -> list[_Outcome]:
        delay = 0.05
        attempts = 0
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                conn = self._conn
                results = []
                async with conn.transaction():
                    for op, _ in work:
                        results.append(await _pg_apply(conn, op))
                return [
                    (fut, result, _check_update(op, result)) for (op, fut), result in zip(work, results, strict=True)
                ]
            except self._connection_errors as exc:
                await self._drop_connection()
                if self._stopping and attempts >= 5:
                    error = CdrError(f"{self.where}: {exc}")
                    return [(fut, None, error) for _, fut in work]
                if attempts % 20 == 0:
                    log.warning("cdr write retrying", db=self.where, error=str(exc), writes=len(work))
                attempts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                break
        outcomes: list[_Outcome] = []
        for op, fut in work:  # one at a time, so one bad write does not take the others with it
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                async with self._conn.transaction():
                    result = await _pg_apply(self._conn, op)
                outcomes.append((fut, result, _check_update(op, result)))
            except Exception as exc:
                outcomes.append((fut, None, CdrError(f"{self.where}: {exc}")))
        return outcomes


async def _pg_read(target: _PostgresTarget, query: _Query, on_row: Callable[[CallRecord], Any]) -> None:
    pg = _asyncpg()
    where = display_url(target.dsn)
    try:
        conn = await pg.connect(target.dsn, timeout=10)
    except Exception as exc:
        raise CdrError(f"{where}: {exc}") from exc
    try:
        sql, params = query.sql(lambda index: f"${index}", _utc)
        async with conn.transaction():
            async for row in conn.cursor(sql, *params, prefetch=_FLUSH_ROWS):
                result = on_row(CallRecord.from_columns(row))
                if asyncio.iscoroutine(result):
                    await result
    except pg.PostgresError as exc:
        raise CdrError(f"{where}: {exc}") from exc
    finally:
        await conn.close()


# -- resolving futures on the loop -------------------------------------------------------------------------------


def _succeed_if_pending(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail_if_pending(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if error is None:
            _succeed_if_pending(future, result)
        else:
            _fail_if_pending(future, error)


# -- the store ---------------------------------------------------------------------------------------------------


class CdrStore:
    """Call detail records in SQLite or PostgreSQL. Open with :meth:`open`; use from the event loop's thread."""

    def __init__(self, url: str, target: _SqliteTarget | _PostgresTarget, instance: str) -> None:
        self.url = url
        self.instance = instance
        self._target = target
        self._loop = asyncio.get_running_loop()
        self._writer: _SqliteWriter | _PostgresWriter = (
            _SqliteWriter(target, self._loop)
            if isinstance(target, _SqliteTarget)
            else _PostgresWriter(target, self._loop)
        )
        self._open: dict[str, str] = {}  # call id -> record id, for calls started and not yet ended
        self._closed = False
        self.backlog = 0
        """Writes submitted and not yet committed (or failed)."""
        self.write_errors = 0
        """Writes that failed for good since the store was opened."""
        self.writes = 0
        """Writes committed since the store was opened."""

    @classmethod
    async def open(cls, url: str = DEFAULT_URL, *, instance: str | None = None) -> CdrStore:
        """Connect, create or migrate the schema, start the writer. ``instance`` names this ivr node in the
        records (default: the host name). Raises :class:`CdrError` with the reason."""
        target = _parse_url(url)
        store = cls(url, target, instance or socket.gethostname())
        await store._writer.start()
        log.info("cdr store open", url=display_url(url), instance=store.instance, schema=SCHEMA_VERSION)
        return store

    @property
    def kind(self) -> str:
        return "sqlite" if isinstance(self._target, _SqliteTarget) else "postgresql"

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def is_open(self, call_id: str) -> bool:
        return call_id in self._open

    # -- writes --------------------------------------------------------------------------------------------------

    def _failed(self, error: CdrError) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        future.add_done_callback(self._observe)
        self.backlog += 1
        future.set_exception(error)
        return future

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        if self._closed:
            return self._failed(CdrError("the CDR store is closed"))
        future: asyncio.Future[Any] = self._loop.create_future()
        future.add_done_callback(self._observe)
        self.backlog += 1
        self._writer.submit(op, future)
        return future

    def _observe(self, future: asyncio.Future[Any]) -> None:
        self.backlog -= 1
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.writes += 1
        else:
            self.write_errors += 1
            log.warning("cdr write failed", error=str(error))

    def _record_id(self, call_id: str, pop: bool = False) -> str | None:
        return self._open.pop(call_id, None) if pop else self._open.get(call_id)

    def call_started(self, record: CallRecord) -> asyncio.Future[None]:
        """Insert the call's row. The store remembers ``record.call_id`` until :meth:`call_ended`."""
        if record.call_id in self._open:
            return self._failed(CdrError(f"call {record.call_id!r} already has an open record"))
        record.instance = self.instance
        self._open[record.call_id] = record.record_id
        return self._submit(_Insert(record.columns()))

    def call_answered(self, call_id: str, at: datetime | None = None) -> asyncio.Future[None]:
        return self._update(call_id, {"answered_at": _utc(at or utcnow())})

    def call_updated(
        self,
        call_id: str,
        *,
        client: str | None = None,
        flow: str | None = None,
        flow_version: str | None = None,
        path: Sequence[str] | None = None,
        inputs: Sequence[InputHeard] | None = None,
        handoff: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[None]:
        """Store what is known so far (``None``: unchanged; ``path`` and ``inputs`` replace the stored lists), so a
        crash keeps it."""
        return self._update(call_id, _changes(client, flow, flow_version, path, inputs, handoff, extra))

    def call_ended(
        self,
        call_id: str,
        reason: str,
        *,
        sip_status: int | None = None,
        at: datetime | None = None,
        client: str | None = None,
        flow: str | None = None,
        flow_version: str | None = None,
        path: Sequence[str] | None = None,
        inputs: Sequence[InputHeard] | None = None,
        handoff: Mapping[str, Any] | None = None,
        media: MediaQuality | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[None]:
        """Complete the call's row: end time (default now), reason, SIP status, and whatever else is given."""
        changes = _changes(client, flow, flow_version, path, inputs, handoff, extra)
        changes.update(ended_at=_utc(at or utcnow()), end_reason=reason, sip_status=sip_status)
        if media is not None:
            changes.update(
                rtp_packets_sent=media.packets_sent,
                rtp_packets_received=media.packets_received,
                rtp_packets_lost=media.packets_lost,
                rtp_jitter_ms=media.jitter_ms,
            )
        return self._update(call_id, changes, end=True)

    def _update(self, call_id: str, changes: dict[str, Any], end: bool = False) -> asyncio.Future[Any]:
        record_id = self._record_id(call_id, pop=end)
        if record_id is None:
            return self._failed(CdrError(f"call {call_id!r} has no open record"))
        if not changes:
            future: asyncio.Future[Any] = self._loop.create_future()
            future.set_result(None)
            return future
        return self._submit(_Update(record_id, changes))

    def close_interrupted(self, at: datetime | None = None) -> asyncio.Future[int]:
        """Close every row this instance left open (a crash, a kill) with end reason ``interrupted`` and end time
        ``at`` (default now). Call once at startup, before the first call; resolves to the number of rows closed."""
        return self._submit(_CloseOpen(self.instance, _utc(at or utcnow())))

    # -- reads ---------------------------------------------------------------------------------------------------

    async def fetch(
        self,
        *,
        call_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        """Records by start time (``since`` inclusive, ``until`` exclusive; naive times are UTC), oldest first."""
        return await _fetch(self._target, _Query(since, until, call_id, limit))

    async def export(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        fmt: ExportFormat = "csv",
        out: TextIO | None = None,
    ) -> int:
        """Write the records started in ``[since, until)`` to ``out`` (default stdout); see :func:`export_records`."""
        return await _export(self._target, since, until, fmt, out)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer. Writes still queued after ``timeout`` seconds are logged as
        lost (they fail; their rows stay open and are closed as interrupted at the next start)."""
        if self._closed:
            return
        self._closed = True
        if not await self._writer.close(timeout):
            log.error("cdr store closed with writes pending", url=display_url(self.url), pending=self.backlog)

    async def __aenter__(self) -> CdrStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _changes(
    client: str | None,
    flow: str | None,
    flow_version: str | None,
    path: Sequence[str] | None,
    inputs: Sequence[InputHeard] | None,
    handoff: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if client is not None:
        changes["client"] = client
    if flow is not None:
        changes["flow"] = flow
    if flow_version is not None:
        changes["flow_version"] = flow_version
    if path is not None:
        changes["path"] = [str(node) for node in path]
    if inputs is not None:
        changes["inputs"] = [heard.as_dict() for heard in inputs]
    if handoff is not None:
        changes["handoff"] = scrub(dict(handoff))
    if extra is not None:
        changes["extra"] = scrub(dict(extra))
    return changes


async def _fetch(target: _SqliteTarget | _PostgresTarget, query: _Query) -> list[CallRecord]:
    if isinstance(target, _SqliteTarget):
        return await asyncio.to_thread(_sqlite_read, target, query, list)
    records: list[CallRecord] = []
    await _pg_read(target, query, records.append)
    return records


async def _export(
    target: _SqliteTarget | _PostgresTarget,
    since: datetime | None,
    until: datetime | None,
    fmt: ExportFormat,
    out: TextIO | None,
) -> int:
    sink = sys.stdout if out is None else out
    query = _Query(since, until)
    if isinstance(target, _SqliteTarget):
        _Exporter(fmt)  # reject a bad format before touching the database
        return await asyncio.to_thread(_sqlite_read, target, query, lambda rows: write_export(rows, fmt, sink))
    exporter = _Exporter(fmt)
    chunk = [exporter.header()]

    async def on_row(record: CallRecord) -> None:
        chunk.append(exporter.row(record))
        if len(chunk) >= _FLUSH_ROWS:
            text = "".join(chunk)
            chunk.clear()
            await asyncio.to_thread(sink.write, text)

    await _pg_read(target, query, on_row)
    chunk.append(exporter.footer())
    await asyncio.to_thread(sink.write, "".join(chunk))
    await asyncio.to_thread(sink.flush)
    return exporter.count


async def export_records(
    url: str,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: ExportFormat = "csv",
    out: TextIO | None = None,
) -> int:
    """``ivr cdr export``: read the records started in ``[since, until)`` (naive times are UTC) straight from the
    database at ``url`` — no writer, no migration, the daemon may be running — and write them to ``out`` (default
    stdout) as ``csv``, ``json`` (one array) or ``jsonl``. Returns how many were written."""
    return await _export(_parse_url(url), since, until, fmt, out)
