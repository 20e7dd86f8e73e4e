"""``speech:`` settings of the daemon configuration (mounted in ``IvrConfig`` by the lead).

Example (configs/ivr.yaml)::

    speech:
      engine: pocketsphinx            # or vosk, or package.module:ClassName
      options: {upsampler: linear}    # engine options (vosk: {model: /srv/models/vosk-model-small-en-us-0.15})
      vad_aggressiveness: 2
      no_input_timeout: 5.0
      end_silence: 0.5
      confidence_threshold: 0.5
      pool_size: 2
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ivr.speech.recognizer import SpeechEngine, load_engine
from ivr.speech.vad import Endpointer, FrameClassifier, WebRtcVad

__all__ = ["SpeechSettings"]


class SpeechSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false: menus take keys only, no recogniser is loaded")
    engine: str = Field("pocketsphinx", description="pocketsphinx, vosk, or a dotted path 'package.module:Class'")
    options: dict[str, Any] = Field(default_factory=dict, description="engine options (see docs/speech.md)")
    pool_size: int | None = Field(None, ge=1, le=256,
                                  description="decoder worker processes for pocketsphinx (default: cores)")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode: 0 lets most through, 3 strictest")
    no_input_timeout: float = Field(5.0, gt=0, description="seconds without speech before no-input")
    end_silence: float = Field(0.5, gt=0, le=5, description="seconds of silence that end an utterance")
    max_speech: float = Field(10.0, gt=0, le=60, description="an utterance is cut (and decided) after this long")
    start_voiced: float = Field(0.12, gt=0, description="seconds of voiced audio within start_window to start")
    start_window: float = Field(0.2, gt=0, description="window over which start_voiced is counted")
    pre_roll: float = Field(0.3, ge=0, le=2, description="seconds of audio before the start kept for the decoder")
    confidence_threshold: float = Field(0.5, ge=0, le=1, description="results below this are no-match")
    decode_timeout: float = Field(5.0, gt=0, description="give up on a decode after this long (no-match: error)")

    @model_validator(mode="after")
    def _check(self) -> SpeechSettings:
        if self.start_voiced > self.start_window:
            raise ValueError("start_voiced cannot be longer than start_window")
        return self

    def engine_options(self) -> dict[str, Any]:
        options = dict(self.options)
        if self.pool_size is not None and self.engine == "pocketsphinx":
            options.setdefault("pool_size", self.pool_size)
        return options

    def make_engine(self) -> SpeechEngine:
        """Load the configured engine (blocks while models load: call at startup, not per call)."""
        return load_engine(self.engine, self.engine_options())

    def make_endpointer(self, classifier: FrameClassifier | None = None) -> Endpointer:
        return Endpointer(
            classifier or WebRtcVad(self.vad_aggressiveness),
            start_window_ms=round(self.start_window * 1000),
            start_voiced_ms=round(self.start_voiced * 1000),
            end_silence_ms=round(self.end_silence * 1000),
            max_speech_ms=round(self.max_speech * 1000),
            pre_roll_ms=round(self.pre_roll * 1000),
            tail_ms=min(200, round(self.end_silence * 1000)),
        )
