"""RFC 4028 session timers end to end, on virtual time: the daemon (``sip.session_expires`` at its default) answers a
caller that asks for a 90 s session timer which the caller refreshes (``refresher=uac``, copied into the 200 as
RFC 4028 9 says). While the caller's re-INVITEs come, the call stays up; once they stop (the caller, or its
signalling path, is gone), the daemon hangs up at ``90 - min(32, 90/3)`` = 60 s after the last refresh, and the
call record says ``session_expired``. RTP is not watched (``media.rtp_timeout`` 0)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from pathlib import Path

import pytest

from ivr.simulator import caller as sim_caller
from ivr.simulator.lab import IvrLab
from ivr.simulator.virtual import run_virtual
from ivr.sip.endpoint import EndpointConfig, EndReason

FLOW = """
name: wait
languages: [en]
language: en
timezone: Europe/Sofia
start: menu
prompts:
  menu: {en: "Press one."}
  bye: {en: "Goodbye."}
nodes:
  menu:
    type: menu
    prompt: menu
    options: [{key: "1", next: bye}]
    timeout: 60s
    no_input: {tries: 9}
    no_match: {tries: 1}
    failure: bye
  bye: {type: hangup, prompt: bye}
"""


def _config(tmp_path: Path) -> Path:
    (tmp_path / "wait.yaml").write_text(FLOW)
    welcome = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "en" / "welcome.wav"
    config = tmp_path / "ivr.yaml"
    config.write_text(
        f"routes:\n  - {{client: lab, numbers: ['*'], flow: wait.yaml}}\n"
        f"queues: null\ncalls: {{welcome_prompt: {welcome}}}\nmedia: {{rtp_timeout: 0}}\n"
    )
    return config


def test_a_caller_that_stops_refreshing_is_hung_up_with_session_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulated phone asks for a 90 s session timer (Supported: timer, Session-Expires: 90;refresher=uac)
    # and refreshes it.
    monkeypatch.setattr(sim_caller, "EndpointConfig", functools.partial(EndpointConfig, session_expires=90))

    async def main() -> tuple[EndReason, float, float, str | None, int]:
        async with IvrLab(config=_config(tmp_path)) as lab:
            call = await lab.call("100", at=dt.datetime(2026, 11, 24, 10, 0))
            caller = call.caller
            server = lab.server
            assert server is not None and server.cdr is not None
            leg = caller.leg
            assert leg is not None and leg.session_timer is not None
            assert (leg.session_timer.interval, leg.session_timer.refresher) == (90, "uac")  # the daemon's 200
            loop_time = server.loop.time
            # Three refreshes (at 45, 90, 135 s) keep the call up well past one interval.
            await asyncio.sleep(150.0)
            assert caller.end is None and len(server.calls) == 1
            refreshed = leg.dialog.local_cseq if leg.dialog is not None else 0
            # The caller vanishes: no more refreshes (its endpoint's session timer stops; nothing else changes).
            endpoint = caller._endpoint
            assert endpoint is not None
            endpoint._stop_session_timer(leg)
            stopped = loop_time()
            ended = await caller.wait_hangup(200.0)
            lasted = loop_time() - stopped
            await call.finish()
            while server.calls or server.cdr.backlog:  # noqa: ASYNC110 (the store has no event to wait on)
                await asyncio.sleep(0.05)
            (record,) = await server.cdr.fetch()
            return ended.reason, lasted, stopped, record.end_reason, refreshed

    reason, lasted, stopped, recorded, refreshed = run_virtual(main)
    assert refreshed >= 4  # the INVITE (CSeq 1) and three refresh re-INVITEs
    assert reason is EndReason.REMOTE_BYE  # the daemon's BYE
    # The last refresh was at 135 s (into the call); its expiry 60 s later, i.e. about 45 s after the caller stopped.
    assert 40.0 <= lasted <= 50.0, (lasted, stopped)
    assert recorded == "session_expired"
