"""Which parts of a flow graph the scenarios exercised: nodes, and every way out of each node.

The units counted are the flow's nodes and its edges, split the way ops think of them: each menu key and each
spoken keyword (per language) of each option, no-input and no-match of every menu and collect node (the retry
itself, whether or not it leads elsewhere), every failure path, every branch case and ``else``, and an hours
node's open / closed / holiday. They are read from the traces the flow engine writes for each call (the same
traces that go into call records), so what is covered is what a call really did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr.flows.loader import FlowTree, LoadedFlow
from ivr.flows.model import CollectNode, Edge, MenuNode
from ivr.flows.runtime import TraceEvent

__all__ = ["CoverageUnit", "FlowCoverage"]


@dataclass(frozen=True, slots=True)
class CoverageUnit:
    flow: str
    node: str
    kind: str  # "node", an edge kind, "key", "word", "no_input", "no_match"
    label: str
    file: str
    line: int
    column: int
    language: str = ""

    def describe(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.kind == "node":
            return f"{where}: node `{self.node}`"
        return f"{where}: `{self.node}` {self.label}"


@dataclass(slots=True)
class _FlowUnits:
    loaded: LoadedFlow
    nodes: dict[str, CoverageUnit] = field(default_factory=dict)
    edges: dict[tuple[str, tuple[Any, ...]], CoverageUnit] = field(default_factory=dict)


class FlowCoverage:
    """Coverage of every flow in the trees given, fed with call traces (:meth:`add_trace`)."""

    def __init__(self, trees: Iterable[FlowTree], *, recognised: Callable[[str], bool] | None = None) -> None:
        """``recognised(language)``: whether the daemon can hear words in that language. Spoken keywords in a
        language it cannot hear are listed apart and not counted: no call can take those edges there."""
        self._recognised = recognised
        self._flows: dict[str, _FlowUnits] = {}
        for tree in trees:
            for loaded in tree.flows.values():
                name = loaded.flow.name
                if name not in self._flows:
                    self._flows[name] = self._units_of(loaded)
        self.covered: set[CoverageUnit] = set()

    # ---- the units ----

    @staticmethod
    def _units_of(loaded: LoadedFlow) -> _FlowUnits:
        units = _FlowUnits(loaded)
        name = loaded.flow.name
        file = loaded.file

        def at(loc: tuple[Any, ...], *, key: bool = False) -> tuple[int, int]:
            full = ("nodes", *loc)
            if loaded.positions.has(full):
                return loaded.positions.key(full) if key else loaded.positions.value(full)
            return 1, 1

        for node_id, node in loaded.flow.nodes.items():
            line, column = at((node_id,), key=True)
            units.nodes[node_id] = CoverageUnit(name, node_id, "node", "", file, line, column)
            for edge in node.edges():
                if edge.kind == "option" and isinstance(node, MenuNode):
                    option = node.options[int(edge.loc[1])]
                    if option.key is not None:
                        line, column = at((node_id, "options", edge.loc[1], "key"))
                        units.edges[(node_id, ("key", option.key))] = CoverageUnit(
                            name, node_id, "key", f"key {option.key} -> {edge.target}", file, line, column
                        )
                    for language, words in option.words.items():
                        for word in words:
                            line, column = at((node_id, "options", edge.loc[1], "words", language))
                            units.edges[(node_id, ("word", language, word.casefold()))] = CoverageUnit(
                                name,
                                node_id,
                                "word",
                                f'word "{word}" ({language}) -> {edge.target}',
                                file,
                                line,
                                column,
                                language,
                            )
                    continue
                line, column = at((node_id, *edge.loc))
                label = f"{_edge_name(edge)} -> {edge.target}"
                units.edges[(node_id, edge.loc)] = CoverageUnit(name, node_id, edge.kind, label, file, line, column)
            if isinstance(node, MenuNode | CollectNode):
                for kind in ("no_input", "no_match"):
                    line, column = (
                        at((node_id, kind))
                        if loaded.positions.has(("nodes", node_id, kind))
                        else at((node_id,), key=True)
                    )
                    units.edges[(node_id, (kind,))] = CoverageUnit(
                        name, node_id, kind, kind.replace("_", "-"), file, line, column
                    )
        return units

    def _counted(self, unit: CoverageUnit) -> bool:
        return unit.kind != "word" or self._recognised is None or self._recognised(unit.language)

    @property
    def units(self) -> list[CoverageUnit]:
        """The units counted (spoken keywords in a language nothing recognises are not)."""
        out: list[CoverageUnit] = []
        for flow in self._flows.values():
            out.extend(flow.nodes.values())
            out.extend(u for u in flow.edges.values() if self._counted(u))
        return out

    @property
    def untestable(self) -> list[CoverageUnit]:
        """Spoken keywords in languages the daemon cannot hear (no recogniser for them)."""
        return [u for flow in self._flows.values() for u in flow.edges.values() if not self._counted(u)]

    # ---- traces ----

    def add_trace(self, events: Sequence[TraceEvent]) -> None:
        """One call's trace, in order."""
        current: tuple[str, str] | None = None
        inputs: dict[str, list[TraceEvent]] = {}
        last_in_flow: dict[str, str] = {}  # a subflow returns to the node after the one that called it
        for event in events:
            flow = self._flows.get(event.flow)
            if flow is None or event.node is None:
                continue
            if event.kind == "node":
                node_unit = flow.nodes.get(event.node)
                if node_unit is not None:
                    self.covered.add(node_unit)
                previous = last_in_flow.get(event.flow)
                if previous is not None:
                    self._transition(flow, previous, event.node, inputs.get(event.flow, []))
                current = (event.flow, event.node)
                last_in_flow[event.flow] = event.node
                inputs[event.flow] = []
            elif event.kind == "input" and current == (event.flow, event.node):
                inputs.setdefault(event.flow, []).append(event)
                self._input(flow, event)

    def _input(self, flow: _FlowUnits, event: TraceEvent) -> None:
        """Units an input covers by itself: a key or word choice, a no-input or no-match retry."""
        assert event.node is not None
        detail = event.detail
        result = detail.get("result")
        if result in ("no_input", "no_match"):
            unit = flow.edges.get((event.node, (result,)))
            if unit is not None:
                self.covered.add(unit)
            target = detail.get("then")
            if target not in (None, "retry"):
                node = flow.loaded.flow.nodes.get(event.node)
                retry = getattr(node, result, None)
                if retry is not None and retry.next == target:
                    self._cover(flow, event.node, (result, "next"))
                else:
                    self._cover(flow, event.node, ("failure",))
        elif result == "choice":
            if detail.get("key") is not None:
                self._cover(flow, event.node, ("key", str(detail["key"])))
            if detail.get("word") is not None:
                language = str(detail.get("language") or "")
                word = str(detail["word"]).casefold()
                keys = [k for k in flow.edges if k[0] == event.node and k[1][0] == "word" and k[1][2] == word]
                for key in keys:
                    if not language or key[1][1] == language:
                        self.covered.add(flow.edges[key])

    def _transition(self, flow: _FlowUnits, source: str, target: str, inputs: list[TraceEvent]) -> None:
        node = flow.loaded.flow.nodes.get(source)
        if node is None:
            return
        candidates = [e for e in node.edges() if e.target == target and e.kind != "option"]
        if not candidates:
            return
        if len(candidates) == 1:
            self._cover(flow, source, candidates[0].loc)
            return
        detail = inputs[-1].detail if inputs else {}
        result = detail.get("result")
        wanted: str | None = None
        if result == "branch":
            case = detail.get("case")
            chosen = next(
                (e for e in candidates if (case == "else" and e.kind == "else") or
                 (e.kind == "case" and isinstance(case, int) and e.loc == ("cases", case - 1, "next"))),
                None,
            )  # fmt: skip
            if chosen is not None:
                self._cover(flow, source, chosen.loc)
            return
        if result in ("open", "closed"):
            wanted = "open" if result == "open" else "holiday" if "holiday" in detail else "closed"
            if not any(e.kind == wanted for e in candidates):
                wanted = "closed"
        elif result in ("no_input", "no_match"):
            return  # covered by _input
        elif detail.get("ok") is False or str(result or "").startswith(("fail", "invalid", "error")):
            wanted = "failure"
        else:
            wanted = "next"
        chosen_edge = next((e for e in candidates if e.kind == wanted), candidates[0])
        self._cover(flow, source, chosen_edge.loc)

    def _cover(self, flow: _FlowUnits, node: str, loc: tuple[Any, ...]) -> None:
        unit = flow.edges.get((node, loc))
        if unit is not None:
            self.covered.add(unit)

    # ---- report ----

    def totals(self) -> tuple[int, int, int, int]:
        """(nodes covered, nodes, edges covered, edges)."""
        nodes = [u for u in self.units if u.kind == "node"]
        edges = [u for u in self.units if u.kind != "node"]
        return (
            sum(1 for u in nodes if u in self.covered),
            len(nodes),
            sum(1 for u in edges if u in self.covered),
            len(edges),
        )

    def percent(self) -> float:
        """Edges and nodes together, as a percentage (100 when there is nothing to cover)."""
        units = self.units
        if not units:
            return 100.0
        return 100.0 * sum(1 for u in units if u in self.covered) / len(units)

    def missing(self) -> list[CoverageUnit]:
        return sorted((u for u in self.units if u not in self.covered), key=lambda u: (u.file, u.line, u.column))

    def report(self) -> str:
        lines: list[str] = []
        for name, flow in self._flows.items():
            nodes = list(flow.nodes.values())
            edges = [u for u in flow.edges.values() if self._counted(u)]
            n_cov = sum(1 for u in nodes if u in self.covered)
            e_cov = sum(1 for u in edges if u in self.covered)
            lines.append(f"{name} ({flow.loaded.file}): nodes {n_cov}/{len(nodes)}, edges {e_cov}/{len(edges)}")
        n_cov, n_all, e_cov, e_all = self.totals()
        lines.append(f"total: nodes {n_cov}/{n_all}, edges {e_cov}/{e_all}, {self.percent():.1f}%")
        untestable = self.untestable
        if untestable:
            languages = sorted({u.language for u in untestable})
            lines.append(f"not counted: {len(untestable)} spoken keywords in {', '.join(languages)} "
                         "(no recogniser for that language is loaded; keys cover those options)")  # fmt: skip
        missing = self.missing()
        if missing:
            lines.append("not exercised:")
            lines.extend(f"  {u.describe()}" for u in missing)
        return "\n".join(lines)


def _edge_name(edge: Edge) -> str:
    if edge.kind == "case":
        return f"case {edge.label}" if edge.label else f"case {int(edge.loc[1]) + 1}"
    if edge.kind == "next":
        return "next"
    return edge.label or edge.kind
