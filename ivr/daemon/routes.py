"""Routes: which flow answers which dialled number, loading them, and reloading when their files change.

:func:`load_routes` (blocking: run it in an executor) loads each routed flow tree once, builds its engine and
prepares all its audio; a :class:`RouteTable` then maps a dialled number to its :class:`FlowRoute`. A failed load
raises and changes nothing, so a reload swaps the whole table or none of it, and calls in progress keep the engine
they started with.

:class:`FlowWatcher` polls the modification times of every loaded flow file and every recording in a ``prompts/``
folder beside one. The scan (an ``rglob`` and a ``stat`` per file) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ivr.call import Call
from ivr.config import RouteSettings
from ivr.flows.engine import FlowEngine
from ivr.flows.loader import load_flow_tree
from ivr.media.prompts import Prompt

__all__ = ["FlowRoute", "FlowWatcher", "RouteTable", "load_routes"]

log = structlog.get_logger("ivr.routes")

Engine = FlowEngine[Prompt, Call]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class FlowRoute:
    """A line: the dialled numbers of one client, and the flow (engine) that answers them."""

    client: str
    numbers: tuple[str, ...]
    path: Path
    engine: Engine
    version: str
    """A content hash of the flow files as loaded, so a record says exactly which version a call ran."""

    @property
    def flow_name(self) -> str:
        return self.engine.tree.root.flow.name

    def describe(self) -> dict[str, object]:
        return {"client": self.client, "numbers": list(self.numbers), "flow": self.flow_name,
                "file": str(self.path), "version": self.version}  # fmt: skip


@dataclass(frozen=True)
class RouteTable:
    routes: list[FlowRoute]

    def __bool__(self) -> bool:
        return bool(self.routes)

    def match(self, dialled: str) -> FlowRoute | None:
        for route in self.routes:
            if any(fnmatch.fnmatchcase(dialled, pattern) for pattern in route.numbers):
                return route
        return None

    def describe(self) -> list[dict[str, object]]:
        return [r.describe() for r in self.routes]


def load_routes(
    settings: Sequence[RouteSettings],
    *,
    resolve: Callable[[str], Path],
    known_queues: Iterable[str],
    build_engine: Callable[..., Engine],
) -> RouteTable:
    """Blocking: load each routed flow tree (once per file), build its engine with ``build_engine(tree)``.
    Raises :class:`~ivr.flows.loader.FlowError` (or the engine's audio errors) and returns nothing on failure."""
    queues = set(known_queues)
    routes: list[FlowRoute] = []
    engines: dict[Path, tuple[Engine, str]] = {}
    for setting in settings:
        path = resolve(setting.flow).resolve()
        if path not in engines:
            tree = load_flow_tree(path, known_queues=queues)
            digest = hashlib.sha256()
            for flow_path, loaded in sorted(tree.flows.items()):
                digest.update(str(flow_path).encode() + b"\0" + loaded.path.read_bytes())
            engines[path] = (build_engine(tree), digest.hexdigest()[:12])
        engine, version = engines[path]
        routes.append(FlowRoute(setting.client, tuple(setting.numbers), path, engine, version))
    return RouteTable(routes)


def watched_files(table: RouteTable) -> dict[Path, float]:
    """Blocking: modification times of every loaded flow file and every recording in a prompts/ folder beside one."""
    seen: dict[Path, float] = {}
    folders: set[Path] = set()
    for route in table.routes:
        for loaded in route.engine.tree.flows.values():
            seen[loaded.path] = _mtime(loaded.path)
            folders.add(loaded.base_dir / "prompts")
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.suffix.lower() in AUDIO_SUFFIXES:
                    seen[path] = _mtime(path)
    return seen


class FlowWatcher:
    """Calls ``reload()`` when a flow or recorded prompt of the current table changes (scans off the loop)."""

    def __init__(
        self, table: Callable[[], RouteTable], reload: Callable[[], Awaitable[object]], interval: float
    ) -> None:
        self._table = table
        self._reload = reload
        self.interval = interval

    async def _scan(self) -> dict[Path, float]:
        table = self._table()
        return await asyncio.get_running_loop().run_in_executor(None, watched_files, table)

    async def run(self) -> None:
        """Until cancelled; a failed reload logs why (the reload does) and keeps the running version."""
        known = await self._scan()
        while True:
            await asyncio.sleep(self.interval)
            current = await self._scan()
            if current != known:
                changed = sorted(str(p) for p in set(current) | set(known) if current.get(p) != known.get(p))
                log.info("flow files changed; reloading", changed=changed[:10])
                await self._reload()
                known = await self._scan()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return -1.0
