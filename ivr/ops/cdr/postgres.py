"""PostgreSQL (asyncpg, imported only when a PostgreSQL store is opened): the writer task (one connection, batched
transactions, reconnection with back-off), schema migration under an advisory lock, and reads through a cursor."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any, Final

import structlog

from ivr.ops.cdr.record import _JSON_COLUMNS, INTERRUPTED, CallRecord, CdrError, _dumps, _utc, utcnow
from ivr.ops.cdr.schema import _FLUSH_ROWS, _MIGRATIONS, SCHEMA_VERSION, _newer_schema, _Query
from ivr.ops.cdr.urls import _PostgresTarget, display_url
from ivr.ops.cdr.writes import MAX_BATCH, _check_update, _Insert, _Op, _Outcome, _resolve, _Update, _Work

log = structlog.get_logger("ivr.ops.cdr")


def _asyncpg() -> Any:
    try:
        return importlib.import_module("asyncpg")
    except ImportError:
        raise CdrError("PostgreSQL call records need asyncpg: pip install asyncpg") from None


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
