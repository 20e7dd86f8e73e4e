"""Running it in production (issue 8), proven on the real daemon (``python -m ivr serve``) with SIPp as the caller.

- a SIGKILL mid-call loses no call record: the records of the calls up are in the store while they run, and the
  next start on the same store closes them as ``interrupted`` (read back with ``ivr cdr export``);
- admission control: calls over ``calls.max_calls_per_second`` and beyond ``calls.max_calls`` get 503 with
  Retry-After, while every admitted call completes normally;
- trusted sources: a source outside ``security.trusted_sources`` gets 403 (``untrusted: reject``) or no answer at
  all (``untrusted: drop``), while a trusted source's call is answered;
- the admin API answers with the bearer token and refuses without it, and ``/metrics`` counts the flow nodes a
  SIPp call visited by RFC 2833 keys.

A note on addresses: IvrDaemon waits for its daemon to answer an OPTIONS from 127.0.0.1 with 200, so 127.0.0.1 must
stay trusted; the untrusted caller sends from 127.0.0.3 (Linux routes all of 127.0.0.0/8 over loopback), the
trusted one from 127.0.0.2.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from kamailio_peer import admin_request
from peers import DEFAULT_CONFIG, LOCALHOST, REPO_ROOT, IvrDaemon, PeerError, Sipp, SippResult, sip_options_ping
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.interop

ADMISSION = "prod_uac_admission.xml"  # 200 -> ACK, hold -d ms, BYE; 403/503 -> ACK; both count as successful
TOKEN = "production-interop-admin-token"
TRUSTED_CALLER = "127.0.0.2"
UNTRUSTED_CALLER = "127.0.0.3"
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------
# helpers


def _poll(what: str, probe: Callable[[], _T | None], timeout: float, interval: float = 0.1) -> _T:
    """Call ``probe`` until it returns something other than None; PeerError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise PeerError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


@dataclass(frozen=True)
class Answer:
    """The final response a SIPp caller received to its INVITE."""

    status: int
    reason: str
    retry_after: int | None
    warning: str | None


_BLOCK = re.compile(r"^-{20,}.*$", re.MULTILINE)


def _header(text: str, name: str) -> str | None:
    m = re.search(rf"^{name}\s*:\s*(.*?)\s*$", text, re.MULTILINE | re.IGNORECASE)
    return m.group(1) if m else None


def invite_answers(result: SippResult) -> dict[str, Answer]:
    """Call-ID -> the first final response to its INVITE, from SIPp's ``-trace_msg`` log (``Sipp(trace_msg=True)``).

    The log is a series of blocks, each after a dashed line: ``UDP message received [N] bytes :`` then the message
    (SIPp repeats an unexpected one in a second block headed ``Unexpected UDP message received:``; only the first
    kind is read).
    """
    answers: dict[str, Answer] = {}
    for block in _BLOCK.split(result.messages):
        head, _, message = block.strip().partition("\n")
        if not re.match(r"(UDP|TCP) message received \[\d+\] bytes", head):
            continue
        message = message.strip()
        status = re.match(r"SIP/2\.0 (\d{3}) (.*)", message)
        cseq = _header(message, "CSeq")
        call_id = _header(message, "Call-ID")
        if status is None or cseq is None or call_id is None or not cseq.endswith("INVITE"):
            continue
        code = int(status.group(1))
        if code < 200 or call_id in answers:
            continue
        retry = _header(message, "Retry-After")
        answers[call_id] = Answer(
            code, status.group(2).strip(), int(retry.split()[0]) if retry else None, _header(message, "Warning")
        )
    return answers


def invites_sent(result: SippResult) -> set[str]:
    """Call-IDs of the INVITEs SIPp sent (from the ``-trace_msg`` log)."""
    call_ids = set()
    for block in _BLOCK.split(result.messages):
        head, _, message = block.strip().partition("\n")
        if head.startswith(("UDP message sent", "TCP message sent")) and message.strip().startswith("INVITE "):
            call_id = _header(message, "Call-ID")
            if call_id is not None:
                call_ids.add(call_id)
    return call_ids


def db_records(db: Path) -> list[dict[str, Any]]:
    """Every row of the daemon's SQLite CDR store, read directly (the store runs in WAL mode: readers never block)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute("select * from cdr")]
        except sqlite3.OperationalError:  # the schema is not created yet
            return []


def cdr_export(db: Path) -> list[dict[str, Any]]:
    """``ivr cdr export --format json`` of every record in ``db``: what an operator reads."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ivr",
            "cdr",
            "export",
            "--config",
            str(DEFAULT_CONFIG),
            "--url",
            f"sqlite:///{db}",
            "--since",
            "2000-01-01",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"ivr cdr export failed ({proc.returncode}): {proc.stderr}"
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list), proc.stdout
    return rows


def _closed_records(ivr: IvrDaemon, count: int) -> list[dict[str, Any]] | None:
    """The exported records of the daemon's own store once there are ``count`` of them, all ended; else None."""
    assert ivr.workdir is not None
    rows = cdr_export(ivr.workdir / "cdr.db")
    return rows if len(rows) == count and all(r["ended_at"] for r in rows) else None


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def ivr_lines(text: str) -> str:
    """The ``ivr_*`` samples of a metrics page (for assertion messages: the process and GC figures are noise)."""
    return "\n".join(ln for ln in text.splitlines() if ln.startswith("ivr_"))


def _describe(ivr: IvrDaemon, *results: SippResult) -> str:
    return "\n".join([*(r.describe() for r in results), ivr.describe()])


# --------------------------------------------------------------------------------------------------
# 1. a crash mid-call loses no call record


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_sigkill_mid_call_leaves_open_records_that_the_next_start_closes_as_interrupted(tmp_path: Path) -> None:
    held = 3
    db = tmp_path / "cdr.db"
    # One store, one node name: the restarted node closes only the rows its own instance left open (the default
    # name holds the SIP port, which IvrDaemon picks afresh for every start).
    overrides = {"cdr": {"instance": "prod-crash-node"}}
    store = ["--cdr", f"sqlite:///{db}"]
    with IvrDaemon(hold_calls=True, overrides=overrides, extra_args=store) as ivr:
        done = Sipp(ADMISSION, ivr.sip_target, calls=1, duration_ms=200, trace_msg=True, timeout=20).run()
        assert done.returncode == 0, _describe(ivr, done)
        (finished_call,) = invites_sent(done)
        with Sipp("uac_wait_bye.xml", ivr.sip_target, calls=held, rate=20, limit=held, trace_msg=True) as uac:
            uac.start()
            # Written when the call starts: the store holds every call in progress, open (no end yet).
            open_rows = _poll(
                f"{held} open records in the store",
                lambda: rows if len(rows := [r for r in db_records(db) if r["ended_at"] is None]) == held else None,
                10,
            )
            killed_at = time.time()
            ivr.kill()
            assert ivr.returncode == -9, f"exit {ivr.returncode}\n{ivr.describe()}"
            held_result = uac.stop()  # its callers wait for a BYE that will never come
    held_calls = invites_sent(held_result)
    assert len(held_calls) == held, held_result.describe()
    assert {r["call_id"] for r in open_rows} == held_calls, (open_rows, held_calls)
    assert all(r["answered_at"] is not None and r["end_reason"] is None for r in open_rows), open_rows
    assert "interrupted" not in ivr.stderr_text()

    with IvrDaemon(hold_calls=True, overrides=overrides, extra_args=store) as restarted:
        # close_interrupted runs before the daemon answers anything, so the rows are closed once it is ready
        closed_log = restarted.log_records("interrupted")
        rows = {r["call_id"]: r for r in cdr_export(db)}
        assert restarted.terminate() == 0, restarted.describe()

    assert [r["interrupted"] for r in closed_log] == [str(held)], restarted.describe()
    assert set(rows) == held_calls | {finished_call}, rows
    assert rows[finished_call]["end_reason"] == "remote_bye", rows[finished_call]  # a finished record stays as it was
    for call_id in held_calls:
        row = rows[call_id]
        assert row["end_reason"] == "interrupted", row
        assert row["instance"] == "prod-crash-node" and row["caller"] == "sipp", row
        started, answered, ended = (datetime.fromisoformat(row[k]) for k in ("started_at", "answered_at", "ended_at"))
        assert started <= answered <= ended, row
        assert ended.timestamp() >= killed_at - 0.01, (row, killed_at)  # closed at the restart, after the kill


# --------------------------------------------------------------------------------------------------
# 2. admission control


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_calls_over_the_cps_limit_get_503_retry_after_while_every_admitted_call_completes() -> None:
    calls, cps = 40, 5
    with IvrDaemon(hold_calls=True, overrides={"calls": {"max_calls_per_second": cps}}) as ivr:
        result = Sipp(
            ADMISSION, ivr.sip_target, calls=calls, rate=40, duration_ms=500, trace_msg=True, timeout=30
        ).run()
        assert result.returncode == 0, _describe(ivr, result)
        records = _poll(f"{calls} closed records", lambda: _closed_records(ivr, calls), 10)
        status, metrics_text = admin_request(ivr, "GET", "/metrics", None)  # open: metrics_require_token is off
        assert status == 200, metrics_text
        assert ivr.terminate() == 0, ivr.describe()

    # SIPp: every call went its way (admitted and completed, or refused and ACKed), none failed.
    stats = result.stats
    assert stats is not None and (stats.created, stats.successful, stats.failed) == (calls, calls, 0), result.describe()
    answers = invite_answers(result)
    assert set(answers) == invites_sent(result) and len(answers) == calls, answers
    admitted = {cid for cid, a in answers.items() if a.status == 200}
    refused = {cid: a for cid, a in answers.items() if a.status != 200}
    assert all((a.status, a.retry_after) == (503, 1) for a in refused.values()), refused

    # Token bucket: a burst of `cps`, then `cps` per second over the span the INVITEs arrived in.
    starts = sorted(datetime.fromisoformat(r["started_at"]) for r in records)
    span = (starts[-1] - starts[0]).total_seconds()
    assert 0.5 < span < 3.0, starts  # 40 calls at 40/s
    assert cps <= len(admitted) <= cps + cps * span + 1, (len(admitted), span)

    # The daemon's records agree call by call: the admitted ones completed, the refused ones say why.
    by_call = {r["call_id"]: r for r in records}
    assert set(by_call) == set(answers), by_call
    for cid in admitted:  # answered, then ended by the caller's BYE after its 500 ms hold
        r = by_call[cid]
        assert r["end_reason"] == "remote_bye" and r["answered_at"] and r["duration_s"] >= 0.45, r
    for cid in refused:
        r = by_call[cid]
        assert (r["end_reason"], r["sip_status"], r["extra"].get("why")) == ("rejected", 503, "cps"), r
        assert r["answered_at"] is None, r
    # ... and so do its metrics.
    samples = metric_samples(metrics_text)
    assert samples[("ivr_calls_rejected_total", (("reason", "cps"),))] == len(refused), ivr_lines(metrics_text)
    assert samples[("ivr_calls_started_total", ())] == len(admitted), ivr_lines(metrics_text)
    assert samples[("ivr_calls_ended_total", (("reason", "remote_bye"),))] == len(admitted), ivr_lines(metrics_text)
    print(f"max_calls_per_second {cps}: {len(admitted)} admitted, {len(refused)} refused with 503 over {span:.3f}s")


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_the_call_beyond_max_calls_gets_503_retry_after_and_a_freed_slot_admits_again() -> None:
    limit = 3
    overrides = {"calls": {"max_calls": limit}, "admin": {"token": TOKEN}}
    with IvrDaemon(hold_calls=True, overrides=overrides) as ivr:

        def active() -> int:
            status, body = admin_request(ivr, "GET", "/calls", TOKEN)
            assert status == 200, body
            count = json.loads(body)["count"]
            assert isinstance(count, int)
            return count

        with Sipp(
            ADMISSION, ivr.sip_target, calls=limit, rate=20, limit=limit, duration_ms=4000, trace_msg=True
        ) as held:
            held.start()
            _poll(f"{limit} calls up", lambda: True if active() == limit else None, 10)
            over = Sipp(ADMISSION, ivr.sip_target, calls=1, duration_ms=200, trace_msg=True, timeout=20).run()
            assert active() == limit, ivr.describe()
            held_result = held.wait(20)
        _poll("the held calls ended", lambda: True if active() == 0 else None, 5)
        again = Sipp(ADMISSION, ivr.sip_target, calls=1, duration_ms=200, trace_msg=True, timeout=20).run()
        records = {r["call_id"]: r for r in _poll("5 closed records", lambda: _closed_records(ivr, limit + 2), 5)}
        assert ivr.terminate() == 0, ivr.describe()

    for r in (held_result, over, again):
        assert r.returncode == 0 and r.stats is not None and r.stats.successful == r.stats.created, _describe(ivr, r)
    held_answers = invite_answers(held_result)
    assert len(held_answers) == limit and all(a.status == 200 for a in held_answers.values()), held_answers
    ((over_call, refused),) = invite_answers(over).items()
    assert (refused.status, refused.retry_after) == (503, 5), refused
    assert (records[over_call]["end_reason"], records[over_call]["extra"].get("why")) == ("rejected", "max_calls")
    ((again_call, admitted),) = invite_answers(again).items()
    assert admitted.status == 200, admitted
    for cid in [*held_answers, again_call]:
        assert records[cid]["end_reason"] == "remote_bye", records[cid]


# --------------------------------------------------------------------------------------------------
# 3. trusted sources


def _trusted_daemon(untrusted: str) -> IvrDaemon:
    security = {"trusted_sources": [LOCALHOST, f"{TRUSTED_CALLER}/32"], "untrusted": untrusted}
    return IvrDaemon(hold_calls=True, overrides={"security": security})


def _trusted_call_works(ivr: IvrDaemon) -> None:
    result = Sipp(
        ADMISSION, ivr.sip_target, calls=1, duration_ms=200, local_ip=TRUSTED_CALLER, trace_msg=True, timeout=20
    ).run()
    assert result.returncode == 0, _describe(ivr, result)
    ((call_id, answer),) = invite_answers(result).items()
    assert answer.status == 200 and call_id.endswith(f"@{TRUSTED_CALLER}"), answer
    records = _poll("the trusted call's end", lambda: r if len(r := ivr.call_end_records()) == 1 else None, 5)
    assert records[0]["call_id"] == call_id and records[0]["reason"] == "remote_bye", records


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_untrusted_source_gets_403_and_a_trusted_source_is_answered() -> None:
    with _trusted_daemon("reject") as ivr:
        refused = Sipp(
            ADMISSION, ivr.sip_target, calls=2, duration_ms=200, local_ip=UNTRUSTED_CALLER, trace_msg=True, timeout=20
        ).run()
        assert refused.returncode == 0, _describe(ivr, refused)
        answers = invite_answers(refused)
        assert len(answers) == 2, refused.messages
        assert all(a.status == 403 and UNTRUSTED_CALLER in (a.warning or "") for a in answers.values()), answers
        assert ivr.call_end_records() == [] and "call answered" not in ivr.stderr_text(), ivr.describe()
        _trusted_call_works(ivr)
        assert ivr.terminate() == 0, ivr.describe()


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_untrusted_source_gets_no_answer_at_all_with_drop() -> None:
    with _trusted_daemon("drop") as ivr:
        # SIPp gives up after the INVITE and 2 retransmissions (0.5 s, then 1 s later, then 2 s: about 3.5 s).
        silent = Sipp(
            ADMISSION,
            ivr.sip_target,
            calls=1,
            local_ip=UNTRUSTED_CALLER,
            trace_msg=True,
            timeout=20,
            extra_args=["-max_invite_retrans", "2"],
        ).run()
        assert silent.returncode == 1, _describe(ivr, silent)
        assert silent.stats is not None and (silent.stats.failed, silent.stats.max_udp_retrans) == (1, 1), silent.stats
        assert silent.stats.retransmissions == 2, silent.stats
        assert "message received" not in silent.messages, silent.messages  # not a single byte came back
        assert sip_options_ping(LOCALHOST, ivr.sip_port, 2.0) == 200, ivr.describe()  # the daemon is fine
        assert ivr.call_end_records() == [] and "call answered" not in ivr.stderr_text(), ivr.describe()
        _trusted_call_works(ivr)
        assert ivr.terminate() == 0, ivr.describe()


# --------------------------------------------------------------------------------------------------
# 4. the admin API and metrics


PROTECTED = [("GET", "/calls"), ("GET", "/flows"), ("GET", "/metrics"), ("POST", "/reload"), ("POST", "/drain")]


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_sipp")
def test_admin_endpoints_answer_with_the_bearer_token_and_refuse_without_it() -> None:
    overrides = {"admin": {"token": TOKEN, "metrics_require_token": True}}
    with IvrDaemon(hold_calls=True, overrides=overrides) as ivr:
        # Refused first, so a refused /drain or /reload cannot have done anything the checks below would see.
        for method, path in PROTECTED:
            for token in (None, "not-the-right-token-at-all", TOKEN[:-1]):
                status, body = admin_request(ivr, method, path, token)
                assert status == 401, (method, path, token, status, body)
                assert json.loads(body)["status"] == 401, body
        assert admin_request(ivr, "GET", "/health", None)[0] == 200  # open endpoints stay open
        assert admin_request(ivr, "GET", "/ready", None)[0] == 200

        with Sipp(ADMISSION, ivr.sip_target, calls=1, duration_ms=5000, trace_msg=True) as uac:
            uac.start()

            def one_call() -> dict[str, Any] | None:
                status, body = admin_request(ivr, "GET", "/calls", TOKEN)
                assert status == 200, body
                data = json.loads(body)
                return data if data["count"] == 1 else None

            calls = _poll("the call in GET /calls", one_call, 10)
            status, body = admin_request(ivr, "GET", "/flows", TOKEN)
            assert status == 200 and json.loads(body) == {"flows": []}, body  # --hold-calls: no flows
            status, body = admin_request(ivr, "POST", "/reload", TOKEN)
            assert status == 200 and json.loads(body)["ok"] is True, body
            status, metrics_text = admin_request(ivr, "GET", "/metrics", TOKEN)
            assert status == 200, metrics_text
            status, body = admin_request(ivr, "POST", "/drain", TOKEN)
            assert status == 202, body
            drained = json.loads(body)
            assert sip_options_ping(LOCALHOST, ivr.sip_port, 2.0) == 503, ivr.describe()  # draining
            assert admin_request(ivr, "GET", "/ready", None)[0] == 503
            result = uac.wait(15)  # the call in progress goes on to its own BYE
        assert ivr.terminate() == 0, ivr.describe()

    assert result.returncode == 0, _describe(ivr, result)
    ((call_id, answer),) = invite_answers(result).items()
    assert answer.status == 200
    assert [c["call_id"] for c in calls["calls"]] == [call_id] and calls["draining"] is False, calls
    assert drained == {"draining": True, "active_calls": 1}, drained
    samples = metric_samples(metrics_text)
    assert samples[("ivr_active_calls", ())] == 1.0, ivr_lines(metrics_text)
    assert samples[("ivr_calls_started_total", ())] == 1.0, ivr_lines(metrics_text)


FLOW = """\
name: prod-metrics
languages: [en]
language: en
start: menu
prompts:
  choose: {en: {file: choose.wav}}
  thanks: {en: {file: thanks.wav}}
  sorry: {en: {file: short.wav}}
  bye: {en: {file: short.wav}}
nodes:
  menu:
    type: menu
    prompt: choose
    options:
      - {key: "1", next: thanks}
      - {key: "2", next: elsewhere}
    timeout: 6s
    no_input: {prompt: sorry, tries: 1}
    no_match: {prompt: sorry, tries: 1}
    failure: goodbye
  thanks: {type: play, prompt: thanks, next: goodbye}
  elsewhere: {type: play, prompt: thanks, next: goodbye}
  goodbye: {type: hangup, prompt: bye}
"""


def _tone(path: Path, seconds: float, hz: float = 440.0, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_pcap_play")
def test_metrics_count_the_flow_nodes_a_sipp_call_visits_by_rfc2833_keys(tmp_path: Path) -> None:
    (tmp_path / "line.yaml").write_text(textwrap.dedent(FLOW))
    _tone(tmp_path / "choose.wav", 2.0)  # the key comes 1 s into it: barge-in
    _tone(tmp_path / "thanks.wav", 0.4, 660.0)
    _tone(tmp_path / "short.wav", 0.3, 550.0)
    overrides = {
        "routes": [{"client": "prod", "numbers": ["*"], "flow": str(tmp_path / "line.yaml")}],
        "flows": {"prompt_cache": str(tmp_path / "cache"), "watch": False},
        "admin": {"token": TOKEN, "metrics_require_token": True},
    }
    with IvrDaemon(flows=True, overrides=overrides) as ivr:
        result = Sipp("prod_uac_flow_key.xml", ivr.sip_target, calls=1, trace_msg=True, timeout=30).run()
        assert result.returncode == 0, _describe(ivr, result)
        _poll("the call's end", lambda: r if (r := ivr.call_end_records()) else None, 5)
        assert admin_request(ivr, "GET", "/metrics", None)[0] == 401
        status, text = admin_request(ivr, "GET", "/metrics", TOKEN)
        assert status == 200, text
        status, body = admin_request(ivr, "GET", "/flows", TOKEN)
        assert status == 200, body
        records = _poll("the closed record", lambda: _closed_records(ivr, 1), 5)
        assert ivr.terminate() == 0, ivr.describe()

    samples = metric_samples(text)

    def visits(node: str) -> float:
        return samples.get(("ivr_flow_node_visits_total", (("flow", "prod-metrics"), ("node", node))), 0.0)

    assert [visits(n) for n in ("menu", "thanks", "goodbye", "elsewhere")] == [1.0, 1.0, 1.0, 0.0], ivr_lines(text)
    assert samples[("ivr_calls_ended_total", (("reason", "local_bye"),))] == 1.0, ivr_lines(
        text
    )  # the hangup node's BYE
    assert samples[("ivr_calls_started_total", ())] == 1.0 and samples[("ivr_active_calls", ())] == 0.0, ivr_lines(text)
    menu_outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "ivr_flow_node_outcomes_total" and dict(labels).get("node") == "menu"
    }
    assert menu_outcomes and sum(menu_outcomes.values()) == 1.0, menu_outcomes
    ((call_id, answer),) = invite_answers(result).items()
    assert answer.status == 200
    (flow,) = json.loads(body)["flows"]
    (record,) = records
    assert record["call_id"] == call_id and record["flow"] == "prod-metrics", record
    assert record["flow_version"] == flow["version"], (record, flow)
    assert record["path"] == ["menu", "thanks", "goodbye"] and record["end_reason"] == "local_bye", record
