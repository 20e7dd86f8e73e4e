"""In-band DTMF: a Goertzel detector on decoded 8 kHz audio, sans-I/O and vectorised with numpy.

Each 20 ms frame gives two analysis windows of 160 samples (20 ms) that overlap by half (one every 10 ms). For
each window the power at the eight DTMF frequencies and at their second harmonics is the magnitude of one DFT
term (the Goertzel value), computed for both windows at once as one matrix product; the window's total energy
comes with it. A window *hits* key K when all of these hold:

* level: both tones of K (the strongest row and the strongest column) at least ``min_level_dbm0``;
* twist: the row tone at most ``normal_twist_db`` above the column tone, the column tone at most
  ``reverse_twist_db`` above the row tone (ITU-T Q.24: +4/-8 dB must work; the defaults leave a margin);
* relative peak: each tone at least ``relative_peak_db`` above the second strongest of its group;
* energy ratio: the two tones hold at least ``min_energy_ratio`` of the window's energy (speech and music spread
  theirs over many frequencies);
* harmonics: the column tone's second harmonic at most ``max_harmonic_db`` relative to the tone (voiced speech
  and instruments have harmonics, a DTMF generator has none).

Each tone's power is the largest of three DFT terms, at its nominal frequency and 1.5 % either side, so a
generator off by the Q.24 tolerance loses no level.

A press starts after ``min_on`` consecutive windows hit the same key (2: about 30 ms of tone, so a 40 ms tone is
heard) and ends after ``min_off`` consecutive windows that do not (3: a 10 ms drop-out inside a tone does not
split it, a 40 ms pause between tones separates them). A press is reported once, when it starts, as a
``DigitEvent`` whose ``duration_ms`` and ``ended`` are filled in when it ends. ``volume`` is the level of the
stronger tone in -dBm0.

Levels are in dBm0 of G.711: a sine of amplitude 22 700 (16-bit scale) is 0 dBm0 (the µ-law and A-law maxima
are +3.17 and +3.14 dBm0).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from ivr.media.digits import DigitEvent

__all__ = [
    "COLUMN_FREQUENCIES",
    "DBM0_AMPLITUDE",
    "KEYPAD",
    "ROW_FREQUENCIES",
    "InbandDtmfDetector",
    "dtmf_tone",
]

ROW_FREQUENCIES: Final = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
"""``KEYPAD[row][column]``."""

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160
DBM0_AMPLITUDE: Final = 22700.0
"""Peak amplitude (16-bit scale) of a 0 dBm0 sine."""
_DBM0_MEAN_SQUARE: Final = DBM0_AMPLITUDE * DBM0_AMPLITUDE / 2.0
FREQUENCY_TOLERANCE: Final = 0.015

_NOTHING: Final[tuple[None, None]] = (None, None)


def dtmf_tone(
    key: str,
    seconds: float,
    *,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
    rate: int = SAMPLE_RATE,
    phase: float = 0.0,
    frequency_error: float = 0.0,
) -> npt.NDArray[np.float64]:
    """The two tones of ``key`` for ``seconds`` (float samples on the 16-bit scale, not clipped).

    ``level_dbm0`` is the level of each tone; ``twist_db`` is the column (high) tone's level minus the row
    (low) tone's, split evenly around ``level_dbm0``; ``frequency_error`` is a relative offset applied to both
    frequencies (0.015 = +1.5 %)."""
    key = key.upper()
    for row, keys in enumerate(KEYPAD):  # noqa: B007 - row is used after the loop
        if key in keys:
            column = keys.index(key)
            break
    else:
        raise ValueError(f"{key!r} is not a DTMF key")
    t = np.arange(round(seconds * rate)) / rate
    low = DBM0_AMPLITUDE * 10 ** ((level_dbm0 - twist_db / 2) / 20)
    high = DBM0_AMPLITUDE * 10 ** ((level_dbm0 + twist_db / 2) / 20)
    scale = 1.0 + frequency_error
    return low * np.sin(2 * np.pi * ROW_FREQUENCIES[row] * scale * t + phase) + high * np.sin(
        2 * np.pi * COLUMN_FREQUENCIES[column] * scale * t + 1.3 * phase
    )


def _db(ratio_db: float) -> float:
    return float(10 ** (ratio_db / 10))


class InbandDtmfDetector:
    """Detects DTMF key presses in a stream of 160-sample int16 frames (see the module docstring).

    ``feed(frame)`` returns ``(started, ended)`` like ``EventCounter.feed_event``: a new press, and a press that
    finished (with its duration) during this frame; at most one of each, and when both are given and differ the
    ended one came first. ``flush()`` ends a press in progress (end of the audio).
    """

    WINDOW: Final = 160
    HOP: Final = 80

    def __init__(
        self,
        *,
        min_level_dbm0: float = -30.0,
        normal_twist_db: float = 10.0,
        reverse_twist_db: float = 6.0,
        relative_peak_db: float = 8.0,
        min_energy_ratio: float = 0.85,
        max_harmonic_db: float = -12.0,
        min_on: int = 2,
        min_off: int = 3,
    ) -> None:
        if min_on < 1 or min_off < 1:
            raise ValueError("min_on and min_off must be at least 1 window")
        window, hop = self.WINDOW, self.HOP
        # Per-tone power estimate 2|X|^2/N equals N times the tone's mean square.
        self._threshold = window * _DBM0_MEAN_SQUARE * 10 ** (min_level_dbm0 / 10)
        self._normal_twist = _db(normal_twist_db)
        self._reverse_twist = _db(reverse_twist_db)
        self._relative_peak = _db(relative_peak_db)
        self._energy_ratio = min_energy_ratio
        self._harmonic = _db(max_harmonic_db)
        self.min_on = min_on
        self.min_off = min_off
        tones = np.array(ROW_FREQUENCIES + COLUMN_FREQUENCIES)
        # Each tone is probed at its nominal frequency and at the edges of the band a generator may be off by
        # (Q.24: +-1.5 %); its power is the largest of the three. Then the columns' second harmonics (the rows'
        # fall too close to the column tones to be measured cleanly).
        probes = (tones[:, None] * (1.0 + np.array([-FREQUENCY_TOLERANCE, 0.0, FREQUENCY_TOLERANCE]))).reshape(-1)
        freqs = np.concatenate([probes, 2 * tones[4:]])
        n = np.arange(window)[:, None]
        angle = 2 * np.pi * freqs[None, :] * n / SAMPLE_RATE
        scale = math.sqrt(2.0 / window)
        self._basis = (np.concatenate([np.cos(angle), np.sin(angle)], axis=1) * scale).astype(np.float32)
        self._nfreq = len(freqs)
        self._history = window - hop
        self._x = np.zeros(self._history + FRAME_SAMPLES, dtype=np.float32)
        self._windows = sliding_window_view(self._x, window)[::hop]
        self._ms0 = window * _DBM0_MEAN_SQUARE
        # state
        self._candidate = -1
        self._count = 0
        self._current: DigitEvent | None = None
        self._current_code = -1
        self._misses = 0
        self._first_hit = 0
        self._last_hit = 0
        self._index = 0  # windows analysed so far
        self._peak = 0.0
        self.presses = 0
        self.frames = 0

    # -- per frame --------------------------------------------------------------------------------------------

    def feed(self, frame: npt.NDArray[np.int16]) -> tuple[DigitEvent | None, DigitEvent | None]:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"the in-band detector takes frames of {FRAME_SAMPLES} samples, got {len(frame)}")
        self.frames += 1
        x = self._x
        history = self._history
        x[:history] = x[FRAME_SAMPLES:]
        x[history:] = frame
        windows = self._windows
        energy = np.einsum("ij,ij->i", windows, windows).tolist()
        threshold = self._threshold
        if self._current is None and self._candidate < 0 and max(energy) < 2.0 * threshold:
            self._index += len(energy)  # quiet and idle: nothing can start (the common case)
            return _NOTHING
        proj = windows @ self._basis
        proj *= proj
        k = self._nfreq
        power = proj[:, :k] + proj[:, k:]
        tones = power[:, :24].reshape(-1, 8, 3).max(axis=2)
        powers = np.concatenate([tones, power[:, 24:]], axis=1).tolist()
        started: DigitEvent | None = None
        ended: DigitEvent | None = None
        for e, power in zip(energy, powers, strict=True):
            code = self._classify(e, power, threshold)
            s, d = self._step(code, power)
            if s is not None:
                started = s
            if d is not None:
                ended = d
        return started, ended

    def flush(self) -> DigitEvent | None:
        """End the press in progress, if any (returns it, ended)."""
        digit = self._current
        if digit is not None:
            self._finish(digit)
        self._candidate = -1
        self._count = 0
        return digit

    # -- internals --------------------------------------------------------------------------------------------

    def _classify(self, energy: float, p: list[float], threshold: float) -> int:
        if energy < 2.0 * threshold:
            return -1
        rows = p[0:4]
        cols = p[4:8]
        r = max(rows)
        c = max(cols)
        if r < threshold or c < threshold:
            return -1
        if r > c * self._normal_twist or c > r * self._reverse_twist:
            return -1
        if r + c < self._energy_ratio * energy:
            return -1
        ri = rows.index(r)
        ci = cols.index(c)
        peak = self._relative_peak
        for i in range(4):
            if (i != ri and rows[i] * peak > r) or (i != ci and cols[i] * peak > c):
                return -1
        if p[8 + ci] > c * self._harmonic:
            return -1
        return ri * 4 + ci

    def _step(self, code: int, power: list[float]) -> tuple[DigitEvent | None, DigitEvent | None]:
        index = self._index
        self._index = index + 1
        current = self._current
        ended: DigitEvent | None = None
        if current is not None:
            if code == self._current_code:
                self._misses = 0
                self._last_hit = index
                return _NOTHING
            self._misses += 1
            if self._misses < self.min_off:
                return _NOTHING
            self._finish(current)
            ended = current
        if code < 0:
            self._candidate = -1
            self._count = 0
            return None, ended
        if code == self._candidate:
            self._count += 1
        else:
            self._candidate = code
            self._count = 1
            self._first_hit = index
            self._peak = 0.0
        strongest = max(power[code // 4], power[4 + code % 4])
        if strongest > self._peak:
            self._peak = strongest
        if self._count < self.min_on:
            return None, ended
        key = KEYPAD[code // 4][code % 4]
        level = -10 * math.log10(max(self._peak, 1e-9) / self._ms0)
        digit = DigitEvent(key, "inband", min(63, max(0, round(level))))
        self._current = digit
        self._current_code = code
        self._misses = 0
        self._last_hit = index
        self._candidate = -1
        self._count = 0
        self.presses += 1
        digit.duration_ms = self._duration(self._first_hit, index)
        return digit, ended

    def _duration(self, first: int, last: int) -> int:
        # Windows that lie (nearly) whole inside the tone hit: the hits span the tone's length less one window.
        return round(((last - first) * self.HOP + self.WINDOW) * 1000 / SAMPLE_RATE)

    def _finish(self, digit: DigitEvent) -> None:
        digit.duration_ms = self._duration(self._first_hit, self._last_hit)
        digit.ended = True
        self._current = None
        self._current_code = -1
        self._misses = 0
