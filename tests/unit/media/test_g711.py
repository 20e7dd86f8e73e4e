"""G.711 against CPython's audioop (an independent C implementation) for every input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ivr.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # Deprecated in 3.11, removed in 3.13 (where the audioop-lts package provides it).
    audioop = pytest.importorskip("audioop")

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_for_all_65536_samples() -> None:
    assert g711.ulaw_encode(ALL_INT16) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)


def test_alaw_encode_matches_audioop_for_all_65536_samples() -> None:
    assert g711.alaw_encode(ALL_INT16) == audioop.lin2alaw(ALL_INT16.tobytes(), 2)


def test_ulaw_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    decoded = g711.ulaw_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert np.array_equal(decoded, expected)


def test_alaw_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    decoded = g711.alaw_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert np.array_equal(decoded, expected)


def test_decoding_then_encoding_returns_every_code_except_ulaw_negative_zero() -> None:
    ulaw_back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    assert [c for c in range(256) if ulaw_back[c] != c] == [0x7F]  # -0 and +0 both decode to 0 -> 0xFF
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_silence_frames_are_one_20ms_frame_of_linear_zero() -> None:
    assert g711.SILENCE == {"PCMU": b"\xff" * 160, "PCMA": b"\xd5" * 160}
    assert not g711.ulaw_decode(g711.SILENCE["PCMU"]).any()
    assert np.abs(g711.alaw_decode(g711.SILENCE["PCMA"])).max() <= 8  # A-law has no exact zero


@pytest.mark.parametrize("name", ["PCMU", "pcmu", "PCMA", "Pcma"])
def test_encode_and_decode_dispatch_on_case_insensitive_codec_name(name: str) -> None:
    pcm = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    reference = audioop.lin2ulaw if name.upper() == "PCMU" else audioop.lin2alaw
    data = g711.encode(name, pcm)
    assert data == reference(pcm.tobytes(), 2)
    decoded = g711.decode(name, data)
    assert np.all(np.abs(decoded.astype(int) - pcm) <= np.abs(pcm.astype(int)) // 16 + 16)


def test_unknown_codec_is_rejected_with_its_name() -> None:
    with pytest.raises(g711.UnsupportedCodec, match="G722"):
        g711.encode("G722", np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError):
        g711.decode("opus", b"\x00")


def test_encoder_rejects_samples_that_are_not_int16() -> None:
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(160, dtype=np.float32))  # type: ignore[arg-type]


def test_encoder_accepts_non_contiguous_views() -> None:
    pcm = ALL_INT16[::7]
    assert g711.alaw_encode(pcm) == audioop.lin2alaw(pcm.tobytes(), 2)


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711.ULAW_ENCODE_TABLE[0] = 0
