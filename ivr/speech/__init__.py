"""Offline speech recognition for menus: a Recognizer interface, the pocketsphinx (default) and Vosk engines,
VAD gating and endpointing, and the asyncio ``SpeechListener`` a Call attaches to its audio. See docs/speech.md."""

from ivr.speech.config import SpeechSettings
from ivr.speech.grammar import Grammar, GrammarError, digits_from_text, normalize
from ivr.speech.listener import SpeechListener
from ivr.speech.recognizer import (
    Alternative,
    EngineConfigError,
    NoMatchReason,
    RecognitionResult,
    RecognitionSession,
    SpeechEngine,
    load_engine,
    resolve_engine_class,
)
from ivr.speech.vad import Endpointer, SpeechEnded, SpeechFrames, SpeechStarted, WebRtcVad

__all__ = [
    "Alternative",
    "Endpointer",
    "EngineConfigError",
    "Grammar",
    "GrammarError",
    "NoMatchReason",
    "RecognitionResult",
    "RecognitionSession",
    "SpeechEnded",
    "SpeechEngine",
    "SpeechFrames",
    "SpeechListener",
    "SpeechSettings",
    "SpeechStarted",
    "WebRtcVad",
    "digits_from_text",
    "load_engine",
    "normalize",
    "resolve_engine_class",
]
