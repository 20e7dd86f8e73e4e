"""Every call leaves one record: the call controller says what happened, this builds the record and the metrics.

The controller reports plain facts (a call refused, answered, routed to a flow, ended with its media statistics,
the flow trace and the handoff's outcome); :class:`CallRecords` turns them into :class:`~ivr.ops.cdr.CallRecord`
rows in the CDR store and the Prometheus counters, so neither the controller nor the store knows the other's
business. The path and inputs of a record are read from the flow's trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ivr.flows.runtime import TraceEvent
from ivr.ops.cdr import CallRecord, CdrStore, InputHeard, MediaQuality
from ivr.ops.metrics import IvrMetrics

__all__ = ["CallRecords", "current_node"]


class CallRecords:
    """The metrics and the CDR store (``cdr``: None until the store is open, and in tests without one)."""

    def __init__(self, metrics: IvrMetrics, cdr: CdrStore | None = None) -> None:
        self.metrics = metrics
        self.cdr = cdr

    def refused(
        self, call_id: str, caller: str, dialled: str, *, status: int, reason: str, why: str, key: str | None = None
    ) -> None:
        """An INVITE answered with a final error: counted, and recorded (every call leaves a record). ``key`` names
        the record while it is open (default: the Call-ID; a leg's own key when Call-IDs may repeat)."""
        self.metrics.call_rejected(why)
        self.metrics.invite_response(status)
        cdr = self.cdr
        key = call_id if key is None else key
        if cdr is not None and not cdr.is_open(key):
            cdr.call_started(CallRecord(call_id, caller, dialled), key=key)
            cdr.call_ended(key, "rejected", sip_status=status, extra={"why": why, "detail": reason})

    def answered(
        self,
        call_id: str,
        caller: str,
        dialled: str,
        *,
        extra: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> None:
        """A call the daemon answered (or that answered the daemon): open its record."""
        self.metrics.call_started()
        self.metrics.invite_response(200)
        if self.cdr is not None:
            key = call_id if key is None else key
            self.cdr.call_started(CallRecord(call_id, caller, dialled, extra=dict(extra or {})), key=key)
            self.cdr.call_answered(key)

    def routed(self, key: str, *, client: str, flow: str, version: str) -> None:
        if self.cdr is not None:
            self.cdr.call_updated(key, client=client, flow=flow, flow_version=version)

    def ended(
        self,
        key: str,
        reason: str,
        status: int | None,
        media_record: dict[str, int | float | str] | None,
        *,
        prompts: Sequence[str] = (),
        trace: Sequence[TraceEvent] = (),
        client: str | None = None,
        flow: str | None = None,
        version: str | None = None,
        handoff: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """A call that :meth:`answered` opened (under ``key``) has ended: close its record with what the trace
        says."""
        media = MediaQuality.from_stream(media_record) if media_record is not None else None
        self.metrics.call_ended(reason, media)
        cdr = self.cdr
        if cdr is None or not cdr.is_open(key):
            return
        fields: dict[str, object] = {"prompts": list(prompts), **dict(extra or {})}
        if media_record is not None:
            fields["media"] = media_record
        path = [e.node for e in trace if e.kind == "node" and e.node]
        inputs = [
            InputHeard(e.node or "", str(e.detail.get("result", "input")), _input_value(e.detail))
            for e in trace
            if e.kind == "input" and e.detail.get("result") != "digit"  # each key of an entry: the trace has them
        ]
        outcome = next((dict(e.detail) for e in reversed(trace) if e.kind == "outcome"), None)
        if outcome is not None:
            fields["outcome"] = outcome
        if handoff is not None:
            fields["handoff"] = handoff
        cdr.call_ended(
            key,
            reason,
            sip_status=status,
            media=media,
            extra=fields,
            path=path,
            inputs=inputs,
            client=client,
            flow=flow,
            flow_version=version,
        )


def current_node(trace: Sequence[TraceEvent]) -> str | None:
    """The node the call is in: the last one its flow (or the subflow it is in) entered."""
    for event in reversed(trace):
        if event.kind == "node" and event.node:
            return event.node
    return None


def _input_value(detail: Mapping[str, Any]) -> str:
    for key in ("entry", "key", "digits", "value", "words", "text"):
        if key in detail:
            return str(detail[key])
    return ""
