"""Metrics in a registry of their own: what each helper counts, what a scrape shows, the event-loop lag monitor."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.media.clock import ClockStats
from ivr.ops.cdr import MediaQuality
from ivr.ops.metrics import EventLoopLagMonitor, IvrMetrics


@pytest.fixture
def metrics() -> IvrMetrics:
    return IvrMetrics(process=False)


def value(metrics: IvrMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_two_instances_do_not_share_series() -> None:
    a, b = IvrMetrics(process=False), IvrMetrics(process=False)
    a.call_started()
    assert value(a, "ivr_active_calls") == 1
    assert value(b, "ivr_active_calls") == 0


def test_active_calls_follow_starts_and_ends(metrics: IvrMetrics) -> None:
    metrics.call_started()
    metrics.call_started()
    metrics.call_ended("bye")
    assert value(metrics, "ivr_active_calls") == 1
    assert value(metrics, "ivr_calls_started_total") == 2
    assert value(metrics, "ivr_calls_ended_total", reason="bye") == 1


def test_invite_responses_by_class_and_status(metrics: IvrMetrics) -> None:
    for status in (200, 200, 486, 503, 999):
        metrics.invite_response(status)
    assert value(metrics, "ivr_invite_final_responses_total", status_class="2xx", status="200") == 2
    assert value(metrics, "ivr_invite_final_responses_total", status_class="4xx", status="486") == 1
    assert value(metrics, "ivr_invite_final_responses_total", status_class="5xx", status="503") == 1
    assert value(metrics, "ivr_invite_final_responses_total", status_class="other", status="other") == 1


def test_flow_counters(metrics: IvrMetrics) -> None:
    metrics.node_visited("bank", "menu")
    metrics.node_visited("bank", "menu")
    metrics.node_finished("bank", "menu", "option:2")
    metrics.no_input("bank", "menu")
    metrics.no_match("bank", "menu")
    metrics.no_match("bank", "menu")
    metrics.handoff("sales", "accepted")
    metrics.call_rejected("cps")
    assert value(metrics, "ivr_flow_node_visits_total", flow="bank", node="menu") == 2
    assert value(metrics, "ivr_flow_node_outcomes_total", flow="bank", node="menu", outcome="option:2") == 1
    assert value(metrics, "ivr_menu_no_input_total", flow="bank", node="menu") == 1
    assert value(metrics, "ivr_menu_no_match_total", flow="bank", node="menu") == 2
    assert value(metrics, "ivr_handoffs_total", queue="sales", result="accepted") == 1
    assert value(metrics, "ivr_calls_rejected_total", reason="cps") == 1


def test_media_quality_feeds_loss_and_jitter_histograms(metrics: IvrMetrics) -> None:
    metrics.call_started()
    metrics.call_ended("bye", MediaQuality(packets_sent=500, packets_received=97, packets_lost=3, jitter_ms=12.0))
    assert value(metrics, "ivr_rtp_loss_ratio_count") == 1
    assert value(metrics, "ivr_rtp_loss_ratio_sum") == pytest.approx(0.03)
    assert value(metrics, "ivr_rtp_loss_ratio_bucket", le="0.02") == 0
    assert value(metrics, "ivr_rtp_loss_ratio_bucket", le="0.05") == 1
    assert value(metrics, "ivr_rtp_jitter_seconds_sum") == pytest.approx(0.012)
    assert value(metrics, "ivr_rtp_jitter_seconds_bucket", le="0.01") == 0
    assert value(metrics, "ivr_rtp_jitter_seconds_bucket", le="0.02") == 1


def test_a_call_that_received_no_rtp_adds_no_quality_sample(metrics: IvrMetrics) -> None:
    metrics.observe_media(MediaQuality(10, 0, 0, 0.0))
    assert value(metrics, "ivr_rtp_loss_ratio_count") == 0


def test_recognition_latency_by_engine(metrics: IvrMetrics) -> None:
    metrics.recognized(0.4, "pocketsphinx")
    assert value(metrics, "ivr_recognition_latency_seconds_count", engine="pocketsphinx") == 1
    assert value(metrics, "ivr_recognition_latency_seconds_bucket", engine="pocketsphinx", le="0.3") == 0
    assert value(metrics, "ivr_recognition_latency_seconds_bucket", engine="pocketsphinx", le="0.5") == 1


def test_media_clock_stats_are_read_at_scrape_time(metrics: IvrMetrics) -> None:
    stats = ClockStats()
    metrics.watch_media_clock(lambda: stats)
    stats.ticks, stats.catch_up_ticks, stats.skipped_ticks, stats.late_ticks, stats.max_lateness = 1000, 7, 2, 4, 0.09
    assert value(metrics, "ivr_media_clock_ticks_total") == 1000
    assert value(metrics, "ivr_media_clock_late_ticks_total", kind="catch_up") == 7
    assert value(metrics, "ivr_media_clock_late_ticks_total", kind="skipped") == 2
    assert value(metrics, "ivr_media_clock_late_ticks_total", kind="late_callbacks") == 4
    assert value(metrics, "ivr_media_clock_max_lateness_seconds") == pytest.approx(0.09)
    stats.catch_up_ticks = 9
    assert value(metrics, "ivr_media_clock_late_ticks_total", kind="catch_up") == 9


def test_cdr_store_backlog_is_read_at_scrape_time(metrics: IvrMetrics) -> None:
    class Store:
        backlog = 3
        writes = 10
        write_errors = 1

    metrics.watch_cdr_store(Store())
    assert value(metrics, "ivr_cdr_backlog") == 3
    assert value(metrics, "ivr_cdr_writes_total", result="committed") == 10
    assert value(metrics, "ivr_cdr_writes_total", result="failed") == 1


def test_watching_twice_is_refused(metrics: IvrMetrics) -> None:
    metrics.watch_media_clock(ClockStats)
    with pytest.raises(ValueError, match="already watched"):
        metrics.watch_media_clock(ClockStats)


def test_render_is_valid_prometheus_text(metrics: IvrMetrics) -> None:
    metrics.call_started()
    metrics.node_visited("bank", "menu")
    names = {family.name for family in text_string_to_metric_families(metrics.render().decode())}
    assert {"ivr_active_calls", "ivr_calls_started", "ivr_flow_node_visits", "ivr_event_loop_lag_seconds"} <= names


def test_process_collectors_are_optional() -> None:
    text = IvrMetrics(process=True).render().decode()
    assert "process_cpu_seconds_total" in text
    assert "process_cpu_seconds_total" not in IvrMetrics(process=False).render().decode()


async def test_lag_monitor_measures_a_blocked_loop() -> None:
    samples: list[float] = []
    monitor = EventLoopLagMonitor(0.02, observe=samples.append)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # noqa: ASYNC251 - block the loop on purpose
        await asyncio.sleep(0.05)
    finally:
        await monitor.stop()
    assert max(samples) >= 0.1
    assert monitor.max_lag >= 0.1
    assert not monitor.running


async def test_lag_monitor_reports_a_stall_that_is_still_going_on() -> None:
    monitor = EventLoopLagMonitor(0.02)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        assert monitor.lag < 0.05
        time.sleep(0.12)  # noqa: ASYNC251 - the monitor has not run since: lag must still show it
        assert monitor.lag >= 0.09
    finally:
        await monitor.stop()


async def test_lag_monitor_feeds_the_histogram(metrics: IvrMetrics) -> None:
    monitor = metrics.lag_monitor(0.01)
    monitor.start()
    monitor.start()  # idempotent
    try:
        for _ in range(500):
            if monitor.samples >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await monitor.stop()
    count = value(metrics, "ivr_event_loop_lag_seconds_count")
    assert count is not None and count >= 3


def test_lag_monitor_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventLoopLagMonitor(0)


def test_flow_trace_events_count_node_visits_outcomes_retries_and_handoffs(metrics: IvrMetrics) -> None:
    from ivr.flows.runtime import TraceEvent

    def event(kind: str, node: str | None, **detail: object) -> TraceEvent:
        return TraceEvent(0.0, kind, node, detail, "c1", "main")  # type: ignore[arg-type]

    for e in (
        event("node", "menu", type="menu"),
        event("prompt", "menu", items=["main-menu"]),
        event("input", "menu", key="7", result="no_match"),  # the input heard: not counted twice
        event("input", "menu", result="no_match", count=1, tries=3, then="retry"),
        event("timer", "menu", timer="no_input"),
        event("input", "menu", result="no_input", count=1, tries=3, then="retry"),
        event("input", "menu", key="1", result="choice", next="billing"),
        event("node", "billing", type="collect"),
        event("input", "billing", result="entry", entry="12xxxx"),
        event("input", None, result="handoff", value="transferred", queue="billing"),
    ):
        metrics.observe_trace(e)
    assert value(metrics, "ivr_flow_node_visits_total", flow="main", node="menu") == 1
    assert value(metrics, "ivr_flow_node_visits_total", flow="main", node="billing") == 1
    assert value(metrics, "ivr_menu_no_match_total", flow="main", node="menu") == 1
    assert value(metrics, "ivr_menu_no_input_total", flow="main", node="menu") == 1
    assert value(metrics, "ivr_flow_node_outcomes_total", flow="main", node="menu", outcome="choice") == 1
    assert value(metrics, "ivr_flow_node_outcomes_total", flow="main", node="billing", outcome="entry") == 1
    assert value(metrics, "ivr_handoffs_total", queue="billing", result="transferred") == 1


def test_sip_refusals_before_any_call_are_served_by_reason(metrics: IvrMetrics) -> None:
    counts = {"untrusted": 0, "rate_limited": 0, "auth": 0}
    metrics.watch_sip_refusals(lambda: counts)
    counts["untrusted"] = 7
    counts["auth"] = 2
    assert value(metrics, "ivr_sip_refused_total", reason="untrusted") == 7
    assert value(metrics, "ivr_sip_refused_total", reason="auth") == 2
    assert value(metrics, "ivr_sip_refused_total", reason="rate_limited") == 0
