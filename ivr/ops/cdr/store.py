"""The store: :class:`CdrStore`, the async facade the daemon writes call records through; it opens the writer the URL
names (SQLite or PostgreSQL), keeps the calls open so far, and counts writes, failures and the backlog."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

import structlog

from ivr.ops.cdr.export import ExportFormat, _export
from ivr.ops.cdr.postgres import _pg_read, _PostgresWriter
from ivr.ops.cdr.record import CallRecord, CdrError, InputHeard, MediaQuality, _utc, utcnow
from ivr.ops.cdr.schema import SCHEMA_VERSION, _Query
from ivr.ops.cdr.sqlite import _sqlite_read, _SqliteWriter
from ivr.ops.cdr.urls import _parse_url, _PostgresTarget, _SqliteTarget, display_url
from ivr.ops.cdr.writes import _CloseOpen, _Insert, _Op, _Update
from ivr.ops.redact import scrub

log = structlog.get_logger("ivr.ops.cdr")

DEFAULT_URL: Final = "sqlite:///cdr.db"


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

    def call_started(self, record: CallRecord, *, key: str | None = None) -> asyncio.Future[None]:
        """Insert the call's row. The store remembers it by ``key`` (default ``record.call_id``) until
        :meth:`call_ended`; the other writes name it by that key. Two calls may share a Call-ID (two dialogs with
        different From tags): give each its own key, or the second one's record is refused."""
        key = record.call_id if key is None else key
        if key in self._open:
            return self._failed(CdrError(f"call {key!r} already has an open record"))
        record.instance = self.instance
        self._open[key] = record.record_id
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
