"""Recording: frames to WAV through the writer thread; stop on max length, a key, silence; never blocking."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from ivr.media.jitterbuffer import Pcm
from ivr.media.recorder import Recording, RecordingResult, RecordingWriter


def loud_frames(n: int, seed: int = 0) -> list[Pcm]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        frame = rng.integers(-8000, 8000, 160).astype(np.int16)
        frame.flags.writeable = False
        frames.append(frame)
    return frames


def quiet_frames(n: int) -> list[Pcm]:
    return [np.zeros(160, dtype=np.int16) for _ in range(n)]


def wav(path: Path) -> npt.NDArray[np.int16]:
    data, rate = soundfile.read(str(path), dtype="int16")
    assert rate == 8000
    return np.asarray(data, dtype=np.int16)


@pytest.fixture
def writer() -> RecordingWriter:
    writer = RecordingWriter()
    yield writer
    writer.close(timeout=5)


def run(coro: Callable[[], object]) -> RecordingResult:
    return asyncio.run(asyncio.wait_for(coro(), 10))  # type: ignore[arg-type]


def test_max_length_keeps_exactly_that_much_audio(writer: RecordingWriter, tmp_path: Path) -> None:
    frames = loud_frames(150)

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "a.wav", max_seconds=1.0, silence_seconds=None)
        for frame in frames:
            rec.feed(frame)
        return await rec.wait()

    result = run(scenario)
    assert result.stop_reason == "max_length" and result.duration == pytest.approx(1.0)
    assert np.array_equal(wav(tmp_path / "a.wav"), np.concatenate(frames[:50]))


def test_stop_key_ends_the_recording_and_keeps_everything_before_it(writer: RecordingWriter, tmp_path: Path) -> None:
    frames = loud_frames(25)

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "b.wav", stop_keys="#*")
        for frame in frames:
            rec.feed(frame)
        assert rec.digit("1") is False  # not a stop key
        assert rec.digit("#") is True
        assert rec.stopped and rec.digit("*") is False
        rec.feed(frames[0])  # ignored after the stop
        return await rec.wait()

    result = run(scenario)
    assert (result.stop_reason, result.digit) == ("dtmf", "#")
    assert np.array_equal(wav(tmp_path / "b.wav"), np.concatenate(frames))


def test_an_in_band_stop_key_leaves_its_tone_out(writer: RecordingWriter, tmp_path: Path) -> None:
    frames = loud_frames(25)

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "c.wav")
        for frame in frames:
            rec.feed(frame)
        rec.digit("#", "inband")
        return await rec.wait()

    result = run(scenario)
    assert result.stop_reason == "dtmf" and result.duration == pytest.approx(22 * 0.020)
    assert np.array_equal(wav(tmp_path / "c.wav"), np.concatenate(frames[:22]))


def test_silence_stops_the_recording_and_is_trimmed(writer: RecordingWriter, tmp_path: Path) -> None:
    speech = loud_frames(30)

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "d.wav", silence_seconds=1.0)
        for frame in speech + quiet_frames(10) + speech[:5] + quiet_frames(60):
            rec.feed(frame)
        assert rec.stopped
        return await rec.wait()

    result = run(scenario)
    assert result.stop_reason == "silence"
    # The short pause inside is kept, the final second of silence is not.
    assert np.array_equal(wav(tmp_path / "d.wav"), np.concatenate(speech + quiet_frames(10) + speech[:5]))


def test_no_audio_at_all_counts_as_silence(writer: RecordingWriter, tmp_path: Path) -> None:
    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "e.wav", silence_seconds=0.3, max_seconds=10)
        for frame in loud_frames(5):
            rec.feed(frame)
        return await rec.wait()  # the caller sends nothing more (silence suppression)

    started = time.monotonic()
    result = run(scenario)
    assert result.stop_reason == "silence" and result.duration == pytest.approx(0.1)
    assert time.monotonic() - started < 2.0


def test_max_length_also_ends_a_recording_that_gets_no_audio(writer: RecordingWriter, tmp_path: Path) -> None:
    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "f.wav", max_seconds=0.2, silence_seconds=None)
        return await rec.wait()

    result = run(scenario)
    assert result.stop_reason == "max_length" and result.duration == 0.0
    assert len(wav(tmp_path / "f.wav")) == 0


def test_a_stuck_writer_never_blocks_the_loop_and_the_overflow_is_counted(tmp_path: Path) -> None:
    writer = RecordingWriter(max_queued_frames=5)
    release = threading.Event()
    original = writer._run

    def stuck() -> None:
        release.wait(10)
        original()

    writer._run = stuck  # type: ignore[method-assign]

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "g.wav", silence_seconds=None)
        frames = loud_frames(40)
        started = time.perf_counter()
        for frame in frames:
            rec.feed(frame)
        rec.stop()
        assert time.perf_counter() - started < 0.05  # 40 frames queued or dropped, nothing waited
        release.set()
        return await rec.wait()

    try:
        result = run(scenario)
    finally:
        release.set()
        writer.close(timeout=5)
    assert result.stop_reason == "stopped" and result.frames_dropped == 35
    assert result.duration == pytest.approx(5 * 0.020)


def test_an_unwritable_path_gives_an_error_result(writer: RecordingWriter, tmp_path: Path) -> None:
    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "missing" / "h.wav")
        for frame in loud_frames(5):
            rec.feed(frame)
        rec.stop()
        return await rec.wait()

    result = run(scenario)
    assert result.stop_reason == "error" and result.error is not None and "missing" in result.error


def test_a_source_gets_the_recording_as_consumer_until_it_stops(writer: RecordingWriter, tmp_path: Path) -> None:
    class Source:
        def __init__(self) -> None:
            self.consumers: list[Callable[[Pcm], None]] = []

        def add_audio_consumer(self, consumer: Callable[[Pcm], None]) -> None:
            self.consumers.append(consumer)

        def remove_audio_consumer(self, consumer: Callable[[Pcm], None]) -> None:
            self.consumers.remove(consumer)

    source = Source()

    async def scenario() -> RecordingResult:
        rec = Recording(writer, tmp_path / "i.wav", source=source)
        assert len(source.consumers) == 1
        for frame in loud_frames(10):
            for consumer in list(source.consumers):
                consumer(frame)
        rec.stop()
        rec.stop()
        assert source.consumers == []
        return await rec.wait()

    assert run(scenario).duration == pytest.approx(0.2)


def test_bad_limits_are_refused(writer: RecordingWriter, tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError):
            Recording(writer, tmp_path / "x.wav", max_seconds=0)
        with pytest.raises(ValueError):
            Recording(writer, tmp_path / "x.wav", silence_seconds=0)

    asyncio.run(scenario())
