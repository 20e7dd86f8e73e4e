"""The rules of docs/architecture.md, checked on the source: no import circles, sans-I/O SIP, flows that know no SIP,
and the daemon's one-of-a-kind parts written once.

Imports are read with ``ast`` from every module of ``ivr/``, at any depth (an import inside a function or under
``if TYPE_CHECKING`` still ties two modules together, so it counts).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ivr"


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST, package: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def imports() -> dict[str, frozenset[str]]:
    """Every ivr module and the ivr modules it imports (names that are modules, not the objects in them)."""
    known = modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = frozenset(m for m in _imported(tree, package) if m in known and m != name)
    return graph


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_no_import_circles_among_ivr_modules() -> None:
    assert import_cycles(imports()) == []


@pytest.mark.parametrize("layer", ["ivr.sip"])
def test_the_sip_core_is_sans_io(layer: str) -> None:
    """No sockets, no event loop, no clock reads, and nothing of the layers above."""
    forbidden = {"asyncio", "socket", "selectors", "threading", "time", "ivr.media", "ivr.daemon", "ivr.flows"}
    for name, path in modules().items():
        if name == layer or name.startswith(layer + "."):
            package = name.rpartition(".")[0]
            found = set(_imported(ast.parse(path.read_text(encoding="utf-8")), package))
            bad = {m for m in found for f in forbidden if m == f or m.startswith(f + ".")}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_flows_know_no_sip_and_no_media() -> None:
    for name, targets in imports().items():
        if name.startswith("ivr.flows"):
            bad = sorted(t for t in targets if t.startswith(("ivr.sip", "ivr.media", "ivr.daemon", "ivr.call")))
            assert not bad, f"{name} imports {bad}"


def _calls_of(attribute: str) -> list[str]:
    """Modules of ivr/ that call ``X(...)`` or ``something.X(...)`` named ``attribute``."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if called == attribute:
                    found.append(name)
                    break
    return sorted(found)


def test_media_streams_are_built_in_one_place() -> None:
    """offer/answer -> RTP port -> MediaStream exists once: every leg's stream comes from a MediaSession."""
    assert _calls_of("MediaStream") == ["ivr.daemon.media_session"]


def test_the_sip_endpoint_is_driven_in_one_place() -> None:
    """The loop that feeds an endpoint and acts on what it says exists once, in the SIP driver."""
    drivers = sorted(set(_calls_of("datagrams_to_send")) | set(_calls_of("outputs")))
    assert drivers == ["ivr.daemon.sip_driver"]
