"""SQLite: the writer thread (one connection, group commit of everything queued, retries while the file is busy),
schema migration, and reads straight from the file."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

import structlog

from ivr.ops.cdr.record import (
    _JSON_COLUMNS,
    _TIME_COLUMNS,
    COLUMNS,
    INTERRUPTED,
    CallRecord,
    CdrError,
    _dumps,
    _utc,
    utcnow,
)
from ivr.ops.cdr.schema import _MIGRATIONS, SCHEMA_VERSION, _newer_schema, _Query
from ivr.ops.cdr.urls import _SqliteTarget
from ivr.ops.cdr.writes import (
    MAX_BATCH,
    _check_update,
    _fail_if_pending,
    _Insert,
    _Op,
    _Outcome,
    _resolve,
    _succeed_if_pending,
    _Update,
    _Work,
)

log = structlog.get_logger("ivr.ops.cdr")

_T = TypeVar("_T")

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
