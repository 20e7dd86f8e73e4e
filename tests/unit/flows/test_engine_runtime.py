"""The engine's runtime pieces: the virtual-time loop the tests stand on, the HTTP fixture client, the loop wall
clock, audio parts, trace events, and the engine driving the real ``ivr.call.Call`` door (no sockets)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fake_call import FakeRecorder
from virtual_loop import VirtualDeadlock, run_virtual

from ivr.call import Call, PlayOutcome
from ivr.flows.engine import FlowEngine
from ivr.flows.loader import load_flow_tree
from ivr.flows.prompt_sources import PromptSource
from ivr.flows.runtime import (
    AudioPart,
    FixtureHttpClient,
    FixtureResponse,
    HandoffResult,
    HttpError,
    PlayResult,
    TraceEvent,
    TraceLog,
    loop_wall_clock,
)
from ivr.media.prompts import Prompt

FLOWS = Path(__file__).resolve().parents[3] / "configs" / "flows"

# ---- the virtual loop -------------------------------------------------------------------------------------------


def test_virtual_loop_jumps_to_the_next_timer_and_keeps_their_order() -> None:
    async def main() -> tuple[list[tuple[str, float]], float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fired: list[tuple[str, float]] = []
        loop.call_later(5.0, lambda: fired.append(("b", loop.time() - t0)))
        loop.call_later(2.0, lambda: fired.append(("a", loop.time() - t0)))
        queue: asyncio.Queue[str] = asyncio.Queue()
        loop.call_later(30.0, queue.put_nowait, "late")
        try:
            await asyncio.wait_for(queue.get(), 10.0)
        except TimeoutError:
            fired.append(("timeout", loop.time() - t0))
        fired.append((await queue.get(), loop.time() - t0))
        await asyncio.sleep(3600)
        return fired, loop.time() - t0

    fired, total = run_virtual(main)
    assert fired == [("a", 2.0), ("b", 5.0), ("timeout", 10.0), ("late", 30.0)]
    assert total == 3630.0


def test_virtual_loop_reports_a_wait_that_can_never_end() -> None:
    async def forever() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(VirtualDeadlock):
        run_virtual(forever, idle_limit=0.05)


# ---- HTTP fixtures ----------------------------------------------------------------------------------------------


def test_fixture_client_matches_url_templates_and_fills_in_what_they_captured() -> None:
    http = FixtureHttpClient({
        "GET https://crm.example.bg/api/accounts/{account}": {"json": {"id": "{account}", "n": 1}},
        "GET https://crm.example.bg/search?q={q}": FixtureResponse(201, {"q": "{q}"}),
    })  # fmt: skip

    async def main() -> list[Any]:
        return [
            await http.request("GET", "https://crm.example.bg/api/accounts/0888%20123?lang=bg", json=None, headers={},
                               timeout=3.0),
            await http.request("GET", "https://crm.example.bg/search?q=abc", json=None, headers={}, timeout=3.0),
            await http.request("POST", "https://crm.example.bg/api/accounts/1", json={}, headers={}, timeout=3.0),
            await http.request("GET", "https://crm.example.bg/api/accounts/1/orders", json=None, headers={},
                               timeout=3.0),
        ]  # fmt: skip

    found, search, wrong_method, deeper = run_virtual(main)
    assert (found.status, found.json) == (200, {"id": "0888 123", "n": 1})
    assert (search.status, search.json) == (201, {"q": "abc"})
    assert wrong_method.status == 404 and deeper.status == 404
    assert [r.method for r in http.requests] == ["GET", "GET", "POST", "GET"]


def test_fixture_client_delays_on_the_loop_clock_and_gives_up_at_the_timeout() -> None:
    http = FixtureHttpClient({"GET http://x/slow": {"delay": "2s", "json": 1}, "GET http://x/dead": {"delay": "9s"},
                              "GET http://x/refused": {"error": "connection refused"}})  # fmt: skip

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out: list[Any] = [(await http.request("GET", "http://x/slow", json=None, headers={}, timeout=3.0)).json]
        out.append(loop.time() - t0)
        for path in ("dead", "refused"):
            try:
                await http.request("GET", f"http://x/{path}", json=None, headers={}, timeout=3.0)
            except HttpError as exc:
                out.append((str(exc), loop.time() - t0))
        return out

    assert run_virtual(main) == [1, 2.0, ("no answer within 3s", 5.0), ("connection refused", 5.0)]


def test_fixture_response_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="stauts"):
        FixtureResponse.of({"stauts": 200})


# ---- wall clock, audio parts, trace -----------------------------------------------------------------------------


def test_loop_wall_clock_advances_with_virtual_time() -> None:
    start = dt.datetime(2027, 3, 3, 9, 59, tzinfo=ZoneInfo("Europe/Sofia"))

    async def main() -> tuple[dt.datetime, dt.datetime]:
        now = loop_wall_clock(start)
        first = now()
        await asyncio.sleep(90)
        return first, now()

    first, later = run_virtual(main)
    assert first == start and later == start + dt.timedelta(seconds=90)
    with pytest.raises(ValueError, match="aware"):
        loop_wall_clock(dt.datetime(2027, 3, 3, 10, 0))


def test_audio_parts_name_their_audio() -> None:
    source = PromptSource("welcome", "bg", "en", "text", text="Здравейте", voice="bg")
    part = AudioPart.from_prompt(source)
    assert (str(part), part.key, part.language) == ("welcome@bg", source.cache_key, "bg")
    word = AudioPart.spoken("en", "seven", "en-gb")
    assert (str(word), word.key) == ("seven", "word.en-gb.seven")
    assert AudioPart.silence(0.3).key == "pause.300ms"


def test_trace_events_are_plain_data() -> None:
    event = TraceEvent(12.5, "input", "menu", {"key": "1"}, "c-1", "main")
    assert event.as_dict() == {"t": 12.5, "kind": "input", "node": "menu", "flow": "main", "call_id": "c-1", "key": "1"}


def test_play_results_are_the_call_doors_play_outcomes() -> None:
    assert {r.value for r in PlayResult} == {o.value for o in PlayOutcome}
    assert all(PlayResult(o) == o for o in PlayOutcome)


# ---- the real Call door -----------------------------------------------------------------------------------------


class PacedMedia:
    """Stands in for MediaStream: a playback lasts 20 ms per frame on the loop's clock."""

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None

    def play(self, frames: Sequence[bytes], *, loop: bool = False, on_done: Callable[[], None] | None = None) -> None:
        self.stop_playback()
        if on_done is not None:
            self.timer = asyncio.get_running_loop().call_later(len(frames) * 0.02, on_done)

    def stop_playback(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Control:
    def __init__(self) -> None:
        self.hangups = 0

    def hangup_call(self, call: Call) -> None:
        self.hangups += 1
        call._end("local_bye")


class SilencePlayer:
    """Composes parts into a real Prompt of silence, 1 s per prompt and 0.25 s per word."""

    def compose(self, parts: Sequence[AudioPart]) -> Prompt:
        seconds = sum(p.seconds if p.kind == "pause" else 0.25 if p.kind == "word" else 1.0 for p in parts)
        return Prompt("+".join(str(p) for p in parts), np.zeros(int(seconds * 8000), dtype=np.int16))


class CallHandoff:
    def __init__(self) -> None:
        self.transfers: list[tuple[str, dict[str, str]]] = []

    async def transfer(self, call: Call, queue: str, data: dict[str, str]) -> HandoffResult:
        self.transfers.append((queue, data))
        return HandoffResult(True)


def test_the_engine_drives_the_real_call_door_through_the_billing_path() -> None:
    tree = load_flow_tree(FLOWS / "main.yaml")
    trace = TraceLog()
    handoff = CallHandoff()
    engine: FlowEngine[Prompt, Call] = FlowEngine(
        tree, player=SilencePlayer(), handoff=handoff, recorder=FakeRecorder(),  # type: ignore[arg-type]
        http=FixtureHttpClient(), trace=trace,
        now=lambda: dt.datetime(2027, 3, 4, 10, 0, tzinfo=ZoneInfo("Europe/Sofia")),
    )  # fmt: skip
    control = Control()

    async def main() -> Any:
        call = Call(call_id="c-7", caller="+359888123456", dialled="070010100", codec="PCMU", media=PacedMedia(),
                    control=control)  # fmt: skip
        loop = asyncio.get_running_loop()
        # welcome 0-1, language menu 1-3 (barged in at 1.5 by "2"), main menu in English (barged in by "1"),
        # the account typed during its prompt, the read-back confirmed with "1".
        for at, key in [(1.5, "2"), (2.0, "1"), (3.0, "1"), (3.2, "2"), (3.4, "3"), (3.6, "4"), (3.8, "5"),
                        (4.0, "6"), (4.2, "#"), (4.5, "1")]:  # fmt: skip
            loop.call_later(at, call.key, key)
        return await engine.run(call), call

    outcome, call = run_virtual(main)
    assert (outcome.kind, outcome.queue) == ("queued", "billing")
    assert handoff.transfers == [("billing", {"account": "123456", "language": "en", "intent": "billing"})]
    assert call.prompts_played[0] == "welcome" and call.prompts_played[-1] == "connecting"
    assert control.hangups == 0


def test_the_real_call_door_hang_up_ends_the_run_as_caller_hangup() -> None:
    tree = load_flow_tree(FLOWS / "main.yaml")
    engine: FlowEngine[Prompt, Call] = FlowEngine(
        tree, player=SilencePlayer(), handoff=CallHandoff(), recorder=FakeRecorder(),  # type: ignore[arg-type]
        http=FixtureHttpClient(), now=lambda: dt.datetime(2027, 3, 4, 10, 0, tzinfo=ZoneInfo("Europe/Sofia")),
    )  # fmt: skip
    control = Control()

    async def main() -> Any:
        call = Call(call_id="c-8", caller="x", dialled="y", codec="PCMA", media=PacedMedia(), control=control)
        asyncio.get_running_loop().call_later(6.0, call._end, "caller_bye")  # while waiting for 1 or 2
        return await engine.run(call)

    outcome = run_virtual(main)
    assert outcome.kind == "caller_hangup" and outcome.node == "choose-language" and control.hangups == 0
