"""Engines plug in by name or dotted path; settings validate; Vosk model directories are checked file by file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ivr.speech.config import SpeechSettings
from ivr.speech.grammar import Grammar
from ivr.speech.recognizer import (
    EngineConfigError,
    PartialCallback,
    RecognitionSession,
    SpeechEngine,
    load_engine,
    resolve_engine_class,
)
from ivr.speech.resample import upsample_2x
from ivr.speech.vosk_engine import VoskEngine, check_model_dir


def test_builtin_names_and_dotted_paths_resolve_to_engine_classes() -> None:
    assert resolve_engine_class("vosk") is VoskEngine
    assert resolve_engine_class("ivr.speech.vosk_engine:VoskEngine") is VoskEngine
    assert resolve_engine_class("ivr.speech.vosk_engine.VoskEngine") is VoskEngine


def test_engine_names_that_are_not_engines_are_refused_clearly() -> None:
    with pytest.raises(EngineConfigError, match="cannot import"):
        resolve_engine_class("no_such_package.engine:Engine")
    with pytest.raises(EngineConfigError, match="not a SpeechEngine"):
        resolve_engine_class("ivr.speech.grammar:Grammar")
    with pytest.raises(EngineConfigError, match="expected one of"):
        resolve_engine_class("bulgarian")


def test_a_user_engine_is_loaded_from_its_dotted_path_with_its_options() -> None:
    engine = load_engine(f"{__name__}:EchoEngine", {"language": "bg"})
    assert isinstance(engine, EchoEngine) and engine.options == {"language": "bg"}
    assert engine.supports("bg-BG") and not engine.supports("en")


class EchoEngine(SpeechEngine):
    """A user's engine as a config would name it: constructed with the options mapping."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.languages = (options["language"],)

    def start(self, grammar: Grammar, on_partial: PartialCallback | None = None) -> RecognitionSession:
        raise NotImplementedError("not used by this test")

    def close(self) -> None:
        return None


def _layout(root: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def test_vosk_model_directory_problems_are_named(tmp_path: Path) -> None:
    model = _layout(tmp_path / "vosk-model-small-bg-0.1", ["am/final.mdl", "graph/HCLG.fst", "ivector/final.ie"])
    problems = check_model_dir(model)
    assert "missing conf/mfcc.conf" in problems
    assert "missing graph/words.txt (needed with graph/HCLG.fst)" in problems
    assert "missing graph/phones/word_boundary.int" in problems
    assert "missing ivector/final.dubm" in problems
    with pytest.raises(EngineConfigError, match=r"missing conf/mfcc.conf; .*words.txt"):
        VoskEngine({"model": str(model)})
    assert check_model_dir(tmp_path / "nope") == [f"{tmp_path / 'nope'} is not a directory"]


def test_vosk_needs_a_model_path_option() -> None:
    with pytest.raises(EngineConfigError, match="model"):
        VoskEngine({})


def test_a_complete_lookahead_layout_passes_the_check(tmp_path: Path) -> None:
    model = _layout(tmp_path / "m", ["am/final.mdl", "conf/mfcc.conf", "graph/HCLr.fst", "graph/Gr.fst",
                                     "graph/phones/word_boundary.int"])
    assert check_model_dir(model) == []


def test_speech_settings_defaults_and_limits() -> None:
    s = SpeechSettings()
    assert s.engine == "pocketsphinx" and 0 < s.confidence_threshold < 1
    assert SpeechSettings(pool_size=3).engine_options() == {"pool_size": 3}
    with pytest.raises(ValidationError):
        SpeechSettings(vad_aggressiveness=4)
    with pytest.raises(ValidationError):
        SpeechSettings(start_voiced=0.5, start_window=0.2)
    with pytest.raises(ValidationError):
        SpeechSettings.model_validate({"engine": "vosk", "modle": "/x"})


def test_linear_upsampling_interpolates_between_samples() -> None:
    x = np.array([0, 100, -100, 50], dtype=np.int16)
    assert upsample_2x(x).tolist() == [0, 50, 100, 0, -100, -25, 50, 50]
    assert upsample_2x(np.zeros(0, dtype=np.int16)).size == 0
    assert upsample_2x(np.zeros(160, dtype=np.int16), "soxr").size == 320
