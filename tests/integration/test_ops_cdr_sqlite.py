"""The CDR store on a real SQLite file: lifecycle, crash and restart, masking, concurrency, a locked database,
exports, schema versions."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr.ops.cdr import (
    INTERRUPTED,
    SCHEMA_VERSION,
    CallRecord,
    CdrError,
    CdrStore,
    InputHeard,
    MediaQuality,
    export_records,
)

REPO = Path(__file__).resolve().parents[2]


def url_of(path: Path, **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cdr" / "cdr.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[CdrStore]:
    opened = await CdrStore.open(url_of(db), instance="node-a")
    try:
        yield opened
    finally:
        await opened.close()


def raw_rows(db: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM cdr ORDER BY started_at")]
    finally:
        conn.close()


async def test_record_is_in_the_database_as_soon_as_the_call_starts(store: CdrStore, db: Path) -> None:
    await store.call_started(CallRecord("c1", "+359888123456", "1000", flow="bank", flow_version="3"))
    [row] = raw_rows(db)
    assert row["call_id"] == "c1" and row["instance"] == "node-a" and row["flow_version"] == "3"
    assert row["ended_at"] is None and row["end_reason"] is None
    assert store.is_open("c1")


async def test_a_call_from_start_to_end(store: CdrStore) -> None:
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    await store.call_started(CallRecord("c1", "+359888123456", "1000", started_at=t0))
    await store.call_answered("c1", at=t0 + timedelta(seconds=1))
    await store.call_updated("c1", client="acme", flow="bank", flow_version="3", path=["welcome", "menu"])
    await store.call_ended(
        "c1",
        "handoff",
        sip_status=200,
        at=t0 + timedelta(seconds=30),
        path=["welcome", "menu", "sales"],
        inputs=[InputHeard("menu", "dtmf", "1")],
        handoff={"queue": "sales", "result": "accepted", "attached": {"language": "bg"}},
        media=MediaQuality(1500, 1490, 10, 4.5),
        extra={"recognizer": "none"},
    )
    [record] = await store.fetch(call_id="c1")
    assert record.caller == "+359888123456" and record.dialled == "1000"
    assert (record.client, record.flow, record.flow_version) == ("acme", "bank", "3")
    assert record.answered_at == t0 + timedelta(seconds=1)
    assert record.ended_at == t0 + timedelta(seconds=30) and record.duration == 30.0
    assert (record.end_reason, record.sip_status) == ("handoff", 200)
    assert record.path == ["welcome", "menu", "sales"]
    assert record.inputs == [InputHeard("menu", "dtmf", "1")]
    assert record.handoff == {"queue": "sales", "result": "accepted", "attached": {"language": "bg"}}
    assert record.media == MediaQuality(1500, 1490, 10, 4.5)
    assert record.extra == {"recognizer": "none"}
    assert not store.is_open("c1")
    assert store.writes == 4 and store.write_errors == 0 and store.backlog == 0


async def test_sensitive_digits_never_reach_the_database_file(store: CdrStore, db: Path) -> None:
    await store.call_started(CallRecord("c1", "a", "b"))
    await store.call_ended("c1", "bye", inputs=[InputHeard("account", "dtmf", "98765432", sensitive=True)])
    await store.close()
    [row] = raw_rows(db)
    assert json.loads(str(row["inputs"])) == [
        {"node": "account", "kind": "dtmf", "value": "98****32", "sensitive": True}
    ]
    for file in db.parent.iterdir():  # the database, its WAL and shared memory
        assert b"98765432" not in file.read_bytes()


CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from ivr.ops.cdr import CallRecord, CdrStore

    async def main():
        store = await CdrStore.open(sys.argv[1], instance="node-a")
        await store.call_started(CallRecord("done", "a", "b"))
        await store.call_ended("done", "bye", sip_status=200)
        await store.call_started(CallRecord("mid-call", "+359888", "1000"))
        await store.call_answered("mid-call")
        print("started", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


async def test_sigkill_mid_call_leaves_a_record_that_restart_closes_as_interrupted(db: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        url_of(db),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    assert stdout.decode().splitlines()[-1] == "started"
    before = {row["call_id"]: row for row in raw_rows(db)}
    assert before["mid-call"]["ended_at"] is None and before["mid-call"]["answered_at"] is not None

    restarted = await CdrStore.open(url_of(db), instance="node-a")
    try:
        assert await restarted.close_interrupted() == 1
        assert await restarted.close_interrupted() == 0
        [record] = await restarted.fetch(call_id="mid-call")
        [done] = await restarted.fetch(call_id="done")
    finally:
        await restarted.close()
    assert record.end_reason == INTERRUPTED
    assert record.ended_at is not None and abs((datetime.now(UTC) - record.ended_at).total_seconds()) < 30
    assert done.end_reason == "bye" and done.sip_status == 200


async def test_close_interrupted_leaves_other_instances_calls_alone(db: Path) -> None:
    a = await CdrStore.open(url_of(db), instance="node-a")
    b = await CdrStore.open(url_of(db), instance="node-b")
    try:
        await a.call_started(CallRecord("on-a", "x", "y"))
        await b.call_started(CallRecord("on-b", "x", "y"))
        assert await a.close_interrupted() == 1
        [on_b] = await a.fetch(call_id="on-b")
        assert on_b.ended_at is None
        await b.call_ended("on-b", "bye")
        [on_b] = await a.fetch(call_id="on-b")
        assert on_b.end_reason == "bye"
    finally:
        await a.close()
        await b.close()


async def test_many_concurrent_calls_all_land_complete(store: CdrStore) -> None:
    async def one_call(n: int) -> None:
        call_id = f"call-{n}"
        await store.call_started(CallRecord(call_id, f"+35988800{n:04d}", "1000"))
        await asyncio.sleep(0)
        await store.call_answered(call_id)
        await store.call_updated(call_id, path=["welcome"])
        await store.call_ended(
            call_id, "bye", sip_status=200, path=["welcome", "bye"], media=MediaQuality(n, n, 0, 0.0)
        )

    await asyncio.gather(*(one_call(n) for n in range(300)))
    records = await store.fetch()
    assert len(records) == 300
    assert all(r.end_reason == "bye" and r.answered_at is not None and r.path == ["welcome", "bye"] for r in records)
    assert sorted(r.media.packets_sent for r in records if r.media is not None) == list(range(300))
    assert store.writes == 1200 and store.backlog == 0


async def test_unawaited_writes_are_committed_by_close(db: Path) -> None:
    store = await CdrStore.open(url_of(db), instance="node-a")
    for n in range(200):
        store.call_started(CallRecord(f"c{n}", "a", "b"))
        store.call_ended(f"c{n}", "bye")
    await store.close()
    rows = raw_rows(db)
    assert len(rows) == 200 and all(row["end_reason"] == "bye" for row in rows)


async def test_writes_wait_for_a_locked_database_without_blocking_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "cdr.db"
    store = await CdrStore.open(url_of(db, busy_timeout="0.05"), instance="node-a")
    try:
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        write = store.call_started(CallRecord("c1", "a", "b"))
        worst = 0.0
        for _ in range(30):  # 0.3 s with the database locked
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - before - 0.01)
        assert not write.done()
        assert store.backlog == 1
        locker.execute("COMMIT")
        locker.close()
        await asyncio.wait_for(write, 10)
        assert worst < 0.05
        assert [r.call_id for r in await store.fetch()] == ["c1"]
    finally:
        await store.close()


async def test_a_failed_write_does_not_take_the_rest_of_its_batch_down(store: CdrStore, db: Path) -> None:
    await store.call_started(CallRecord("gone", "a", "b"))
    await store.call_started(CallRecord("kept", "a", "b"))
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM cdr WHERE call_id = 'gone'")
    conn.commit()
    conn.close()
    failed = store.call_ended("gone", "bye")
    kept = store.call_ended("kept", "bye")
    with pytest.raises(CdrError, match="not in the store"):
        await failed
    await kept
    [record] = await store.fetch(call_id="kept")
    assert record.end_reason == "bye"
    assert store.write_errors == 1


async def test_a_call_id_that_is_already_open_is_refused(store: CdrStore) -> None:
    await store.call_started(CallRecord("c1", "a", "b"))
    with pytest.raises(CdrError, match="already has an open record"):
        await store.call_started(CallRecord("c1", "a", "b"))
    assert len(await store.fetch()) == 1


async def test_ending_an_unknown_call_fails_and_is_counted(store: CdrStore) -> None:
    dropped = store.call_ended("nobody", "bye")  # a caller that does not await still gets it logged and counted
    await asyncio.sleep(0)
    assert dropped.done()
    assert store.write_errors == 1
    with pytest.raises(CdrError, match="no open record"):
        await store.call_answered("nobody")


async def test_a_closed_store_refuses_writes(db: Path) -> None:
    store = await CdrStore.open(url_of(db))
    await store.close()
    with pytest.raises(CdrError, match="closed"):
        await store.call_started(CallRecord("c1", "a", "b"))


async def test_fetch_and_export_by_start_time(store: CdrStore) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    for day in range(5):
        await store.call_started(CallRecord(f"d{day}", "a", "b", started_at=t0 + timedelta(days=day)))
    since, until = t0 + timedelta(days=1), t0 + timedelta(days=3)
    assert [r.call_id for r in await store.fetch(since=since, until=until)] == ["d1", "d2"]
    assert [r.call_id for r in await store.fetch(since=since.replace(tzinfo=None), limit=2)] == ["d1", "d2"]
    out = io.StringIO()
    assert await store.export(since, until, "json", out) == 2
    assert [item["call_id"] for item in json.loads(out.getvalue())] == ["d1", "d2"]


async def test_export_records_reads_the_file_the_daemon_writes(store: CdrStore, db: Path) -> None:
    await store.call_started(CallRecord("c1", "=cmd", "1000"))
    await store.call_ended("c1", "bye", sip_status=200)
    out = io.StringIO()
    assert await export_records(url_of(db), fmt="csv", out=out) == 1
    header, line = out.getvalue().splitlines()
    assert header.startswith("record_id,call_id,instance,caller,dialled")
    assert ",'=cmd,1000," in line
    jsonl = io.StringIO()
    assert await export_records(url_of(db), fmt="jsonl", out=jsonl) == 1
    assert json.loads(jsonl.getvalue())["end_reason"] == "bye"


async def test_export_of_a_missing_database_says_so(tmp_path: Path) -> None:
    with pytest.raises(CdrError, match="no such CDR database"):
        await export_records(url_of(tmp_path / "nope.db"), out=io.StringIO())
    assert not (tmp_path / "nope.db").exists()


async def test_export_refuses_an_unknown_format(store: CdrStore) -> None:
    with pytest.raises(CdrError, match="unknown export format"):
        await store.export(fmt="xml", out=io.StringIO())  # type: ignore[arg-type]


async def test_schema_version_is_recorded_and_reopening_keeps_records(db: Path) -> None:
    store = await CdrStore.open(url_of(db))
    await store.call_started(CallRecord("c1", "a", "b"))
    await store.close()
    store = await CdrStore.open(url_of(db))
    try:
        assert [r.call_id for r in await store.fetch()] == ["c1"]
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM cdr_schema").fetchall() == [(SCHEMA_VERSION,)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_a_database_from_a_newer_ivr_is_refused(db: Path) -> None:
    store = await CdrStore.open(url_of(db))
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO cdr_schema VALUES (?, 'future', '2099-01-01')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(CdrError, match=f"version {SCHEMA_VERSION + 1}, newer than this ivr"):
        await CdrStore.open(url_of(db))


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "cdr.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CdrError, match="not a database"):
        await CdrStore.open(url_of(bogus))
