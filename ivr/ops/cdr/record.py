"""What a call detail record is: :class:`CallRecord` and its parts (:class:`InputHeard`, :class:`MediaQuality`), the
row's columns and how they encode, :class:`CdrError`, and the UTC helpers every other module of the store uses."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ivr.ops.redact import mask_value, scrub

INTERRUPTED: Final = "interrupted"
"""The end reason of a call whose row was left open (a crash, a kill) and closed at the next start."""


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


def _dumps(value: Any) -> str:
    """A JSON column as the stores and exports write it: compact, non-ASCII kept, anything else as ``str``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
