"""`ivr call`: the terminal phone, scripted, against a daemon on loopback UDP."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

from ivr.config import load_config
from ivr.simulator.interactive import interactive_call
from ivr.simulator.lab import IvrLab

REPO = Path(__file__).resolve().parents[2]
FLOW = Path(__file__).parent / "scenarios" / "shop.yaml"


async def _script(*lines: str) -> AsyncIterator[str]:
    import asyncio

    for line in lines:
        await asyncio.sleep(2.5 if line != "2" else 3.5)
        yield line


async def test_the_terminal_caller_shows_prompts_with_their_text_takes_keys_and_shows_the_end() -> None:
    async with IvrLab(flow=FLOW) as lab:
        assert lab.server is not None
        lab._clock = lambda: dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
        catalog = next(iter(lab._catalogs.values()))
        out: list[str] = []
        host, port = lab.server.config.sip.host, lab.server.config.sip.port
        code = await interactive_call(f"sip:100@{host}:{port}", "0888000111", catalog, _script("help", "2", "wait 4"),
                                      echo=out.append)  # fmt: skip
    assert code == 0
    text = "\n".join(out)
    assert out[0] == f"calling sip:100@{host}:{port} from 0888000111 ..."
    assert "answered (PCMU)" in out
    assert "♪ hello (en): Hello, this is the shop." in out, text
    assert "♪ menu (en): For orders press one, for opening hours press two." in out, text
    assert "♪ hours-info (en): We are open on weekdays from nine to five." in out, text
    assert any(line.startswith("commands: KEYS") for line in out), text
    assert "call ended: remote_bye" in out, text


def test_the_catalog_comes_from_the_daemon_config_routes() -> None:
    from ivr.simulator.interactive import catalog_for_config

    catalog = catalog_for_config(load_config(REPO / "configs" / "ivr.yaml"))
    names = {entry.name for entry in catalog.entries.values() if entry.kind == "prompt"}
    assert {"welcome", "main-menu", "support-welcome", "enter-egn"} <= names
