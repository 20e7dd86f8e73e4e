"""8 kHz -> 16 kHz upsampling for the 16 kHz pocketsphinx model. Which filter is better was measured, not assumed:
``bench/bench_speech.py --upsampler linear|soxr`` prints accuracy for both (docs/speech.md has the figures)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Upsampler", "upsample_2x"]

Upsampler = Literal["linear", "soxr"]


def upsample_2x(pcm: npt.NDArray[np.int16], method: Upsampler = "linear") -> npt.NDArray[np.int16]:
    """Double the sample rate. "linear" puts the mean of each pair of neighbours between them (its images above
    4 kHz stay in the signal, which the 16 kHz model's upper filters are used to seeing); "soxr" is soxr's
    high-quality band-limited filter (the band above 4 kHz stays empty)."""
    if pcm.size == 0:
        return np.zeros(0, dtype=np.int16)
    if method == "soxr":
        import soxr

        out = soxr.resample(pcm, 8000, 16000)
        return np.asarray(out, dtype=np.int16)
    x = pcm.astype(np.int32)
    y = np.empty(2 * x.size, dtype=np.int32)
    y[0::2] = x
    y[1:-1:2] = (x[:-1] + x[1:]) >> 1
    y[-1] = x[-1]
    return y.astype(np.int16)
