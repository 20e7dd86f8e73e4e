"""``ivr call NUMBER``: a terminal phone for ops, against a running daemon.

It dials over UDP, then shows each prompt as it is heard (its name, language and text, named from the audio with
the flows of the daemon's config), reads commands from the terminal, and shows how the call ends (a transfer with
its data, or a hang-up)::

    $ ivr call 2000 --target 127.0.0.1:5060
    calling sip:2000@127.0.0.1:5060 from 0888123456 ...
    answered (PCMU)
    ♪ welcome (bg): Здравейте! Благодарим Ви, че се обадихте на Витоша Телеком.
    > 2
    ♪ main-menu (en): For billing and payments, press one or say "billing". ...

Commands: keys (``2``, ``12345678#``) are pressed as RFC 4733 events; ``info 5`` sends SIP INFO; ``say TEXT``
speaks (espeak-ng); ``wait 5`` waits; ``hangup`` (or ``q``, or end of input) hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ivr.config import IvrConfig
from ivr.daemon.prompt_library import PromptLibrary
from ivr.flows.engine import FlowEngine
from ivr.flows.loader import load_flow_tree
from ivr.flows.runtime import AudioPart, FixtureHttpClient, HandoffResult, RecordResult
from ivr.simulator.caller import CallFailed, SimCaller, SimCallerError
from ivr.simulator.catalog import Heard, PromptCatalog
from ivr.simulator.lab import SimulatedCall, StepFailed

__all__ = ["catalog_for_config", "interactive_call", "stdin_lines"]

Echo = Callable[[str], None]
HELP = "commands: KEYS (e.g. 2 or 12345678#) | info KEYS | say TEXT | wait SECONDS | hangup"


class _NoHandoff:
    async def transfer(self, call: object, queue: str, data: dict[str, str]) -> HandoffResult:
        return HandoffResult(False, "catalog only")


class _NoRecorder:
    async def record(self, call: object, **kwargs: object) -> RecordResult:
        return RecordResult(None, 0.0, "catalog only")


def catalog_for_config(config: IvrConfig) -> PromptCatalog:
    """Every prompt of every flow the config routes to, from the same prompt cache the daemon fills."""
    library = PromptLibrary(config.resolve(config.flows.prompt_cache))
    parts: set[AudioPart] = set()
    seen: set[Path] = set()
    for route in config.routes:
        path = config.resolve(route.flow).resolve()
        if path in seen:
            continue
        seen.add(path)
        tree = load_flow_tree(path)
        engine: FlowEngine[object, Any] = FlowEngine(
            tree, player=library, handoff=_NoHandoff(), recorder=_NoRecorder(), http=FixtureHttpClient()
        )
        parts.update(engine.audio_parts())
    library.prepare(parts)
    return PromptCatalog(library, parts)


async def stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, input, "> ")
        except EOFError:
            return
        yield line


def _show(heard: Heard) -> str:
    if not heard.name:
        return f'♪ ({heard.language}) "{" ".join(heard.words)}"'
    text = f": {heard.text}" if heard.text else ""
    said = f" [{' '.join(heard.words)}]" if heard.words else ""
    return f"♪ {heard.name} ({heard.language}){said}{text}"


async def interactive_call(
    target: str,
    caller_number: str,
    catalog: PromptCatalog,
    lines: AsyncIterator[str],
    *,
    echo: Echo = print,
    codec: str = "PCMU",
) -> int:
    """Place the call and run it until it ends; returns 0 when it was answered, 1 otherwise."""
    sim = SimCaller()
    await sim.start()
    echo(f"calling {target} from {caller_number} ...")
    try:
        await sim.dial(target, caller_number, codecs=(codec,))
    except CallFailed as exc:
        echo(f"not answered: {exc}")
        await sim.close()
        return 1
    echo(f"answered ({sim.media.codec.name if sim.media else codec})")
    call = SimulatedCall(sim, catalog, codec=codec)
    shown = 0
    announced_transfers = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal shown, announced_transfers
        while not stop.is_set():
            heard = call.all_heard()
            settled = heard[:-1] if heard and sim.end is None and not call.finished(heard[-1:]) else heard
            for item in settled[shown:]:
                echo(_show(item))
            shown = max(shown, len(settled))
            for transfer in sim.transfers[announced_transfers:]:
                data = ", ".join(f"{k}={v}" for k, v in transfer.data.items()) or "no data"
                echo(f"→ transferred to {transfer.queue or transfer.target} ({data})")
            announced_transfers = len(sim.transfers)
            if sim.end is not None:
                echo(f"call ended: {sim.end.reason.value}" + (f" ({sim.end.status})" if sim.end.status else ""))
                stop.set()
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        async for raw in lines:
            if stop.is_set():
                break
            line = raw.strip()
            if not line:
                continue
            try:
                await _command(call, line, echo)
            except _HangUp:
                break
            except (StepFailed, SimCallerError, ValueError) as exc:
                echo(f"! {exc}")
            if stop.is_set():
                break
    finally:
        if sim.end is None:
            with contextlib.suppress(TimeoutError, SimCallerError):
                await sim.hangup()
        await asyncio.sleep(0.3)  # let the watcher show the last prompt and the end
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if sim.end is not None and shown == 0:
            for item in call.all_heard():
                echo(_show(item))
        await sim.close()
    return 0


class _HangUp(Exception):
    pass


async def _command(call: SimulatedCall, line: str, echo: Echo) -> None:
    words = shlex.split(line)
    head = words[0].lower()
    if head in ("hangup", "q", "quit", "bye"):
        raise _HangUp
    if head in ("help", "?"):
        echo(HELP)
        return
    if re.fullmatch(r"[0-9*#A-Da-d]+", words[0]) and len(words) == 1:
        await call.caller.press(words[0].upper())
        return
    if head == "info" and len(words) == 2:
        await call.caller.press(words[1].upper(), method="info")
        return
    if head == "say" and len(words) >= 2:
        await call.say(" ".join(words[1:]))
        return
    if head == "wait" and len(words) == 2:
        await asyncio.sleep(float(words[1].rstrip("s")))
        return
    echo(f"? {line!r}: {HELP}")
