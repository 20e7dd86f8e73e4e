"""A caller who vanishes is noticed: with ``media.rtp_timeout`` set, a call whose caller sends no RTP for that long
is ended with BYE and its record says ``rtp_timeout``; a caller who keeps sending audio is left alone; a held call
follows ``media.rtp_hold_timeout`` instead. On virtual time against the simulated caller."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import numpy as np

from ivr.media.prompts import Prompt
from ivr.simulator.lab import IvrLab
from ivr.simulator.virtual import run_virtual
from ivr.sip.endpoint import EndReason

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
    timeout: 20s
    no_input: {tries: 5}
    no_match: {tries: 1}
    failure: bye
  bye: {type: hangup, prompt: bye}
"""


def _config(tmp_path: Path, rtp_timeout: float) -> Path:
    (tmp_path / "wait.yaml").write_text(FLOW)
    welcome = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "en" / "welcome.wav"
    config = tmp_path / "ivr.yaml"
    config.write_text(
        f"routes:\n  - {{client: lab, numbers: ['*'], flow: wait.yaml}}\n"
        f"queues: null\ncalls: {{welcome_prompt: {welcome}}}\nmedia: {{rtp_timeout: {rtp_timeout}}}\n"
    )
    return config


def _ended(config: Path, *, send_audio: bool) -> tuple[EndReason, float, str | None]:
    async def main() -> tuple[EndReason, float, str | None]:
        async with IvrLab(config=config) as lab:
            call = await lab.call("100", at=dt.datetime(2026, 11, 24, 10, 0))
            caller = call.caller
            stream = caller.stream
            assert stream is not None
            if send_audio:  # a phone line's silence: RTP all the time
                silence = Prompt("silence", np.zeros(1600, dtype=np.int16))
                stream.play(silence.frames(stream.codec), loop=True)
            loop_time = lab.server.loop.time if lab.server is not None else None
            assert loop_time is not None
            started = loop_time()
            ended = await caller.wait_hangup(200.0)
            lasted = loop_time() - started
            await call.finish()
            server = lab.server
            assert server is not None and server.cdr is not None
            while server.calls or server.cdr.backlog:  # noqa: ASYNC110 (the store has no event to wait on)
                await asyncio.sleep(0.05)
            (record,) = await server.cdr.fetch()
            return ended.reason, lasted, record.end_reason

    result: tuple[EndReason, float, str | None] = run_virtual(main)
    return result


def test_a_silent_caller_is_hung_up_after_the_rtp_timeout(tmp_path: Path) -> None:
    reason, lasted, recorded = _ended(_config(tmp_path, 10.0), send_audio=False)
    assert reason is EndReason.REMOTE_BYE  # the daemon's BYE
    assert 10.0 <= lasted <= 13.0  # the timeout, plus at most one check interval
    assert recorded == "rtp_timeout"


def test_a_caller_who_sends_audio_is_not_hung_up_by_the_timeout(tmp_path: Path) -> None:
    reason, lasted, recorded = _ended(_config(tmp_path, 10.0), send_audio=True)
    assert reason is EndReason.REMOTE_BYE
    assert lasted > 100.0  # the menu's five 20 s waits, then goodbye: the flow ended the call, not the timeout
    assert recorded == "local_bye"
