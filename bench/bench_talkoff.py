"""Talk-off: how often the in-band DTMF detector hears a digit in audio that has none (speech, music).

Runs ``ivr.media.dtmf_inband.InbandDtmfDetector`` over:

* SIPp's ``/usr/share/sip-tester/g711a.pcap`` (real recorded speech, A-law RTP; the payloads go through our
  jitter buffer, which cuts SIPp's 30 ms packets into 20 ms frames);
* speech synthesised with espeak-ng, English (several voices, variants and pitches) and Bulgarian (``-v bg``), and
  with flite (if installed), resampled to 8 kHz and passed through a µ-law round trip like a phone line;
* music-like audio generated here: chords of harmonic-rich notes and melodies; and, separately, two synthetic
  worst cases: sine sweeps (two at once cross a row and a column frequency together) and chords of pure sines
  (equal-tempered F5 + F#6 are 697 + 1477 Hz within 0.2 %: a "3" to any detector);
* call-progress tones shipped with baresip (ringback, busy, call waiting), if installed.

Prints, per set: minutes of audio, false digits and false digits per hour. With ``--sweep``, the same for a grid of
detector settings (to choose thresholds). This is a figure printer, not a test; tests/unit/media/test_talkoff.py
holds the bound the suite enforces.

    python3 bench/bench_talkoff.py                      # ~20 min of speech per language
    python3 bench/bench_talkoff.py --minutes 60 --sweep
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.media import g711
from ivr.media.digits import DigitEvent
from ivr.media.dtmf_inband import InbandDtmfDetector
from ivr.media.jitterbuffer import JitterBuffer

Pcm = npt.NDArray[np.int16]
RATE = 8000
SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
BARESIP_SOUNDS = Path("/usr/share/baresip")
ENGLISH_TEXT_FILES = [Path("/usr/share/common-licenses/GPL-3"), Path("/usr/share/common-licenses/Apache-2.0")]
BULGARIAN_TEXT_FILES = [Path("/usr/share/vim/vim90/tutor/tutor.bg.utf-8")]

ENGLISH_FALLBACK = """Thank you for calling. Your call is important to us. For account balance and recent payments,
press one. To report a lost or stolen card, press two. For loans and mortgages, press three. To speak to one of our
advisers, press zero. Please enter your account number followed by the hash key. I did not understand that.
Please say or enter your eight digit customer number. Our offices are open from eight in the morning until six in
the evening, Monday to Friday. All our agents are busy at the moment; please hold and you will be connected to the
next available agent. You are number four in the queue. The estimated waiting time is three minutes."""

BULGARIAN_FALLBACK = """Благодарим ви, че се обадихте. Вашето обаждане е важно за нас. За баланс по сметка и последни
плащания, натиснете едно. За да съобщите за изгубена или открадната карта, натиснете две. За кредити и ипотеки,
натиснете три. За разговор с консултант, натиснете нула. Моля, въведете номера на сметката си, последван от диез.
Не разбрах. Моля, кажете или въведете осемцифрения си клиентски номер. Нашите офиси работят от осем сутринта до
шест вечерта, от понеделник до петък. Всички наши служители са заети в момента; моля, изчакайте и ще бъдете
свързани със следващия свободен служител. Вие сте четвърти на опашката. Очакваното време за изчакване е три минути.
София е столицата на България. Черно море е на изток, а Стара планина минава през цялата страна."""

ESPEAK_ENGLISH_VOICES = [
    ("en-us", 50),
    ("en-us+m3", 35),
    ("en-gb+f2", 60),
    ("en-gb+f4", 75),
    ("en+m7", 25),
    ("en-us+klatt", 50),
    ("en-gb-x-rp+f3", 70),
    ("en-029+m1", 45),
]
ESPEAK_BULGARIAN_VOICES = [("bg", 50), ("bg+f2", 65), ("bg+m3", 35), ("bg+f4", 80), ("bg+m7", 25), ("bg+klatt", 50)]
FLITE_VOICES = ["kal", "awb", "rms", "slt"]


# -- audio sources ---------------------------------------------------------------------------------------------


def phone_line(audio: npt.NDArray[np.float64], rate: int, *, codec: str = "PCMU") -> Pcm:
    """Mono float audio (-1..1) at ``rate`` -> 8 kHz int16 through a G.711 round trip."""
    if rate != RATE:
        audio = np.asarray(soxr.resample(audio, rate, RATE, quality="HQ"), dtype=np.float64)
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)
    return g711.decode(codec, g711.encode(codec, pcm))


def read_wav(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return np.asarray(data.mean(axis=1), dtype=np.float64), int(rate)


def pcap_rtp_payloads(path: Path) -> Iterator[tuple[int, int, int, int, bytes]]:
    """(payload type, sequence, timestamp, ssrc, payload) of each RTP packet in a pcap of Ethernet/IPv4/UDP."""
    data = path.read_bytes()
    if struct.unpack_from("<I", data)[0] != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian microsecond pcap")
    offset = 24
    while offset + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        rtp = frame[14 + ihl + 8 :]
        if rtp[0] >> 6 != 2:
            continue
        b1, seq, ts, ssrc = struct.unpack_from("!BHII", rtp, 1)
        yield b1 & 0x7F, seq, ts, ssrc, rtp[12 + 4 * (rtp[0] & 0x0F) :]


def sipp_speech() -> Pcm | None:
    """The A-law speech of SIPp's g711a.pcap, through our jitter buffer (30 ms packets -> 20 ms frames)."""
    if not SIPP_PCAP.exists():
        return None
    buffer = JitterBuffer("PCMA")
    frames: list[Pcm] = []
    for pt, seq, ts, ssrc, payload in pcap_rtp_payloads(SIPP_PCAP):
        if pt == 8:
            frames.extend(buffer.push(seq, ts, payload, ssrc))
    frames.extend(buffer.flush())
    return np.concatenate(frames) if frames else None


def text_chunks(files: list[Path], fallback: str, chars: int) -> list[str]:
    """About ``chars`` characters of text split into paragraphs, from the first readable file (else the
    fallback, repeated)."""
    text = ""
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            break
        except OSError:
            continue
    if not text:
        text = fallback
    while len(text) < chars:
        text += "\n\n" + text
    paragraphs = [p.strip() for p in text[:chars].split("\n\n") if p.strip()]
    return paragraphs


def synthesize(command: list[str], text: str, workdir: Path) -> tuple[npt.NDArray[np.float64], int] | None:
    txt = workdir / "in.txt"
    wav = workdir / "out.wav"
    txt.write_text(text, encoding="utf-8")
    argv = [arg.replace("{txt}", str(txt)).replace("{wav}", str(wav)) for arg in command]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=600)
        return read_wav(wav)
    except (subprocess.SubprocessError, OSError, RuntimeError):
        return None


def cached(cache: Path, name: str, key: str, make: Callable[[], Pcm | None]) -> Pcm | None:
    """``make()`` once per key, kept as 8 kHz 16-bit WAV in ``cache``."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = cache / f"{name}-{digest}.wav"
    if path.exists():
        data, _ = soundfile.read(str(path), dtype="int16")
        return np.asarray(data, dtype=np.int16)
    pcm = make()
    if pcm is not None:
        cache.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), pcm, RATE, subtype="PCM_16")
    return pcm


def espeak_set(
    voices: list[tuple[str, int]], texts: list[str], workdir: Path, cache: Path, name: str
) -> list[tuple[str, Pcm]]:
    if shutil.which("espeak-ng") is None:
        return []
    out = []
    for (voice, pitch), text in zip(voices, itertools.cycle(texts), strict=False):
        command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "160", "-f", "{txt}", "-w", "{wav}"]

        def make(command: list[str] = command, text: str = text) -> Pcm | None:
            audio = synthesize(command, text, workdir)
            return None if audio is None else phone_line(*audio)

        pcm = cached(cache, name, " ".join(command) + text, make)
        if pcm is not None:
            out.append((f"espeak-ng {voice} p{pitch}", pcm))
    return out


def flite_set(texts: list[str], workdir: Path, cache: Path) -> list[tuple[str, Pcm]]:
    if shutil.which("flite") is None:
        return []
    out = []
    for voice, text in zip(FLITE_VOICES, itertools.cycle(texts), strict=False):
        command = ["flite", "-voice", voice, "-f", "{txt}", "-o", "{wav}"]

        def make(command: list[str] = command, text: str = text) -> Pcm | None:
            audio = synthesize(command, text, workdir)
            return None if audio is None else phone_line(*audio)

        pcm = cached(cache, "flite", " ".join(command) + text, make)
        if pcm is not None:
            out.append((f"flite {voice}", pcm))
    return out


def note_frequency(semitone: float) -> float:
    return float(440.0 * 2 ** ((semitone - 69) / 12))  # MIDI note number -> Hz


def envelope(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    attack = max(1, int(n * rng.uniform(0.02, 0.1)))
    release = max(1, int(n * rng.uniform(0.1, 0.4)))
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    env[n - release :] *= np.linspace(1, 0, release)
    return env * np.exp(-np.arange(n) / (n * rng.uniform(0.5, 3.0)))


def voice_note(freq: float, n: int, rng: np.random.Generator, harmonics: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / RATE
    vibrato = 1 + rng.uniform(0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * freq * np.cumsum(vibrato) / RATE
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if freq * k < RATE / 2 - 200:
            out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** rng.uniform(0.7, 1.5)
    return out


def music_set(minutes: float, seed: int = 4) -> list[tuple[str, Pcm]]:
    """Generated music-like audio: (name, 8 kHz µ-law round-tripped pcm)."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)

    def chords(harmonics: int) -> npt.NDArray[np.float64]:
        parts = []
        size = 0
        while size < total:
            n = int(rng.uniform(0.25, 1.5) * RATE)
            root = rng.integers(48, 84)  # C3..B5
            shape = [0, 4, 7, 11] if rng.random() < 0.5 else [0, 3, 7, 10]
            notes = [root + s + 12 * rng.integers(0, 2) for s in shape[: rng.integers(2, 5)]]
            chord = sum(voice_note(note_frequency(m), n, rng, harmonics) for m in notes)
            parts.append(chord * envelope(n, rng))
            size += n
        return np.concatenate(parts)

    def melody() -> npt.NDArray[np.float64]:
        parts = []
        size = 0
        scale = np.array([0, 2, 4, 5, 7, 9, 11])
        while size < total:
            n = int(rng.uniform(0.08, 0.5) * RATE)
            lead = 60 + scale[rng.integers(0, 7)] + 12 * rng.integers(0, 3)
            bass = 36 + scale[rng.integers(0, 7)]
            part = voice_note(note_frequency(lead), n, rng, 1) + 0.6 * voice_note(note_frequency(bass), n, rng, 8)
            parts.append(part * envelope(n, rng))
            size += n
        return np.concatenate(parts)

    def sweeps() -> npt.NDArray[np.float64]:
        parts = []
        size = 0
        while size < total:
            n = int(rng.uniform(0.5, 5.0) * RATE)
            t = np.arange(n) / RATE
            f0, f1 = rng.uniform(300, 3400, size=2)
            linear = rng.random() < 0.5
            freq = f0 + (f1 - f0) * t / t[-1] if linear else f0 * (f1 / f0) ** (t / t[-1])
            sig = np.sin(2 * np.pi * np.cumsum(freq) / RATE)
            if rng.random() < 0.5:  # a second sweep at once
                g0, g1 = rng.uniform(300, 3400, size=2)
                sig = sig + np.sin(2 * np.pi * np.cumsum(g0 + (g1 - g0) * t / t[-1]) / RATE)
            parts.append(sig * envelope(n, rng))
            size += n
        return np.concatenate(parts)

    def scaled(audio: npt.NDArray[np.float64]) -> Pcm:
        audio = audio / max(1e-9, float(np.max(np.abs(audio)))) * 0.7
        return phone_line(audio, RATE)

    return [
        ("chords (harmonic notes)", scaled(chords(8))),
        ("melody + bass", scaled(melody())),
        ("sweeps (one or two)", scaled(sweeps())),
        ("chords of pure sines", scaled(chords(1))),
    ]


def progress_tones() -> list[tuple[str, Pcm]]:
    out = []
    for name in ("ringback", "busy", "callwaiting", "ring", "error", "notfound", "message"):
        path = BARESIP_SOUNDS / f"{name}.wav"
        if path.exists():
            audio, rate = read_wav(path)
            out.append((f"baresip {name}.wav", phone_line(audio, rate)))
    return out


# -- running the detector ----------------------------------------------------------------------------------------


def detect(pcm: Pcm, detector: InbandDtmfDetector) -> list[DigitEvent]:
    n = len(pcm) - len(pcm) % 160
    events = []
    for i in range(0, n, 160):
        started, _ = detector.feed(pcm[i : i + 160])
        if started is not None:
            events.append(started)
    detector.flush()
    return events


def per_hour(count: int, samples: int) -> float:
    return count / (samples / RATE / 3600) if samples else 0.0


def report(sets: dict[str, list[tuple[str, Pcm]]], make: Callable[[], InbandDtmfDetector], verbose: bool) -> None:
    print(f"{'set':44} {'minutes':>8} {'false digits':>12} {'per hour':>9}  digits")
    grand_speech = [0, 0]
    for group, items in sets.items():
        total, false = 0, 0
        for name, pcm in items:
            events = detect(pcm, make())
            total += len(pcm)
            false += len(events)
            if verbose or len(items) == 1:
                keys = "".join(e.key for e in events)[:20]
                rate = per_hour(len(events), len(pcm))
                print(f"  {name:42} {len(pcm) / RATE / 60:>8.1f} {len(events):>12} {rate:>9.1f}  {keys}")
        if group.startswith("speech"):
            grand_speech[0] += total
            grand_speech[1] += false
        if len(items) != 1 or not verbose:
            print(f"{group:44} {total / RATE / 60:>8.1f} {false:>12} {per_hour(false, total):>9.1f}")
    samples, false = grand_speech
    print(f"{'ALL SPEECH':44} {samples / RATE / 60:>8.1f} {false:>12} {per_hour(false, samples):>9.1f}")


def sweep(sets: dict[str, list[tuple[str, Pcm]]]) -> None:
    """False digits on speech and music for a grid of settings, with the detection margin on test tones."""
    from ivr.media.dtmf_inband import dtmf_tone

    speech = [pcm for group, items in sets.items() if group.startswith("speech") for _, pcm in items]
    music = [pcm for group, items in sets.items() if not group.startswith("speech") for _, pcm in items]
    speech_samples = sum(len(p) for p in speech)
    music_samples = sum(len(p) for p in music)
    rng = np.random.default_rng(7)
    tests = []
    for twist in (4.0, -8.0):
        for level in (-25.0 + max(0.0, -twist / 2) + max(0.0, twist / 2), -3.0 - abs(twist) / 2):
            parts = [np.zeros(800)]
            for key in "0123456789*#ABCD":
                parts += [dtmf_tone(key, 0.045, level_dbm0=level, twist_db=twist), np.zeros(400)]
            sig = np.concatenate(parts)
            sig = sig + rng.normal(0, 0.2 * np.sqrt(np.mean(sig**2)), len(sig))
            tests.append(g711.ulaw_decode(g711.ulaw_encode(np.clip(np.rint(sig), -32768, 32767).astype(np.int16))))
    grid: list[dict[str, Any]] = [
        {"min_energy_ratio": r, "relative_peak_db": p, "max_harmonic_db": h, "min_on": on}
        for r in (0.6, 0.7, 0.75, 0.8, 0.85)
        for p in (6.0, 8.0, 10.0)
        for h in (-6.0, -12.0, 100.0)
        for on in (2, 3)
    ]
    print(f"{'ratio':>6} {'peak':>5} {'harm':>5} {'on':>3} {'speech/h':>9} {'music/h':>8} {'tone digits':>12}")
    for kw in grid:
        s = sum(len(detect(p, InbandDtmfDetector(**kw))) for p in speech)
        m = sum(len(detect(p, InbandDtmfDetector(**kw))) for p in music)
        got = sum(len(detect(p, InbandDtmfDetector(**kw))) for p in tests)
        print(
            f"{kw['min_energy_ratio']:>6} {kw['relative_peak_db']:>5} {kw['max_harmonic_db']:>5} {kw['min_on']:>3} "
            f"{per_hour(s, speech_samples):>9.1f} {per_hour(m, music_samples):>8.1f} {got:>6}/{16 * len(tests)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="synthesised speech per language (about)")
    parser.add_argument("--music-minutes", type=float, default=10.0, help="per kind of generated music")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ivr-talkoff-cache")
    parser.add_argument("--sweep", action="store_true", help="also try a grid of detector settings")
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per voice")
    args = parser.parse_args()

    started = time.perf_counter()
    chars = int(args.minutes * 60 * 15)  # espeak-ng at 160 wpm says about 15 characters a second
    sets: dict[str, list[tuple[str, Pcm]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sipp = sipp_speech()
        if sipp is not None:
            sets["speech: SIPp g711a.pcap (A-law)"] = [("g711a.pcap", sipp)]
        english = text_chunks(ENGLISH_TEXT_FILES, ENGLISH_FALLBACK, chars)
        per_voice = max(1, len(english) // len(ESPEAK_ENGLISH_VOICES))
        en_texts = ["\n\n".join(english[i : i + per_voice]) for i in range(0, len(english), per_voice)]
        sets["speech: espeak-ng English"] = espeak_set(ESPEAK_ENGLISH_VOICES, en_texts, workdir, args.cache, "en")
        bulgarian = text_chunks(BULGARIAN_TEXT_FILES, BULGARIAN_FALLBACK, chars)
        per_voice = max(1, len(bulgarian) // len(ESPEAK_BULGARIAN_VOICES))
        bg_texts = ["\n\n".join(bulgarian[i : i + per_voice]) for i in range(0, len(bulgarian), per_voice)]
        sets["speech: espeak-ng Bulgarian"] = espeak_set(ESPEAK_BULGARIAN_VOICES, bg_texts, workdir, args.cache, "bg")
        flite_texts = [t[: len(t) // 2] for t in en_texts]
        sets["speech: flite English"] = flite_set(flite_texts, workdir, args.cache)
    music = music_set(args.music_minutes)
    sets["music: chords and melodies of harmonic notes"] = music[:2]
    sets["synthetic: one or two sine sweeps at once"] = music[2:3]
    sets["synthetic: chords of pure sines"] = music[3:]
    sets["call progress tones (baresip)"] = progress_tones()
    sets = {k: v for k, v in sets.items() if v}
    print(f"talk-off of the in-band DTMF detector (audio prepared in {time.perf_counter() - started:.1f} s)")
    t0 = time.perf_counter()
    report(sets, InbandDtmfDetector, args.verbose)
    frames = sum(len(p) for items in sets.values() for _, p in items) // 160
    elapsed = time.perf_counter() - t0
    print(f"detector: {frames} frames in {elapsed:.1f} s = {elapsed / frames * 1e6:.1f} us per 20 ms frame")
    if args.sweep:
        print()
        sweep(sets)


if __name__ == "__main__":
    main()
