"""What ``ivr validate``, ``ivr schema`` and ``ivr graph`` do, as plain functions returning an exit code.

``ivr/cli.py`` wires them to typer; they print through ``echo`` (default: ``print``) so tests can capture output.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import graphviz  # type: ignore[import-untyped]

from ivr.flows.checks import check_flow, reachable_nodes
from ivr.flows.loader import FlowError, LoadedFlow, Problem, load_flow, load_flow_tree
from ivr.flows.model import (
    CollectNode,
    Edge,
    GotoNode,
    HoursNode,
    HttpNode,
    LanguageNode,
    QueueNode,
    RecordNode,
    SetNode,
    SubflowNode,
)
from ivr.flows.schema import flow_json_schema

__all__ = ["flow_graph", "graph", "schema", "validate"]

Echo = Callable[[str], None]

_FLOW_SUFFIXES: Final = (".yaml", ".yml")


def _flow_files(paths: Iterable[Path | str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p
                for p in path.iterdir()
                if p.suffix in _FLOW_SUFFIXES and p.is_file() and not p.name.endswith((".test.yaml", ".test.yml"))
            )
        else:
            files.append(path)
    return files


def validate(
    paths: Sequence[Path | str],
    *,
    known_queues: set[str] | None = None,
    known_calendars: set[str] | None = None,
    echo: Echo = print,
) -> int:
    """Check flow files (a folder means every .yaml in it but scenario files, ``*.test.yaml``; subflows and goto
    targets are followed).

    Prints every problem as ``file:line:column: severity: message (hint)``, then a summary line.
    Returns 0 when there are no errors (warnings alone are fine), 1 otherwise."""
    files = _flow_files(paths)
    if not files:
        echo("no flow files given")
        return 1
    problems: dict[Problem, None] = {}
    checked: set[Path] = set()
    for file in files:
        if file.resolve() in checked:
            continue
        try:
            tree = load_flow_tree(file, known_queues=known_queues, known_calendars=known_calendars)
        except FlowError as exc:
            problems.update(dict.fromkeys(exc.problems))
            checked.add(file.resolve())
            continue
        problems.update(dict.fromkeys(tree.warnings))
        checked.update(tree.flows)
    ordered = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.severity != "error", p.message))
    for problem in ordered:
        echo(str(problem))
    errors = sum(1 for p in ordered if p.severity == "error")
    warnings = len(ordered) - errors
    count = len(checked)
    echo(f"{count} flow file{'s' if count != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, "
         f"{warnings} warning{'s' if warnings != 1 else ''}")  # fmt: skip
    return 1 if errors else 0


def schema(out_path: Path | str, *, echo: Echo = print) -> int:
    """Write the flow JSON Schema to ``out_path`` (``-``: print it)."""
    text = json.dumps(flow_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if str(out_path) == "-":
        echo(text.rstrip("\n"))
        return 0
    try:
        Path(out_path).write_text(text, encoding="utf-8")
    except OSError as exc:
        echo(f"{out_path}: cannot write: {exc.strerror}")
        return 1
    echo(f"wrote {out_path}")
    return 0


# ---- graph ------------------------------------------------------------------------------------------------------

_SHAPES: Final = {
    "play": "box",
    "menu": "box",
    "collect": "box",
    "branch": "diamond",
    "set": "note",
    "hours": "hexagon",
    "language": "parallelogram",
    "http": "cylinder",
    "queue": "doubleoctagon",
    "record": "tab",
    "goto": "cds",
    "subflow": "component",
    "return": "house",
    "hangup": "Msquare",
}
_FILL: Final = {"menu": "#dbeafe", "collect": "#dcfce7", "queue": "#fef3c7", "hangup": "#fee2e2", "return": "#fee2e2",
                "goto": "#ede9fe", "subflow": "#ede9fe"}  # fmt: skip
_EDGE_STYLE: Final[dict[str, dict[str, str]]] = {
    "next": {},
    "option": {"color": "#1d4ed8", "fontcolor": "#1d4ed8"},
    "case": {"color": "#0f766e", "fontcolor": "#0f766e"},
    "else": {"color": "#0f766e", "fontcolor": "#0f766e", "style": "dashed"},
    "open": {"color": "#15803d", "fontcolor": "#15803d"},
    "closed": {"color": "#6b7280", "fontcolor": "#6b7280"},
    "holiday": {"color": "#6b7280", "fontcolor": "#6b7280", "style": "dashed"},
    "no_input": {"color": "#7c3aed", "fontcolor": "#7c3aed", "style": "dashed"},
    "no_match": {"color": "#c2410c", "fontcolor": "#c2410c", "style": "dashed"},
    "failure": {"color": "#b91c1c", "fontcolor": "#b91c1c", "style": "dotted", "penwidth": "2"},
}


def _wrap(text: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _node_label(node_id: str, loaded: LoadedFlow) -> str:
    node = loaded.flow.nodes[node_id]
    detail = ""
    if isinstance(node, QueueNode):
        detail = f"queue {node.queue}"
    elif isinstance(node, HoursNode):
        detail = f"calendar {node.calendar}"
    elif isinstance(node, CollectNode):
        detail = f"{node.min_digits}-{node.max_digits} digits -> {node.into}"
        if node.terminator:
            detail += f", ends with {node.terminator}"
        if node.sensitive:
            detail += " (masked)"
    elif isinstance(node, LanguageNode):
        detail = f"language {node.language}"
    elif isinstance(node, SetNode):
        detail = ", ".join(node.vars)
    elif isinstance(node, HttpNode):
        detail = f"{node.method} {node.url}"
    elif isinstance(node, RecordNode):
        detail = f"max {node.max_length:g}s -> {node.into}"
    elif isinstance(node, (GotoNode, SubflowNode)):
        detail = node.flow + (f" @ {node.node}" if isinstance(node, GotoNode) and node.node else "")
    lines = [node_id, f"({node.type})"]
    if detail:
        lines.append(_wrap(detail, 34))
    return "\n".join(lines)


def _edge_label(edge: Edge) -> str:
    if edge.kind == "option":
        parts = edge.label.split(" | ")
        return "\n".join(_wrap(p, 30) for p in parts)
    if edge.kind == "next":
        return ""
    return _wrap(edge.label, 30)


def flow_graph(loaded: LoadedFlow) -> graphviz.Digraph:
    """The flow as a Graphviz digraph: a node per flow node (shape by kind), keys and keywords on option edges,
    no-input / no-match / failure edges dashed or dotted in their own colours, unreachable nodes greyed and labelled,
    targets that do not exist drawn in red."""
    flow = loaded.flow
    dot = graphviz.Digraph(name=flow.name, comment=f"{flow.name} ({loaded.path.name})")
    dot.attr(rankdir="LR", fontname="Helvetica", label=f"{flow.name} - {loaded.path.name}", labelloc="t")
    dot.attr("node", fontname="Helvetica", fontsize="11", style="filled", fillcolor="white")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    reached = reachable_nodes(loaded)
    dot.node("__start__", "start", shape="circle", fillcolor="black", fontcolor="white", width="0.5")
    if flow.start in flow.nodes:
        dot.edge("__start__", flow.start)
    missing: set[str] = set()
    for node_id, node in flow.nodes.items():
        attrs = {"shape": _SHAPES[node.type], "fillcolor": _FILL.get(node.type, "white")}
        label = _node_label(node_id, loaded)
        if node.type in ("play", "menu", "collect"):
            attrs["style"] = "filled,rounded"
        if node_id not in reached:
            attrs.update(style="filled,dashed", fillcolor="#e5e7eb", color="#6b7280", fontcolor="#6b7280")
            label += "\nUNREACHABLE"
        if node.note:
            attrs["tooltip"] = node.note
        dot.node(node_id, label, **attrs)
        for edge in node.edges():
            target = edge.target
            if target not in flow.nodes:
                target = f"__missing__{edge.target}"
                if target not in missing:
                    missing.add(target)
                    dot.node(target, f"{edge.target}\n(no such node)", shape="box", color="red", fontcolor="red",
                             style="dashed")  # fmt: skip
            dot.edge(node_id, target, label=_edge_label(edge), **_EDGE_STYLE[edge.kind])
    return dot


def graph(flow_path: Path | str, out_path: Path | str, *, echo: Echo = print) -> int:
    """Draw the flow at ``flow_path`` into ``out_path``; the suffix picks the format (.svg, .png, .pdf; .dot or .gv
    writes the Graphviz source and needs no Graphviz install). A flow with check errors is still drawn (the errors
    are printed), so ops can see what is wrong; a flow that does not load at all is not."""
    try:
        loaded = load_flow(flow_path, check=False)
    except FlowError as exc:
        for problem in exc.problems:
            echo(str(problem))
        return 1
    for problem in sorted(check_flow(loaded), key=lambda p: (p.line, p.column, p.severity != "error")):
        echo(str(problem))
    dot = flow_graph(loaded)
    out = Path(out_path)
    fmt = out.suffix.lstrip(".").lower() or "svg"
    try:
        if fmt in ("dot", "gv"):
            out.write_text(dot.source, encoding="utf-8")
        else:
            out.write_bytes(dot.pipe(format=fmt))
    except graphviz.ExecutableNotFound:
        echo("Graphviz's dot program is not installed (Debian: apt-get install graphviz); write a .dot file instead")
        return 1
    except (graphviz.CalledProcessError, ValueError) as exc:
        echo(f"cannot draw {out}: {exc}")
        return 1
    except OSError as exc:
        echo(f"{out}: cannot write: {exc.strerror}")
        return 1
    echo(f"wrote {out}")
    return 0
