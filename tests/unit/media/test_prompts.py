"""Prompt loading: any rate and channel count in, 8 kHz mono int16 and ready G.711 frames out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from ivr.media import g711
from ivr.media.prompts import Prompt, PromptCache, PromptError, PromptNotLoaded, load_prompt


def sine(rate: int, seconds: float, amplitude: float, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def peak_frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    window = np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * window))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def rms_dbfs(pcm: np.ndarray) -> float:
    middle = pcm[len(pcm) // 10 : -len(pcm) // 10].astype(np.float64) / 32768  # skip resampler edges
    return float(20 * np.log10(np.sqrt(np.mean(middle**2))))


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_1khz_sine_keeps_its_frequency_and_level(tmp_path: Path, rate: int, channels: int) -> None:
    mono = sine(rate, 1.0, 0.5)
    data = np.stack([mono] * channels, axis=1)
    path = tmp_path / f"tone_{rate}_{channels}.wav"
    soundfile.write(path, data, rate, subtype="PCM_16")
    prompt = load_prompt("tone", path)
    assert prompt.pcm.dtype == np.int16 and prompt.pcm.ndim == 1
    assert prompt.duration == pytest.approx(1.0, abs=0.002)
    assert peak_frequency(prompt.pcm) == pytest.approx(1000.0, abs=2.0)
    expected = 20 * np.log10(0.5 / np.sqrt(2))  # -9.03 dBFS
    assert rms_dbfs(prompt.pcm) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS")])
def test_flac_and_ogg_load_like_wav(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, sine(44100, 0.5, 0.25), 44100, format=fmt, subtype=subtype)
    prompt = load_prompt("tone", path)
    assert peak_frequency(prompt.pcm) == pytest.approx(1000.0, abs=2.0)
    assert rms_dbfs(prompt.pcm) == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.3)


def test_channels_are_averaged_not_summed(tmp_path: Path) -> None:
    left = sine(8000, 0.5, 0.8)
    path = tmp_path / "left_only.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 8000, subtype="PCM_16")
    assert rms_dbfs(load_prompt("l", path).pcm) == pytest.approx(20 * np.log10(0.4 / np.sqrt(2)), abs=0.1)


def test_8khz_16bit_audio_is_taken_sample_exact(tmp_path: Path) -> None:
    pcm = np.random.default_rng(1).integers(-32768, 32768, 999).astype(np.int16)
    path = tmp_path / "exact.wav"
    soundfile.write(path, pcm, 8000, subtype="PCM_16")
    assert np.array_equal(load_prompt("x", path).pcm, pcm)


def test_float_audio_beyond_full_scale_is_clipped_not_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "hot.wav"
    soundfile.write(path, np.array([1.5, -1.5, 0.999, -1.0]), 8000, subtype="FLOAT")
    assert load_prompt("hot", path).pcm.tolist() == [32767, -32768, 32735, -32768]


def test_frames_are_160_byte_codec_frames_with_a_silence_padded_tail() -> None:
    pcm = (sine(8000, 0.0505, 0.5) * 32767).astype(np.int16)  # 404 samples: 2 full frames + 84
    prompt = Prompt("p", pcm)
    for codec, silence in (("PCMU", 0xFF), ("PCMA", 0xD5)):
        frames = prompt.frames(codec)
        assert len(frames) == 3 and all(len(f) == 160 for f in frames)
        assert b"".join(frames)[:404] == g711.encode(codec, pcm)
        assert set(frames[2][84:]) == {silence}
    assert prompt.frames("pcmu") is prompt.frames("PCMU")
    assert prompt.duration == pytest.approx(404 / 8000)


def test_prompt_audio_is_a_read_only_copy() -> None:
    pcm = np.zeros(160, dtype=np.int16)
    prompt = Prompt("p", pcm)
    pcm[0] = 1
    assert prompt.pcm[0] == 0
    with pytest.raises(ValueError):
        prompt.pcm[0] = 1


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"nope\.wav: no such file"):
        load_prompt("x", tmp_path / "nope.wav")


def test_unreadable_file_names_the_path_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "text.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(PromptError, match=r"text\.wav: unreadable audio file"):
        load_prompt("x", path)


def test_directory_is_not_a_prompt(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="not a regular file"):
        load_prompt("x", tmp_path)


def test_empty_audio_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(PromptError, match=r"empty\.wav: empty audio"):
        load_prompt("x", path)


def test_cache_loads_gets_and_replaces_by_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    soundfile.write(a, sine(8000, 0.1, 0.1), 8000, subtype="PCM_16")
    soundfile.write(b, sine(16000, 0.2, 0.1), 16000, subtype="PCM_16")
    cache = PromptCache()
    first = cache.load("welcome", a)
    assert "welcome" in cache and cache.get("welcome") is first
    second = cache.load("welcome", b)
    assert cache.get("welcome") is second and second.duration == pytest.approx(0.2, abs=0.002)
    assert len(cache) == 1


def test_cache_get_of_unknown_name_is_a_key_error_and_a_prompt_error() -> None:
    cache = PromptCache()
    assert "menu" not in cache
    with pytest.raises(PromptNotLoaded, match="'menu' is not loaded") as info:
        cache.get("menu")
    assert isinstance(info.value, KeyError) and isinstance(info.value, PromptError)


def test_cache_loads_a_directory_by_file_stem(tmp_path: Path) -> None:
    for name in ("welcome.wav", "menu.FLAC", "notes.txt"):
        (tmp_path / name).touch()
    soundfile.write(tmp_path / "welcome.wav", sine(8000, 0.1, 0.1), 8000, subtype="PCM_16")
    soundfile.write(tmp_path / "menu.FLAC", sine(8000, 0.1, 0.1), 8000, format="FLAC", subtype="PCM_16")
    cache = PromptCache()
    cache.load_directory(tmp_path)
    assert sorted(cache) == ["menu", "welcome"]
