"""The in-band DTMF detector on tones generated with numpy, through real G.711 round trips, at the Q.24 limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import soxr

from ivr.media import g711
from ivr.media.digits import DigitEvent
from ivr.media.dtmf_inband import DBM0_AMPLITUDE, InbandDtmfDetector, dtmf_tone

ALL_KEYS = "0123456789*#ABCD"
BARESIP_SOUNDS = Path("/usr/share/baresip")


def line(signal: npt.NDArray[np.float64], codec: str = "PCMU") -> npt.NDArray[np.int16]:
    """The signal as it arrives after a G.711 round trip."""
    pcm = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return g711.decode(codec, g711.encode(codec, pcm))


def keyed(
    keys: str, on: float = 0.05, off: float = 0.05, *, lead: float = 0.1, **tone: float
) -> npt.NDArray[np.float64]:
    parts = [np.zeros(round(lead * 8000))]
    for key in keys:
        parts += [dtmf_tone(key, on, **tone), np.zeros(round(off * 8000))]
    return np.concatenate(parts)


def detect(pcm: npt.NDArray[np.int16], detector: InbandDtmfDetector | None = None) -> list[DigitEvent]:
    detector = detector or InbandDtmfDetector()
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % 160 + 480, dtype=np.int16)])
    events: list[DigitEvent] = []
    for i in range(0, len(pcm), 160):
        started, _ = detector.feed(pcm[i : i + 160])
        if started is not None:
            events.append(started)
    detector.flush()
    return events


def keys_of(events: list[DigitEvent]) -> str:
    return "".join(e.key for e in events)


def noise_like(
    signal: npt.NDArray[np.float64], fraction: float, seed: int = 0, level_dbm0: float = -10.0
) -> npt.NDArray[np.float64]:
    """White noise with an RMS of ``fraction`` of the RMS of a key's two tones at ``level_dbm0`` each."""
    rms = float(np.sqrt(np.mean(dtmf_tone("5", 1.0, level_dbm0=level_dbm0) ** 2)))
    return np.random.default_rng(seed).normal(0.0, fraction * rms, len(signal))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_long_sequence_at_50ms_on_50ms_off_gives_every_digit_once(codec: str) -> None:
    events = detect(line(keyed("0888123456#"), codec))
    assert keys_of(events) == "0888123456#"
    assert all(e.source == "inband" and e.ended for e in events)


def test_every_key_at_minus_10_dbm0_with_its_level_and_duration() -> None:
    events = detect(line(keyed(ALL_KEYS, on=0.1, off=0.1, level_dbm0=-10.0)))
    assert keys_of(events) == ALL_KEYS
    assert {e.volume for e in events} == {10}  # each tone at -10 dBm0
    assert all(abs(e.duration_ms - 100) <= 10 for e in events)


@pytest.mark.parametrize("twist", [4.0, -8.0])
@pytest.mark.parametrize("weaker_tone_dbm0", [-25.0, -10.0])
def test_q24_twist_limits_are_detected(twist: float, weaker_tone_dbm0: float) -> None:
    level = weaker_tone_dbm0 + abs(twist) / 2  # the weaker of the two tones is at weaker_tone_dbm0
    assert keys_of(detect(line(keyed(ALL_KEYS, level_dbm0=level, twist_db=twist)))) == ALL_KEYS


@pytest.mark.parametrize("twist", [12.0, -14.0])
def test_twist_far_beyond_the_limits_is_not_a_digit(twist: float) -> None:
    assert detect(line(keyed(ALL_KEYS, level_dbm0=-8.0, twist_db=twist))) == []


def test_loud_tones_near_overload_are_detected() -> None:
    assert keys_of(detect(line(keyed(ALL_KEYS, level_dbm0=-3.0)))) == ALL_KEYS


def test_tones_below_the_sensitivity_are_ignored() -> None:
    assert detect(line(keyed(ALL_KEYS, level_dbm0=-40.0))) == []


@pytest.mark.parametrize("error", [0.015, -0.015])
def test_frequencies_off_by_the_q24_tolerance_are_detected(error: float) -> None:
    assert keys_of(detect(line(keyed(ALL_KEYS, frequency_error=error)))) == ALL_KEYS


@pytest.mark.parametrize("error", [0.035, -0.035])
def test_frequencies_off_by_more_than_3_5_percent_are_not_a_digit(error: float) -> None:
    assert detect(line(keyed(ALL_KEYS, frequency_error=error))) == []


@pytest.mark.parametrize("fraction", [0.05, 0.20])
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_noisy_line_still_gives_every_digit_once(fraction: float, codec: str) -> None:
    signal = keyed("0888123456#*ABCD", level_dbm0=-10.0)
    assert keys_of(detect(line(signal + noise_like(signal, fraction), codec))) == "0888123456#*ABCD"


def test_noise_at_the_limits_twist_and_short_pauses_together() -> None:
    for seed, twist in enumerate((4.0, -8.0)):
        signal = keyed(ALL_KEYS, on=0.045, off=0.045, level_dbm0=-20.0, twist_db=twist)
        assert keys_of(detect(line(signal + noise_like(signal, 0.2, seed, level_dbm0=-20.0)))) == ALL_KEYS


def test_40ms_tones_with_40ms_pauses_are_each_heard_once() -> None:
    for phase in (0.0, 1.0, 2.0):  # any alignment against the 10 ms analysis grid
        signal = keyed("159#", on=0.040, off=0.040, lead=0.1 + phase * 0.0033)
        assert keys_of(detect(line(signal))) == "159#"


def test_tones_shorter_than_20ms_are_not_digits() -> None:
    assert detect(line(keyed(ALL_KEYS, on=0.018, off=0.1))) == []


def test_a_10ms_dropout_inside_a_tone_does_not_split_it() -> None:
    tone = dtmf_tone("7", 0.2)
    tone[800:880] = 0.0  # 10 ms of nothing in the middle
    assert keys_of(detect(line(np.concatenate([np.zeros(800), tone, np.zeros(800)])))) == "7"


def test_a_press_is_announced_at_its_start_and_ended_when_the_tone_stops() -> None:
    detector = InbandDtmfDetector()
    pcm = line(np.concatenate([dtmf_tone("5", 0.3), np.zeros(2400)]))
    started_at = ended_at = None
    digit: DigitEvent | None = None
    for n, i in enumerate(range(0, len(pcm), 160)):
        started, ended = detector.feed(pcm[i : i + 160])
        if started is not None:
            digit, started_at = started, n
            assert not started.ended
        if ended is not None:
            assert ended is digit
            ended_at = n
    assert started_at is not None and started_at <= 2  # within 40 ms of the tone's start
    assert ended_at is not None and 15 <= ended_at <= 17  # the tone ends after 15 frames
    assert digit is not None and digit.ended and abs(digit.duration_ms - 300) <= 10


def test_the_same_key_held_across_frames_is_one_press_and_pressed_again_is_two() -> None:
    signal = np.concatenate([dtmf_tone("9", 1.0), np.zeros(400), dtmf_tone("9", 0.06)])
    assert keys_of(detect(line(signal))) == "99"


def test_speech_band_noise_and_single_tones_make_no_digits() -> None:
    rng = np.random.default_rng(11)
    t = np.arange(8000 * 3) / 8000
    loud_noise = rng.normal(0, 6000, len(t))
    single = 8000 * np.sin(2 * np.pi * 941 * t)  # a row tone alone
    dial_tone = 4000 * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t))
    ringback = 4000 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t))
    for signal in (loud_noise, single, dial_tone, ringback):
        assert detect(line(signal)) == []


def test_level_reference_is_g711_dbm0() -> None:
    # A 0 dBm0 sine carries 3.17 dB less than the µ-law maximum (G.711).
    assert 20 * np.log10(32636 / DBM0_AMPLITUDE) == pytest.approx(3.17, abs=0.03)


def test_frames_must_be_20ms() -> None:
    with pytest.raises(ValueError, match="160 samples"):
        InbandDtmfDetector().feed(np.zeros(80, dtype=np.int16))


@pytest.mark.skipif(not (BARESIP_SOUNDS / "sound5.wav").exists(), reason="baresip is not installed")
def test_baresip_keypad_tones_are_heard_once_each() -> None:
    """baresip's own DTMF tone files (a generator nobody here wrote), resampled to 8 kHz, through µ-law."""
    names = {**{str(d): f"sound{d}" for d in range(10)}, "*": "soundstar", "#": "soundroute"}
    parts = []
    for name in names.values():
        data, rate = soundfile.read(str(BARESIP_SOUNDS / f"{name}.wav"), dtype="float64", always_2d=True)
        audio = np.asarray(soxr.resample(data.mean(axis=1), rate, 8000), dtype=np.float64)
        parts += [audio * 32767.0, np.zeros(800)]
    assert keys_of(detect(line(np.concatenate(parts)))) == "".join(names)
