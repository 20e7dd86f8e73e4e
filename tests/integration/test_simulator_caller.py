"""The simulated caller (SimCaller) against the daemon in-process on loopback, and prompt fingerprinting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ivr.daemon.server import IvrServer
from ivr.media.prompts import Prompt, load_prompt
from ivr.simulator.caller import CallFailed, SimCaller
from ivr.simulator.fingerprint import HeardPrompt, identify_prompts
from ivr.sip.endpoint import EndReason, LegState
from tests.integration.test_server import REPO, start_server

WELCOME = REPO / "configs" / "prompts" / "en" / "welcome.wav"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[IvrServer]:
    srv = await start_server({"cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}", "admin.listen": None, "routes": []})
    try:
        yield srv
    finally:
        await srv.close()


def _target(server: IvrServer, user: str = "2000") -> str:
    return f"sip:{user}@127.0.0.1:{server.config.sip.port}"


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_caller_hears_the_welcome_prompt_complete_then_gets_the_daemons_bye(server: IvrServer) -> None:
    welcome = load_prompt("welcome", WELCOME)
    async with SimCaller() as caller:
        answered = await caller.dial(_target(server))
        assert answered.response.status == 200
        assert caller.media is not None and caller.media.codec.name == "PCMU"
        ended = await caller.wait_hangup(welcome.duration + 3.0)
        assert ended.reason is EndReason.REMOTE_BYE
        assert identify_prompts(caller.heard_frames, {"welcome": welcome}) == [
            HeardPrompt("welcome", 0, len(welcome.frames("PCMU")), True)
        ]
    await _until(lambda: not server.calls and server.ports.in_use == 0)


async def test_keys_pressed_by_rfc4733_and_info_reach_the_daemons_call(server: IvrServer) -> None:
    assert server.config.calls.hangup_after_prompt
    welcome = load_prompt("welcome", WELCOME)
    async with SimCaller() as caller:
        await caller.dial(_target(server), codecs=("PCMA", "PCMU"))
        assert caller.media is not None and caller.media.codec.name == "PCMA"
        assert caller.media.telephone_event_pt is not None
        (active,) = server.calls.values()
        await caller.press("1")
        await caller.press("2", method="info")
        await _until(lambda: active.call.digits_by_source == {"rfc4733": 1, "info": 1}, timeout=2.0)
        assert active.leg in server.calls
        ended = await caller.wait_hangup(welcome.duration + 3.0)
        assert ended.reason is EndReason.REMOTE_BYE
        heard = identify_prompts(caller.heard_frames, {"welcome": welcome}, "PCMA")
        assert [(h.name, h.complete) for h in heard] == [("welcome", True)]


async def test_inband_tones_are_heard_when_no_telephone_event_was_offered(server: IvrServer) -> None:
    async with SimCaller() as caller:
        await caller.dial(_target(server), telephone_event=False)
        assert caller.media is not None and caller.media.telephone_event_pt is None
        (active,) = server.calls.values()
        await caller.press("55", method="inband")
        await _until(lambda: active.call.digits_by_source == {"inband": 2}, timeout=2.0)


async def test_caller_hangs_up_first_and_the_daemon_tears_the_call_down(server: IvrServer) -> None:
    async with SimCaller() as caller:
        await caller.dial(_target(server))
        await _until(lambda: len(caller.heard_frames) >= 5)
        ended = await caller.hangup()
        assert ended.reason is EndReason.LOCAL_BYE
        assert caller.leg is not None and caller.leg.state is LegState.ENDED  # the daemon answered our BYE
        welcome = load_prompt("welcome", WELCOME)
        (heard,) = identify_prompts(caller.heard_frames, {"welcome": welcome})
        assert heard.name == "welcome" and not heard.complete
    await _until(lambda: not server.calls and server.ports.in_use == 0)


async def test_a_refused_call_raises_call_failed_with_the_status(server: IvrServer) -> None:
    server.drain()  # new INVITEs get 503
    async with SimCaller() as caller:
        with pytest.raises(CallFailed) as failed:
            await caller.dial(_target(server))
        assert failed.value.status == 503
        assert caller.stream is None


# ---- fingerprinting, on synthetic prompts (no sockets) ----


def _tone(name: str, hz: float, seconds: float) -> Prompt:
    t = np.arange(int(seconds * 8000)) / 8000.0
    return Prompt(name, (np.sin(2 * np.pi * hz * t) * (4000 + hz)).astype(np.int16))


def _prompts() -> dict[str, Prompt]:
    # Leading silence shared by both prompts: ambiguous frames that must not be mistaken for either.
    silence = np.zeros(800, dtype=np.int16)
    a = _tone("a", 440.0, 0.5)
    b = _tone("b", 697.0, 0.4)
    return {
        "a": Prompt("a", np.concatenate([silence, a.pcm])),
        "b": Prompt("b", np.concatenate([silence, b.pcm])),
    }


def test_prompts_are_identified_in_order_with_unknown_frames_between_them() -> None:
    prompts = _prompts()
    a, b = prompts["a"].frames("PCMU"), prompts["b"].frames("PCMU")
    noise = [bytes([n]) * 160 for n in range(3)]
    received = [*noise, *b, *noise[:1], *a, *b]
    assert identify_prompts(received, prompts) == [
        HeardPrompt("b", 3, len(b), True),
        HeardPrompt("a", 4 + len(b), len(a), True),
        HeardPrompt("b", 4 + len(b) + len(a), len(b), True),
    ]


def test_lost_frames_do_not_split_a_prompt_and_barge_in_makes_it_incomplete() -> None:
    prompts = _prompts()
    a, b = prompts["a"].frames("PCMU"), prompts["b"].frames("PCMU")
    lossy = [frame for n, frame in enumerate(a) if n not in (0, 9, 20, 21)]  # first frame lost too
    cut = list(b[:12])  # barge-in: b stopped after 12 frames, then a played
    assert identify_prompts([*lossy, *cut, *a], prompts) == [
        HeardPrompt("a", 0, len(lossy), True),
        HeardPrompt("b", len(lossy), 12, False),
        HeardPrompt("a", len(lossy) + 12, len(a), True),
    ]
    # more consecutive losses than max_gap: two runs, neither complete
    gap = [*a[:15], *a[19:]]
    assert [(h.name, h.complete) for h in identify_prompts(gap, prompts, max_gap=2)] == [("a", False), ("a", False)]


def test_only_shared_silence_is_not_reported_as_a_prompt() -> None:
    prompts = _prompts()
    silence = prompts["a"].frames("PCMU")[:5]
    assert identify_prompts(list(silence), prompts) == []
    assert identify_prompts(list(prompts["a"].frames("PCMA")), prompts, "PCMA")[0].complete
