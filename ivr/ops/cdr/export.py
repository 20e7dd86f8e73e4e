"""Exports: call records written as CSV (spreadsheet-safe), one JSON array or JSON lines, and
:func:`export_records`, which reads them straight from a database for ``ivr cdr export``."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, TextIO

from ivr.ops.cdr.postgres import _pg_read
from ivr.ops.cdr.record import _JSON_COLUMNS, EXPORT_COLUMNS, CallRecord, CdrError, _dumps
from ivr.ops.cdr.schema import _FLUSH_ROWS, _Query
from ivr.ops.cdr.sqlite import _sqlite_read
from ivr.ops.cdr.urls import _parse_url, _PostgresTarget, _SqliteTarget

EXPORT_FORMATS: Final = ("csv", "json", "jsonl")
ExportFormat = Literal["csv", "json", "jsonl"]

# -- formats -----------------------------------------------------------------------------------------------------

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


# -- straight from a database ------------------------------------------------------------------------------------


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
