"""Talk-off bound: the in-band DTMF detector hears no digit in speech or music.

The speech is synthesised at test time with espeak-ng (English and Bulgarian, several voices and pitches), brought
to 8 kHz and passed through a µ-law round trip like a phone line; SIPp's recorded A-law speech is added when SIPp is
installed. The bound is zero false digits on this set (about four minutes of speech). bench/bench_talkoff.py
measures the rate on a much larger set, with flite and generated music as well.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import soxr

from ivr.media import g711
from ivr.media.dtmf_inband import InbandDtmfDetector
from ivr.media.jitterbuffer import JitterBuffer

SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")

ENGLISH = (
    "Thank you for calling. Your call is important to us. For account balance and recent payments, press one. "
    "To report a lost or stolen card, press two. For loans and mortgages, press three. To speak to one of our "
    "advisers, press zero, or stay on the line. Please enter your account number followed by the hash key. "
    "I did not understand that. Please say or enter your eight digit customer number. Our offices are open from "
    "eight in the morning until six in the evening, Monday to Friday. All our agents are busy at the moment; "
    "please hold and you will be connected to the next available agent. You are number four in the queue. "
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. How much wood would a "
    "woodchuck chuck if a woodchuck could chuck wood? Peter Piper picked a peck of pickled peppers."
)
BULGARIAN = (
    "Благодарим ви, че се обадихте. Вашето обаждане е важно за нас. За баланс по сметка и последни плащания, "
    "натиснете едно. За да съобщите за изгубена или открадната карта, натиснете две. За кредити и ипотеки, "
    "натиснете три. За разговор с консултант, натиснете нула. Моля, въведете номера на сметката си, последван от "
    "диез. Не разбрах. Моля, кажете или въведете осемцифрения си клиентски номер. Нашите офиси работят от осем "
    "сутринта до шест вечерта, от понеделник до петък. Всички наши служители са заети в момента; моля, изчакайте. "
    "Вие сте четвърти на опашката. София е столицата на България. Черно море е на изток."
)
VOICES = [("en-us", 50), ("en-gb+f3", 70), ("en+m7", 25), ("bg", 50), ("bg+f2", 75), ("bg+m3", 30)]


def espeak(text: str, voice: str, pitch: int, tmp: Path) -> npt.NDArray[np.int16]:
    wav = tmp / f"{voice}-{pitch}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "165", "-w", str(wav), text],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data, rate = soundfile.read(str(wav), dtype="float64", always_2d=True)
    audio = np.asarray(soxr.resample(data.mean(axis=1), rate, 8000), dtype=np.float64)
    pcm = np.clip(np.rint(audio * 32767), -32768, 32767).astype(np.int16)
    return g711.ulaw_decode(g711.ulaw_encode(pcm))


def false_digits(pcm: npt.NDArray[np.int16]) -> str:
    detector = InbandDtmfDetector()
    keys = []
    for i in range(0, len(pcm) - len(pcm) % 160, 160):
        started, _ = detector.feed(pcm[i : i + 160])
        if started is not None:
            keys.append(started.key)
    return "".join(keys)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, npt.NDArray[np.int16]]]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng): no speech to measure talk-off on")
    tmp = tmp_path_factory.mktemp("talkoff")
    return [
        (f"{voice} p{pitch}", espeak(BULGARIAN if voice.startswith("bg") else ENGLISH, voice, pitch, tmp))
        for voice, pitch in VOICES
    ]


def test_synthesised_english_and_bulgarian_speech_makes_no_false_digit(
    speech: list[tuple[str, npt.NDArray[np.int16]]],
) -> None:
    minutes = sum(len(pcm) for _, pcm in speech) / 8000 / 60
    assert minutes > 3.0, "the speech set is too small to mean anything"
    found = {name: keys for name, pcm in speech if (keys := false_digits(pcm))}
    assert found == {}, f"false digits in {minutes:.1f} min of speech: {found}"


def test_louder_speech_makes_no_false_digit_either(speech: list[tuple[str, npt.NDArray[np.int16]]]) -> None:
    for name, pcm in speech[:3]:
        hot = np.clip(pcm.astype(np.int32) * 2, -32768, 32767).astype(np.int16)  # +6 dB, clipping
        assert false_digits(g711.ulaw_decode(g711.ulaw_encode(hot))) == "", name


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="SIPp (Debian sip-tester) is not installed")
def test_sipp_recorded_speech_makes_no_false_digit() -> None:
    data = SIPP_PCAP.read_bytes()
    buffer = JitterBuffer("PCMA")
    frames = []
    offset = 24
    while offset < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, offset)
        rtp = data[offset + 16 + 42 : offset + 16 + incl]
        offset += 16 + incl
        seq, ts = struct.unpack_from("!HI", rtp, 2)
        frames += buffer.push(seq, ts, rtp[12:], 1)
    assert false_digits(np.concatenate(frames)) == ""


def test_generated_music_of_harmonic_notes_makes_no_false_digit() -> None:
    rng = np.random.default_rng(2024)
    parts = []
    for _ in range(150):  # about two minutes of chords
        n = int(rng.uniform(0.3, 1.2) * 8000)
        t = np.arange(n) / 8000
        root = int(rng.integers(52, 84))
        chord = np.zeros(n)
        for semitone in (0, 4, 7, 11)[: int(rng.integers(2, 5))]:
            f = 440.0 * 2 ** ((root + semitone - 69) / 12)
            for k in range(1, 7):
                if f * k < 3800:
                    chord += np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.28)) / k
        parts.append(chord * np.exp(-t * rng.uniform(0.5, 3)))
    audio = np.concatenate(parts)
    pcm = np.clip(np.rint(audio / np.abs(audio).max() * 20000), -32768, 32767).astype(np.int16)
    assert false_digits(g711.ulaw_decode(g711.ulaw_encode(pcm))) == ""
