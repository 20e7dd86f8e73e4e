"""The CDR store on a real PostgreSQL server, when ``IVR_TEST_POSTGRES_URL`` names one (a database the tests may
create schemas in, e.g. ``postgresql://ivr:ivr@127.0.0.1:5432/ivr_test``). Each test works in a schema of its own,
dropped afterwards."""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ivr.ops.cdr import INTERRUPTED, CallRecord, CdrError, CdrStore, InputHeard, MediaQuality, export_records

BASE_URL = os.environ.get("IVR_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not BASE_URL, reason="set IVR_TEST_POSTGRES_URL to test against PostgreSQL")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    asyncpg: Any = pytest.importorskip("asyncpg")
    schema = f"ivr_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(BASE_URL)
    await admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in BASE_URL else "?"
    try:
        yield f"{BASE_URL}{separator}search_path={schema}"  # asyncpg passes unknown options as server settings
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def test_a_call_from_start_to_end(url: str) -> None:
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    async with await CdrStore.open(url, instance="node-a") as store:
        await store.call_started(CallRecord("c1", "+359888123456", "1000", started_at=t0, flow="bank"))
        [open_record] = await store.fetch(call_id="c1")
        assert open_record.ended_at is None
        await store.call_answered("c1", at=t0 + timedelta(seconds=1))
        await store.call_ended(
            "c1",
            "handoff",
            sip_status=200,
            at=t0 + timedelta(seconds=30),
            path=["welcome", "account"],
            inputs=[InputHeard("account", "dtmf", "12345678", sensitive=True)],
            handoff={"queue": "sales", "result": "accepted"},
            media=MediaQuality(1500, 1490, 10, 4.5),
            extra={"language": "bg"},
        )
        [record] = await store.fetch(call_id="c1")
    assert record.instance == "node-a" and record.flow == "bank"
    assert record.answered_at == t0 + timedelta(seconds=1) and record.duration == 30.0
    assert (record.end_reason, record.sip_status) == ("handoff", 200)
    assert record.inputs == [InputHeard("account", "dtmf", "12****78", sensitive=True)]
    assert record.handoff == {"queue": "sales", "result": "accepted"}
    assert record.media == MediaQuality(1500, 1490, 10, 4.5)


async def test_restart_closes_this_instances_open_calls_as_interrupted(url: str) -> None:
    first = await CdrStore.open(url, instance="node-a")
    other = await CdrStore.open(url, instance="node-b")
    await first.call_started(CallRecord("mid-call", "a", "b"))
    await other.call_started(CallRecord("elsewhere", "a", "b"))
    await first.close()  # the record stays open, as after a crash
    async with await CdrStore.open(url, instance="node-a") as restarted:
        assert await restarted.close_interrupted() == 1
        [record] = await restarted.fetch(call_id="mid-call")
        [elsewhere] = await restarted.fetch(call_id="elsewhere")
    await other.close()
    assert record.end_reason == INTERRUPTED and record.ended_at is not None
    assert elsewhere.ended_at is None


async def test_many_concurrent_calls_all_land(url: str) -> None:
    async with await CdrStore.open(url, instance="node-a") as store:

        async def one_call(n: int) -> None:
            await store.call_started(CallRecord(f"c{n}", "a", "b"))
            await store.call_answered(f"c{n}")
            await store.call_ended(f"c{n}", "bye", sip_status=200)

        await asyncio.gather(*(one_call(n) for n in range(200)))
        records = await store.fetch()
    assert len(records) == 200 and all(r.end_reason == "bye" for r in records)


async def test_writes_survive_the_server_dropping_the_connection(url: str) -> None:
    asyncpg: Any = pytest.importorskip("asyncpg")
    victim = f"cdr-{uuid.uuid4().hex[:8]}"
    async with await CdrStore.open(f"{url}&application_name={victim}", instance="node-a") as store:
        await store.call_started(CallRecord("c1", "a", "b"))
        killer = await asyncpg.connect(BASE_URL)
        try:
            killed = await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                victim,
            )
        finally:
            await killer.close()
        assert killed >= 1
        await asyncio.wait_for(store.call_ended("c1", "bye"), 30)
        [record] = await store.fetch(call_id="c1")
    assert record.end_reason == "bye"
    assert store.write_errors == 0


async def test_export_straight_from_the_database(url: str) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    async with await CdrStore.open(url, instance="node-a") as store:
        for day in range(4):
            await store.call_started(CallRecord(f"d{day}", "a", "b", started_at=t0 + timedelta(days=day)))
    out = io.StringIO()
    count = await export_records(url, t0 + timedelta(days=1), t0 + timedelta(days=3), "json", out)
    assert count == 2
    assert [item["call_id"] for item in json.loads(out.getvalue())] == ["d1", "d2"]
    csv_out = io.StringIO()
    assert await export_records(url, fmt="csv", out=csv_out) == 4
    assert len(csv_out.getvalue().splitlines()) == 5


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(CdrError, match=r"postgresql://ivr:\*\*\*@127.0.0.1:1/"):
        await CdrStore.open("postgresql://ivr:secret@127.0.0.1:1/ivr")
