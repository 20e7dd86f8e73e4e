"""validate / schema / graph as functions, the JSON Schema against the example flows, and the examples themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ivr.flows.commands import flow_graph, graph, schema, validate
from ivr.flows.loader import _parse_yaml, load_flow_tree
from ivr.flows.schema import flow_json_schema
from tests.unit.flows.flowtext import flow_text, load_ok, write

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "configs" / "flows"
EXAMPLE_FLOWS = [EXAMPLES / "main.yaml", EXAMPLES / "support-line.yaml", EXAMPLES / "subflows" / "identify.yaml"]
QUEUES = {"billing", "support", "sales", "operator", "support-priority"}


def run_validate(paths: list[Path], **kwargs: Any) -> tuple[int, list[str]]:
    out: list[str] = []
    code = validate(paths, echo=out.append, **kwargs)
    return code, out


def yaml_data(path: Path) -> Any:
    data, _positions, _problems = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
    return data


# ---- the shipped examples -------------------------------------------------------------------------------------


def test_example_flows_validate_cleanly_with_no_warnings() -> None:
    code, out = run_validate([EXAMPLES], known_queues=QUEUES)
    assert out == ["3 flow files checked: 0 errors, 0 warnings"]
    assert code == 0


def test_example_main_line_has_the_shape_the_client_asked_for() -> None:
    tree = load_flow_tree(EXAMPLES / "main.yaml", known_queues=QUEUES)
    flow = tree.root.flow
    assert flow.start == "hours" and flow.nodes["hours"].type == "hours"
    choose = flow.nodes["choose-language"]
    assert [(o.key, o.next) for o in choose.options] == [("1", "speak-bulgarian"), ("2", "speak-english")]  # type: ignore[union-attr]
    account = flow.nodes["billing-account"]
    assert (account.min_digits, account.max_digits, account.terminator) == (6, 10, "#")  # type: ignore[union-attr]
    assert account.confirm is not None  # type: ignore[union-attr]
    billing = flow.nodes["to-billing"]
    assert billing.queue == "billing"  # type: ignore[union-attr]
    assert billing.data == {"account": "{{ account }}", "language": "{{ language }}", "intent": "billing"}  # type: ignore[union-attr]
    assert {n.type for n in flow.nodes.values()} >= {
        "hours",
        "menu",
        "language",
        "collect",
        "queue",
        "record",
        "hangup",
    }


def test_example_support_line_runs_a_subflow_that_returns() -> None:
    tree = load_flow_tree(EXAMPLES / "support-line.yaml", known_queues=QUEUES)
    assert sorted(p.name for p in tree.flows) == ["identify.yaml", "support-line.yaml"]
    sub = tree.flow_at(EXAMPLES / "subflows" / "identify.yaml").flow
    assert any(n.type == "return" for n in sub.nodes.values())
    assert sub.nodes["ask-egn"].sensitive  # type: ignore[union-attr]


def test_example_queues_are_checked_when_the_daemon_names_its_queues() -> None:
    code, out = run_validate([EXAMPLES / "main.yaml"], known_queues={"billing", "support"})
    assert code == 1
    assert any("there is no queue called `sales`" in line for line in out)


# ---- JSON Schema ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_FLOWS, ids=lambda p: p.name)
def test_json_schema_accepts_the_example_flows(path: Path) -> None:
    schema_doc = flow_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema_doc)
    errors = list(jsonschema.Draft202012Validator(schema_doc).iter_errors(yaml_data(path)))
    assert errors == []


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"timout": "5s"}, "timout"),
        ({"timeout": "5 sec"}, "5 sec"),
        ({"type": "manu"}, "manu"),
        ({"options": [{"key": "x", "next": "a"}]}, "x"),
    ],
)
def test_json_schema_flags_what_editors_should_underline(patch: dict[str, Any], where: str) -> None:
    data = yaml_data(EXAMPLES / "main.yaml")
    data["nodes"]["main-menu"].update(patch)
    errors = list(jsonschema.Draft202012Validator(flow_json_schema()).iter_errors(data))
    assert errors, f"the schema accepted {patch}"
    assert where in json.dumps([str(e.message) for e in errors] + [list(e.absolute_path) for e in errors])


def test_shipped_schema_file_is_current() -> None:
    shipped = json.loads((EXAMPLES / "flow.schema.json").read_text(encoding="utf-8"))
    assert shipped == flow_json_schema(), "regenerate it: ivr schema -o configs/flows/flow.schema.json"


def test_schema_command_writes_json(tmp_path: Path) -> None:
    out: list[str] = []
    assert schema(tmp_path / "s.json", echo=out.append) == 0
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["title"] == "ivr flow"
    assert schema(tmp_path / "missing-dir" / "s.json", echo=out.append) == 1


# ---- validate -----------------------------------------------------------------------------------------------------


def test_validate_prints_problems_and_exits_1_on_errors(tmp_path: Path) -> None:
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: nowhere}\nz: {type: hangup, prompt: bye}\n"))
    code, out = run_validate([path])
    assert code == 1
    assert out == [
        f"{path}:9:40: error: node `a`: `nowhere` is not a node in this flow (name a node defined under nodes:)",
        f"{path}:10:3: warning: node `z` is never reached from the start node `a` (link to it from another node, or "
        "delete it)",
        "1 flow file checked: 1 error, 1 warning",
    ]


def test_validate_exits_0_on_warnings_alone(tmp_path: Path) -> None:
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: a2}\na2: {type: hangup}\n"))
    code, out = run_validate([path])
    assert code == 0
    assert out[-1] == "1 flow file checked: 0 errors, 1 warning"  # bye is never played


def test_validate_several_files_and_a_missing_one(tmp_path: Path) -> None:
    good = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: b}\nb: {type: hangup, prompt: bye}\n"))
    code, out = run_validate([good, tmp_path / "missing.yaml"])
    assert code == 1
    assert out == [f"{tmp_path / 'missing.yaml'}:1:1: error: no such file", "2 flow files checked: 1 error, 0 warnings"]
    assert run_validate([])[0] == 1


# ---- graph --------------------------------------------------------------------------------------------------------


def test_graph_source_labels_keys_words_and_styles_failure_edges_apart() -> None:
    loaded = load_ok(EXAMPLES / "main.yaml")
    source = flow_graph(loaded).source
    assert '"choose-language" -> "speak-english" [label="2\nbg: английски\nen: english"' in source
    assert (
        '"main-menu" -> "to-operator" [label=failure color="#b91c1c" fontcolor="#b91c1c" penwidth=2 style=dotted]'
        in (source)
    )
    assert '"offer-message" -> goodbye [label="no input" color="#7c3aed" fontcolor="#7c3aed" style=dashed]' in source
    assert "UNREACHABLE" not in source


def test_graph_marks_unreachable_nodes_and_missing_targets(tmp_path: Path) -> None:
    nodes = "a: {type: play, prompt: hello, next: gone}\nlost: {type: hangup, prompt: bye}\n"
    loaded = load_ok(write(tmp_path, flow_text(nodes)), check=False)
    source = flow_graph(loaded).source
    assert "lost\n(hangup)\nUNREACHABLE" in source
    assert "gone\n(no such node)" in source


def test_graph_command_writes_dot_source_without_graphviz(tmp_path: Path) -> None:
    out: list[str] = []
    assert graph(EXAMPLES / "main.yaml", tmp_path / "main.dot", echo=out.append) == 0
    assert (tmp_path / "main.dot").read_text(encoding="utf-8").startswith("// vitosha-main")
    assert graph(tmp_path / "nope.yaml", tmp_path / "x.dot", echo=out.append) == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_command_renders_svg(tmp_path: Path) -> None:
    out: list[str] = []
    assert graph(EXAMPLES / "main.yaml", tmp_path / "main.svg", echo=out.append) == 0
    svg = (tmp_path / "main.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "billing&#45;account" in svg and "сметка" in svg
