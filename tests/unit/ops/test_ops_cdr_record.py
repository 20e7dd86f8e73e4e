"""Call records as data: masking at construction, row round trips, the export formats, store URLs (no database)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from ivr.ops.cdr import (
    EXPORT_COLUMNS,
    CallRecord,
    CdrError,
    InputHeard,
    MediaQuality,
    display_url,
    write_export,
)
from ivr.ops.cdr.urls import _parse_url, _PostgresTarget, _SqliteTarget

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def finished_record(call_id: str = "c1", **changes: object) -> CallRecord:
    record = CallRecord(
        call_id=call_id,
        caller="+359888123456",
        dialled="1000",
        started_at=T0,
        flow="bank",
        flow_version="7",
        answered_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=42.5),
        end_reason="handoff",
        sip_status=200,
        path=["welcome", "account", "transfer"],
        inputs=[InputHeard("account", "dtmf", "12345678", sensitive=True), InputHeard("menu", "speech", "balance")],
        handoff={"queue": "sales", "result": "accepted"},
        media=MediaQuality(2100, 2095, 5, 3.25),
        extra={"language": "bg"},
        instance="node-a",
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_sensitive_input_is_masked_on_construction() -> None:
    heard = InputHeard("account", "dtmf", "12345678", sensitive=True)
    assert heard.value == "12****78"
    assert "12345678" not in repr(heard)


def test_non_sensitive_input_is_kept() -> None:
    assert InputHeard("menu", "dtmf", "2").value == "2"


def test_masked_input_survives_a_round_trip_unchanged() -> None:
    heard = InputHeard("account", "dtmf", "12345678", sensitive=True)
    assert InputHeard.from_dict(heard.as_dict()) == heard


def test_row_round_trip_keeps_every_field() -> None:
    record = finished_record()
    assert CallRecord.from_columns(record.columns()) == record


def test_row_round_trip_from_sqlite_text_values() -> None:
    record = finished_record()
    row = record.columns()
    row.update({key: row[key].isoformat() for key in ("started_at", "answered_at", "ended_at")})
    row.update({key: json.dumps(row[key]) for key in ("path", "inputs", "handoff", "extra")})
    assert CallRecord.from_columns(row) == record


def test_naive_times_are_taken_as_utc() -> None:
    record = CallRecord("c", "a", "b", started_at=datetime(2025, 1, 1, 12, 0))
    assert record.columns()["started_at"] == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_handoff_and_extra_lose_bytes_and_secrets() -> None:
    record = finished_record(handoff={"queue": "q", "password": "pw", "audio": b"xx"}, extra={"blob": b"x", "k": 1})
    columns = record.columns()
    assert columns["handoff"] == {"queue": "q", "password": "[redacted]"}
    assert columns["extra"] == {"k": 1}


def test_media_quality_from_stream_record_and_loss_ratio() -> None:
    media = MediaQuality.from_stream(
        {
            "rtp_packets_sent": 50,
            "rtp_packets_received": 95,
            "rtp_packets_lost": 5,
            "rtp_jitter_ms": 1.5,
            "codec": "PCMU",
        }
    )
    assert media == MediaQuality(50, 95, 5, 1.5)
    assert media.loss_ratio == pytest.approx(0.05)
    assert MediaQuality.from_stream({}).loss_ratio == 0.0


def test_duration_is_none_while_the_call_is_open() -> None:
    assert finished_record().duration == 42.5
    assert finished_record(ended_at=None).duration is None


def test_csv_export_has_a_header_and_json_cells() -> None:
    out = io.StringIO()
    assert write_export([finished_record("c1"), finished_record("c2", ended_at=None)], "csv", out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert rows[0]["call_id"] == "c1"
    assert rows[0]["duration_s"] == "42.5"
    assert rows[0]["started_at"] == "2025-03-01T09:30:00.000+00:00"
    assert json.loads(rows[0]["path"]) == ["welcome", "account", "transfer"]
    assert json.loads(rows[0]["inputs"])[0]["value"] == "12****78"
    assert rows[1]["ended_at"] == "" and rows[1]["duration_s"] == ""


def test_csv_export_defuses_spreadsheet_formulas_but_not_phone_numbers() -> None:
    out = io.StringIO()
    write_export([finished_record(caller='=HYPERLINK("http://x")', dialled="+359 2 9876")], "csv", out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["caller"] == '\'=HYPERLINK("http://x")'
    assert row["dialled"] == "+359 2 9876"


def test_json_export_is_one_array() -> None:
    out = io.StringIO()
    write_export([finished_record("c1"), finished_record("c2")], "json", out)
    data = json.loads(out.getvalue())
    assert [item["call_id"] for item in data] == ["c1", "c2"]
    assert data[0]["handoff"] == {"queue": "sales", "result": "accepted"}
    assert list(data[0]) == list(EXPORT_COLUMNS)


def test_json_export_of_nothing_is_an_empty_array() -> None:
    out = io.StringIO()
    assert write_export([], "json", out) == 0
    assert json.loads(out.getvalue()) == []


def test_jsonl_export_is_one_object_per_line() -> None:
    out = io.StringIO()
    write_export([finished_record("c1"), finished_record("c2")], "jsonl", out)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["call_id"] for line in lines] == ["c1", "c2"]


def test_unknown_export_format_is_refused() -> None:
    with pytest.raises(CdrError, match="unknown export format 'xml'"):
        write_export([], "xml", io.StringIO())  # type: ignore[arg-type]


def test_sqlite_urls_follow_sqlalchemy() -> None:
    relative = _parse_url("sqlite:///var/cdr.db")
    assert isinstance(relative, _SqliteTarget)
    assert str(relative.path) == "var/cdr.db" and relative.synchronous == "FULL" and relative.busy_timeout == 5
    absolute = _parse_url("sqlite:////tmp/x/cdr.db?synchronous=normal&busy_timeout=0.5")
    assert isinstance(absolute, _SqliteTarget)
    assert str(absolute.path) == "/tmp/x/cdr.db" and absolute.synchronous == "NORMAL" and absolute.busy_timeout == 0.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://cdr.db", "write sqlite:///relative"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///x.db?journal=delete", "unknown option"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous must be"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout must be"),
        ("mysql://u@h/db", "unsupported CDR store"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(CdrError, match=message):
        _parse_url(url)


def test_postgres_urls_and_their_display_form() -> None:
    assert isinstance(_parse_url("postgresql://ivr:pw@127.0.0.1/cdr"), _PostgresTarget)
    assert isinstance(_parse_url("postgres://ivr@127.0.0.1/cdr"), _PostgresTarget)
    assert display_url("postgresql://ivr:s3cret@127.0.0.1:5432/cdr") == "postgresql://ivr:***@127.0.0.1:5432/cdr"
    assert display_url("sqlite:///cdr.db") == "sqlite:///cdr.db"
