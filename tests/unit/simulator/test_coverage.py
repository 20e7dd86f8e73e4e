"""Flow-graph coverage from call traces: which node, key, keyword, retry, failure and branch each call exercised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ivr.flows.loader import load_flow_text, load_flow_tree
from ivr.flows.runtime import TraceEvent
from ivr.simulator.coverage import FlowCoverage

FLOW = """\
name: t
languages: [en]
language: en
start: menu
prompts:
  p: {en: "Press one or two."}
nodes:
  menu:
    type: menu
    prompt: p
    options:
      - {key: "1", words: {en: [sales, buy]}, next: pick}
      - {key: "2", next: pick}
    no_input: {tries: 2, next: bye}
    no_match: {tries: 1}
    failure: bye
  pick:
    type: branch
    cases:
      - {vars: {x: "1"}, next: bye}
    else: bye
  bye: {type: hangup, prompt: p}
"""


def _trace(*items: tuple[str, str, dict[str, Any]]) -> list[TraceEvent]:
    return [TraceEvent(float(i), kind, node, detail, "c1", "t") for i, (kind, node, detail) in enumerate(items)]


def _coverage(tmp_path: Path) -> FlowCoverage:
    path = tmp_path / "t.yaml"
    path.write_text(FLOW)
    load_flow_text(FLOW, path)
    return FlowCoverage([load_flow_tree(path)])


def test_units_are_nodes_keys_words_retries_failures_and_branch_outcomes(tmp_path: Path) -> None:
    coverage = _coverage(tmp_path)
    labels = sorted(u.label for u in coverage.units if u.kind != "node")
    assert labels == sorted([
        "key 1 -> pick", 'word "sales" (en) -> pick', 'word "buy" (en) -> pick', "key 2 -> pick",
        "no input -> bye", "failure -> bye", "no-input", "no-match", "case x 1 -> bye", "else -> bye",
    ])  # fmt: skip
    assert coverage.totals() == (0, 3, 0, 10)


def test_a_trace_covers_the_key_taken_and_the_branch_case_chosen(tmp_path: Path) -> None:
    coverage = _coverage(tmp_path)
    coverage.add_trace(
        _trace(
            ("node", "menu", {}),
            ("input", "menu", {"key": "1", "result": "choice", "next": "pick"}),
            ("node", "pick", {}),
            ("input", "pick", {"result": "branch", "case": 1, "next": "bye"}),
            ("node", "bye", {}),
        )
    )
    covered = sorted(u.label for u in coverage.covered if u.kind != "node")
    assert covered == ["case x 1 -> bye", "key 1 -> pick"]
    assert coverage.totals() == (3, 3, 2, 10)


def test_retries_and_the_edge_after_the_last_one(tmp_path: Path) -> None:
    coverage = _coverage(tmp_path)
    coverage.add_trace(
        _trace(
            ("node", "menu", {}),
            ("input", "menu", {"result": "no_input", "count": 1, "tries": 2, "then": "retry"}),
            ("input", "menu", {"word": "Sales", "result": "choice", "next": "pick"}),
            ("node", "pick", {}),
            ("input", "pick", {"result": "branch", "case": "else", "next": "bye"}),
            ("node", "bye", {}),
        )
    )
    coverage.add_trace(
        _trace(
            ("node", "menu", {}),
            ("input", "menu", {"key": "7", "result": "no_match"}),
            ("input", "menu", {"result": "no_match", "count": 1, "tries": 1, "then": "bye"}),
            ("node", "bye", {}),
        )
    )
    covered = sorted(u.label for u in coverage.covered if u.kind != "node")
    assert covered == sorted(['word "sales" (en) -> pick', "else -> bye", "no-input", "no-match", "failure -> bye"])
    missing = [u.describe() for u in coverage.missing()]
    assert any(m.endswith("`menu` key 2 -> pick") and ":13:" in m for m in missing), missing


def test_a_subflow_return_covers_the_edge_out_of_the_calling_node() -> None:
    repo = Path(__file__).resolve().parents[3]
    tree = load_flow_tree(repo / "configs" / "flows" / "support-line.yaml")
    coverage = FlowCoverage([tree])
    events = [
        TraceEvent(0, "node", "greet", {}, "c", "vitosha-support"),
        TraceEvent(1, "node", "identify", {}, "c", "vitosha-support"),
        TraceEvent(2, "node", "ask-egn", {}, "c", "identify-caller"),
        TraceEvent(3, "node", "done", {}, "c", "identify-caller"),
        TraceEvent(4, "node", "route", {}, "c", "vitosha-support"),
    ]
    coverage.add_trace(events)
    covered = {(u.node, u.label) for u in coverage.covered if u.kind != "node"}
    assert ("identify", "next -> route") in covered
    assert ("greet", "next -> identify") in covered
