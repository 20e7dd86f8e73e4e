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

Modules: :mod:`~ivr.ops.cdr.record` (what a record is), :mod:`~ivr.ops.cdr.store` (:class:`CdrStore`),
:mod:`~ivr.ops.cdr.sqlite` and :mod:`~ivr.ops.cdr.postgres` (the writers and reads), :mod:`~ivr.ops.cdr.schema`
(migrations, queries), :mod:`~ivr.ops.cdr.writes` (writes as data), :mod:`~ivr.ops.cdr.urls` (store URLs),
:mod:`~ivr.ops.cdr.export` (CSV and JSON exports).
"""

from ivr.ops.cdr.export import EXPORT_FORMATS, ExportFormat, export_records, write_export
from ivr.ops.cdr.record import COLUMNS, EXPORT_COLUMNS, INTERRUPTED, CallRecord, CdrError, InputHeard, MediaQuality
from ivr.ops.cdr.schema import SCHEMA_VERSION
from ivr.ops.cdr.store import DEFAULT_URL, CdrStore
from ivr.ops.cdr.urls import display_url

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
