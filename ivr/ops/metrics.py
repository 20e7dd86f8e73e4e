"""Prometheus metrics of one ivr process, in a registry of its own (not the client library's global one).

Everything the admin API's ``GET /metrics`` serves is in :class:`IvrMetrics`. Units follow Prometheus practice:
seconds and ratios, so RTP jitter is ``ivr_rtp_jitter_seconds`` although the call record keeps it in milliseconds.
Label values come from configuration (flow, node and queue names) or from small fixed sets (end reasons, SIP status
codes), never from callers, so the number of series stays bounded.

The media clock's counters and the CDR store's backlog are read when Prometheus scrapes (:meth:`watch_media_clock`,
:meth:`watch_cdr_store`), so the 20 ms tick pays nothing for them. The event-loop lag is measured by
:class:`EventLoopLagMonitor`, whose :attr:`~EventLoopLagMonitor.lag` admission control reads to shed new calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ivr.flows.runtime import TraceEvent
from ivr.media.clock import ClockStats
from ivr.ops.cdr import MediaQuality

__all__ = ["CONTENT_TYPE", "EventLoopLagMonitor", "IvrMetrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`IvrMetrics.render` (Prometheus text format 0.0.4)."""

LOSS_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
JITTER_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
RECOGNITION_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CdrBacklog(Protocol):
    """What :meth:`IvrMetrics.watch_cdr_store` reads (``ivr.ops.cdr.CdrStore`` has it)."""

    @property
    def backlog(self) -> int: ...

    @property
    def write_errors(self) -> int: ...

    @property
    def writes(self) -> int: ...


class _Scraped(Collector):
    """Metrics computed at scrape time by a function."""

    def __init__(self, produce: Callable[[], Iterator[Metric]]) -> None:
        self._produce = produce

    def collect(self) -> Iterator[Metric]:
        return self._produce()


_OUTCOME_RESULTS = frozenset(
    {"choice", "branch", "open", "closed", "http", "queue", "recording", "entry", "confirm yes", "confirm no"}
)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 699 else "other"


class IvrMetrics:
    """The process's metrics. ``process=True`` adds the standard process, GC and platform collectors (CPU, memory,
    open files), which is what a scrape of a production node wants; tests may leave them out."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            GCCollector(registry=r)
            PlatformCollector(registry=r)
        self.active_calls = Gauge("ivr_active_calls", "Calls in progress (admitted and not yet ended).", registry=r)
        self.calls_started = Counter(
            "ivr_calls_started", "Calls admitted; rate() of it is calls per second.", registry=r
        )
        self.calls_ended = Counter("ivr_calls_ended", "Calls ended, by end reason.", ["reason"], registry=r)
        self.calls_rejected = Counter(
            "ivr_calls_rejected",
            "INVITEs refused by admission control before a call started (max_calls, cps, lag, sdp, auth...); "
            "refusals of untrusted or over-rate sources are ivr_sip_refused",
            ["reason"],
            registry=r,
        )
        self.invite_responses = Counter(
            "ivr_invite_final_responses",
            "Final responses sent to INVITEs (answer outcomes), by status class and code.",
            ["status_class", "status"],
            registry=r,
        )
        self.node_visits = Counter("ivr_flow_node_visits", "Times a flow entered a node.", ["flow", "node"], registry=r)
        self.node_outcomes = Counter(
            "ivr_flow_node_outcomes",
            "How nodes finished (the branch taken: an option, timeout, error, ...).",
            ["flow", "node", "outcome"],
            registry=r,
        )
        self.menu_no_input = Counter(
            "ivr_menu_no_input", "Menu prompts that got no input in time.", ["flow", "node"], registry=r
        )
        self.menu_no_match = Counter(
            "ivr_menu_no_match", "Menu inputs that matched no option.", ["flow", "node"], registry=r
        )
        self.handoffs = Counter(
            "ivr_handoffs", "Handoffs to queue endpoints, by queue and result.", ["queue", "result"], registry=r
        )
        self.rtp_loss = Histogram(
            "ivr_rtp_loss_ratio",
            "Per call: RTP packets lost / expected from the caller (RFC 3550).",
            buckets=LOSS_BUCKETS,
            registry=r,
        )
        self.rtp_jitter = Histogram(
            "ivr_rtp_jitter_seconds",
            "Per call: interarrival jitter of the caller's RTP at the end of the call (RFC 3550).",
            buckets=JITTER_BUCKETS,
            registry=r,
        )
        self.recognition_latency = Histogram(
            "ivr_recognition_latency_seconds",
            "From the end of the caller's speech to the recognizer's final result.",
            ["engine"],
            buckets=RECOGNITION_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "ivr_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.5 s).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._watched: set[str] = set()

    # -- calls ---------------------------------------------------------------------------------------------------

    def call_started(self) -> None:
        self.calls_started.inc()
        self.active_calls.inc()

    def call_ended(self, reason: str, media: MediaQuality | None = None) -> None:
        """A call that :meth:`call_started` counted has ended; ``media`` feeds the loss and jitter histograms."""
        self.active_calls.dec()
        self.calls_ended.labels(reason).inc()
        if media is not None:
            self.observe_media(media)

    def call_rejected(self, reason: str) -> None:
        self.calls_rejected.labels(reason).inc()

    def invite_response(self, status: int) -> None:
        """A final response to an INVITE (2xx answered, 4xx/5xx/6xx refused or failed)."""
        known = 100 <= status <= 699
        self.invite_responses.labels(status_class(status), str(status) if known else "other").inc()

    def observe_media(self, media: MediaQuality) -> None:
        if media.packets_received + media.packets_lost > 0:
            self.rtp_loss.observe(media.loss_ratio)
            self.rtp_jitter.observe(media.jitter_ms / 1000.0)

    # -- flows ---------------------------------------------------------------------------------------------------

    def node_visited(self, flow: str, node: str) -> None:
        self.node_visits.labels(flow, node).inc()

    def node_finished(self, flow: str, node: str, outcome: str) -> None:
        self.node_outcomes.labels(flow, node, outcome).inc()

    def no_input(self, flow: str, node: str) -> None:
        self.menu_no_input.labels(flow, node).inc()

    def no_match(self, flow: str, node: str) -> None:
        self.menu_no_match.labels(flow, node).inc()

    def handoff(self, queue: str, result: str) -> None:
        self.handoffs.labels(queue, result).inc()

    def observe_trace(self, event: TraceEvent) -> None:
        """Count what a flow trace event says: a node entered, how an input node's wait ended, a menu's
        no-input or no-match, a handoff's result. Called for every event of every call (cheap: a dict lookup
        and a counter increment at most)."""
        kind = event.kind
        if kind == "node":
            if event.node:
                self.node_visits.labels(event.flow, event.node).inc()
            return
        if kind != "input":
            return
        detail = event.detail
        result = detail.get("result")
        if result == "handoff":
            self.handoffs.labels(str(detail.get("queue", "")), str(detail.get("value", ""))).inc()
            return
        if not event.node:
            return
        if result in ("no_input", "no_match"):
            if "count" not in detail:
                return  # the heard input itself; the counted retry follows as its own event
            if result == "no_input":
                self.menu_no_input.labels(event.flow, event.node).inc()
            else:
                self.menu_no_match.labels(event.flow, event.node).inc()
            self.node_outcomes.labels(event.flow, event.node, result).inc()
            return
        if result in _OUTCOME_RESULTS:
            self.node_outcomes.labels(event.flow, event.node, str(result)).inc()

    def recognized(self, seconds: float, engine: str = "default") -> None:
        self.recognition_latency.labels(engine).observe(seconds)

    # -- read at scrape time -------------------------------------------------------------------------------------

    def watch_media_clock(self, stats: Callable[[], ClockStats]) -> None:
        """Serve the media clock's counters (``lambda: server.clock.stats``). ``catch_up`` counts tick periods whose
        frames went out late, in a burst with a later period (every playing stream sent one frame late per such
        period); ``skipped`` periods were never sent; ``late_callbacks`` woke more than 5 ms after their deadline."""

        def produce() -> Iterator[Metric]:
            current = stats()
            ticks = CounterMetricFamily("ivr_media_clock_ticks", "20 ms periods the media clock has processed.")
            ticks.add_metric([], current.ticks)
            late = CounterMetricFamily(
                "ivr_media_clock_late_ticks",
                "Media clock periods sent late, by kind: catch_up (sent in a later period's burst: the prompt "
                "frames of that period went out late), skipped (never sent), late_callbacks (timer over 5 ms late).",
                labels=["kind"],
            )
            late.add_metric(["catch_up"], current.catch_up_ticks)
            late.add_metric(["skipped"], current.skipped_ticks)
            late.add_metric(["late_callbacks"], current.late_ticks)
            worst = GaugeMetricFamily(
                "ivr_media_clock_max_lateness_seconds", "Latest the media clock's timer has run since start."
            )
            worst.add_metric([], current.max_lateness)
            yield ticks
            yield late
            yield worst

        self._watch("media_clock", produce)

    def watch_cdr_store(self, store: CdrBacklog) -> None:
        """Serve the CDR store's backlog and write counters (growing backlog: the database cannot keep up)."""

        def produce() -> Iterator[Metric]:
            backlog = GaugeMetricFamily("ivr_cdr_backlog", "CDR writes queued and not yet committed.")
            backlog.add_metric([], store.backlog)
            writes = CounterMetricFamily("ivr_cdr_writes", "CDR writes, by result.", labels=["result"])
            writes.add_metric(["committed"], store.writes)
            writes.add_metric(["failed"], store.write_errors)
            yield backlog
            yield writes

        self._watch("cdr_store", produce)

    def watch_sip_refusals(self, counts: Callable[[], dict[str, int]]) -> None:
        """Serve counters of SIP traffic refused before any call exists (``{reason: count}``: messages from untrusted
        sources, sources over their rate, INVITEs that failed digest authentication): no call record shows them."""

        def produce() -> Iterator[Metric]:
            yield _by_reason("ivr_sip_refused", "SIP messages refused before a call exists, by reason.", counts())

        self._watch("sip_refusals", produce)

    def watch_tcp(self, closed: Callable[[], dict[str, int]], open_now: Callable[[], int]) -> None:
        """Serve the SIP-over-TCP limits: connections closed by reason (refused over a cap, idle, slow, not
        reading) and the connections open now."""

        def produce() -> Iterator[Metric]:
            yield _by_reason("ivr_sip_tcp_closed", "SIP TCP connections the daemon closed, by reason.", closed())
            yield GaugeMetricFamily("ivr_sip_tcp_connections", "SIP TCP connections open now.", value=open_now())

        self._watch("sip_tcp", produce)

    def _watch(self, name: str, produce: Callable[[], Iterator[Metric]]) -> None:
        if name in self._watched:
            raise ValueError(f"{name} is already watched by this registry")
        self._watched.add(name)
        self.registry.register(_Scraped(produce))

    def lag_monitor(self, interval: float = 0.5) -> EventLoopLagMonitor:
        """A lag monitor that feeds ``ivr_event_loop_lag_seconds``; ``start()`` it on the daemon's loop."""
        return EventLoopLagMonitor(interval, observe=self.event_loop_lag.observe)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (serve with :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class EventLoopLagMonitor:
    """Sleeps ``interval`` seconds in a loop and measures how much later than asked it woke up.

    :attr:`lag` is the last measurement, or, when the monitor's own wake-up is overdue right now, how overdue it is
    (whichever is larger), so a caller on the loop sees a stall that is still going on, not only the previous one.
    """

    def __init__(self, interval: float = 0.5, *, observe: Callable[[float], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._observe = observe
        self._last = 0.0
        self.max_lag = 0.0
        """The largest lag measured since start."""
        self.samples = 0
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def lag(self) -> float:
        """Seconds the loop is running late now (see the class docstring); 0.0 before the first sample."""
        if self._due is None or self._loop is None:
            return self._last
        return max(self._last, self._loop.time() - self._due)

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="event-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._due = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - self._due)
            self._last = lag
            self.samples += 1
            if lag > self.max_lag:
                self.max_lag = lag
            if self._observe is not None:
                self._observe(lag)


def _by_reason(name: str, documentation: str, counts: dict[str, int]) -> CounterMetricFamily:
    """A counter family labelled by reason, from counts another part keeps (read at scrape time)."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, value in sorted(counts.items()):
        family.add_metric([reason], value)
    return family
