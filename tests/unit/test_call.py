"""The Call door: play, barge-in, digits, hang-up, against a media stand-in that records what it was told."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

from ivr.call import MAX_PENDING_INPUTS, Call, PlayOutcome
from ivr.flows.runtime import CallHungUp, KeyPressed, WordsHeard
from ivr.media.prompts import Prompt


class RecordingMedia:
    """Stands in for MediaStream: finishes a playback when the test says so."""

    def __init__(self) -> None:
        self.played: list[int] = []
        self.stops = 0
        self.on_done: Callable[[], None] | None = None

    def play(self, frames: Sequence[bytes], *, loop: bool = False, on_done: Callable[[], None] | None = None) -> None:
        self.played.append(len(frames))
        self.on_done = on_done

    def stop_playback(self) -> None:
        self.stops += 1
        self.on_done = None

    def finish(self) -> None:
        assert self.on_done is not None
        self.on_done()


class Control:
    def __init__(self) -> None:
        self.hangups = 0

    def hangup_call(self, call: Call) -> None:
        self.hangups += 1
        call._end("local_bye")


def make_call() -> tuple[Call, RecordingMedia, Control]:
    media, control = RecordingMedia(), Control()
    call = Call(call_id="c", caller="0888", dialled="2000", codec="PCMU", media=media, control=control)
    return call, media, control


PROMPT = Prompt("menu", np.zeros(8000, dtype=np.int16))


async def test_play_completes_when_every_frame_was_sent() -> None:
    call, media, _ = make_call()
    task = asyncio.create_task(call.play(PROMPT))
    await asyncio.sleep(0)
    assert media.played == [50]
    media.finish()
    assert await task is PlayOutcome.COMPLETED
    assert call.prompts_played == ["menu"]


async def test_key_during_barge_in_prompt_stops_it_and_is_not_lost() -> None:
    call, media, _ = make_call()
    task = asyncio.create_task(call.play(PROMPT, barge_in=True))
    await asyncio.sleep(0)
    call.key("5")
    assert await task is PlayOutcome.BARGED_IN
    assert media.stops == 1
    assert await call.next_event(0.1) == KeyPressed("5", "rfc4733")


async def test_key_during_prompt_without_barge_in_waits_for_the_prompt_end() -> None:
    call, media, _ = make_call()
    task = asyncio.create_task(call.play(PROMPT, barge_in=False))
    await asyncio.sleep(0)
    call.key("7", "info")
    await asyncio.sleep(0)
    assert not task.done()
    media.finish()
    assert await task is PlayOutcome.COMPLETED
    assert await call.next_event(0.1) == KeyPressed("7", "info")
    assert call.digits_by_source == {"info": 1}


async def test_waiting_key_skips_a_barge_in_prompt() -> None:
    call, media, _ = make_call()
    call.key("1")
    assert await call.play(PROMPT, barge_in=True) is PlayOutcome.BARGED_IN
    assert media.played == []


async def test_hangup_during_prompt_returns_hangup_and_queues_the_event() -> None:
    call, _, _ = make_call()
    task = asyncio.create_task(call.play(PROMPT))
    await asyncio.sleep(0)
    call._end("remote_bye")
    assert await task is PlayOutcome.HANGUP
    assert await call.next_event(0.1) == CallHungUp("remote_bye")
    assert await call.play(PROMPT) is PlayOutcome.HANGUP
    call.key("1")
    assert await call.next_event(0.01) is None  # no digits after the end


async def test_hangup_verb_asks_the_controller_once() -> None:
    call, _, control = make_call()
    await call.hangup()
    await call.hangup()
    assert control.hangups == 1 and call.ended


async def test_next_event_times_out_with_none() -> None:
    call, _, _ = make_call()
    assert await call.next_event(0.01) is None


async def test_next_event_with_zero_timeout_returns_what_is_waiting() -> None:
    call, _, _ = make_call()
    call.key("9")
    assert await call.next_event(0) == KeyPressed("9", "rfc4733")
    assert await call.next_event(0) is None


async def test_unread_keys_are_bounded_the_oldest_dropped_and_counted() -> None:
    call, _, control = make_call()
    keys = "0123456789*#ABCD"
    for i in range(10_000):  # an RFC 4733 flood that no menu reads
        call.key(keys[i % len(keys)])
    call.hear(WordsHeard("agent"))
    assert call._events.qsize() == MAX_PENDING_INPUTS == 64
    assert call.inputs_dropped == 10_001 - MAX_PENDING_INPUTS
    assert call.digits_by_source == {"rfc4733": 10_000}  # every key was still heard and counted
    assert not call.ended and control.hangups == 0
    first = await call.next_event(0)
    assert first == KeyPressed(keys[(10_000 - MAX_PENDING_INPUTS + 1) % len(keys)], "rfc4733")  # the newest 64 stay
    read = [await call.next_event(0) for _ in range(MAX_PENDING_INPUTS - 1)]
    assert read[-1] == WordsHeard("agent")
    assert await call.next_event(0) is None


async def test_a_full_queue_still_gets_the_hang_up() -> None:
    call, _, _ = make_call()
    for _ in range(MAX_PENDING_INPUTS + 5):
        call.key("1")
    call._end("remote_bye")
    events = [await call.next_event(0) for _ in range(MAX_PENDING_INPUTS + 1)]
    assert events[-1] == CallHungUp("remote_bye")
    assert call.inputs_dropped == 5
