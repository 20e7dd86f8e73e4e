"""The loader: YAML positions, pydantic errors mapped to file:line:column with hints, and nothing but FlowError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flows.loader import FlowError, Problem, load_calendar_file, load_flow, load_flow_text, load_flow_tree
from ivr.flows.model import CollectNode, MenuNode, parse_duration
from tests.unit.flows.flowtext import flow_text, lines, load_ok, problems_of, write

GOOD_NODES = """
a:
  type: menu
  prompt: hello
  options:
    - {key: 1, next: b}
    - {key: "#", next: b, words: {en: [goodbye], bg: [довиждане]}}
  timeout: 1500ms
  failure: b
b: {type: hangup, prompt: bye}
"""


def errors_at(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return lines(info.value.errors)


def test_good_flow_loads_with_typed_values(tmp_path: Path) -> None:
    loaded = load_ok(write(tmp_path, flow_text(GOOD_NODES)))
    menu = loaded.flow.nodes["a"]
    assert isinstance(menu, MenuNode)
    assert menu.timeout == 1.5
    assert [o.key for o in menu.options] == ["1", "#"]  # the unquoted 1 became the key "1"
    assert loaded.warnings == ()
    assert loaded.positions.value(("nodes", "a", "timeout")) == (15, 14)


def test_unknown_key_names_line_column_and_the_key_it_resembles(tmp_path: Path) -> None:
    nodes = GOOD_NODES.replace("timeout: 1500ms", "timout: 1500ms")
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "15:5: error: node `a`: unknown key `timout` (did you mean `timeout`?)"
    ]


def test_misspelt_required_key_gives_one_error_not_also_missing(tmp_path: Path) -> None:
    nodes = "a: {type: play, prompt: hello, nxt: b}\nb: {type: hangup}"
    assert errors_at(tmp_path, flow_text(nodes)) == ["9:34: error: node `a`: unknown key `nxt` (did you mean `next`?)"]


def test_missing_key_points_at_the_node_and_says_what_to_add(tmp_path: Path) -> None:
    nodes = "a: {type: play, prompt: hello}\nb: {type: hangup}"
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "9:3: error: node `a`: missing `next` (add next: <node id> (where to go after this node))"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("5 sec", "'5 sec' is not a duration (write 5s or 1500ms)"),
        ("5", "5 has no unit (write 5s for seconds or 5000ms for milliseconds)"),
        ("1.5", "1.5 has no unit (write 1.5s for seconds or 1500ms for milliseconds)"),
        ("0s", "'0s' is not longer than zero (write 5s or 1500ms)"),
        ("fast", "'fast' is not a duration (write 5s or 1500ms)"),
    ],
)
def test_bad_duration_says_write_5s_or_1500ms(tmp_path: Path, written: str, expected: str) -> None:
    nodes = GOOD_NODES.replace("timeout: 1500ms", f"timeout: {written}")
    assert errors_at(tmp_path, flow_text(nodes)) == [f"15:14: error: node `a`: {expected}"]


def test_durations_parse_units() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("1500ms") == 1.5
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("2h") == 7200.0


def test_unknown_node_type_suggests_the_close_one(tmp_path: Path) -> None:
    nodes = "a: {type: manu, prompt: hello}\n"
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "9:13: error: node `a`: unknown node type `manu` (did you mean `menu`?)"
    ]


def test_node_without_type_lists_the_types(tmp_path: Path) -> None:
    (error,) = errors_at(tmp_path, flow_text("a: {prompt: hello, next: a}\n"))
    assert error.startswith("9:3: error: node `a`: the node has no `type` (add type: one of play, menu, collect")


def test_wrong_literal_suggests_the_allowed_value(tmp_path: Path) -> None:
    nodes = "a: {type: http, url: 'https://crm/x', method: GTE, next: b, failure: b}\nb: {type: hangup}"
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "9:49: error: node `a`: `GTE` is not one of GET, POST, PUT (did you mean `GET`?)"
    ]


def test_phone_number_written_as_a_number_is_refused(tmp_path: Path) -> None:
    nodes = """
    a:
      type: branch
      cases:
        - {caller: +359888123456, next: b}
      else: b
    b: {type: hangup}
    """
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "12:18: error: node `a`: 359888123456 was read as a number, which loses a leading 0 or + "
        '(write phone numbers in quotes: "+359888123456" or "0888*")'
    ]


def test_bare_hash_after_a_key_is_caught_as_a_comment(tmp_path: Path) -> None:
    nodes = """
    a:
      type: collect
      prompt: hello
      into: account
      terminator: #
      failure: b
      next: b
    b: {type: hangup}
    """
    assert errors_at(tmp_path, flow_text(nodes)) == [
        "13:5: error: `terminator:` has no value: the # after it starts a YAML comment "
        '(write terminator: "#" in quotes)'
    ]


def test_bare_star_key_is_a_yaml_error_with_a_quoting_hint(tmp_path: Path) -> None:
    nodes = GOOD_NODES.replace('key: "#"', "key: *")
    (error,) = errors_at(tmp_path, flow_text(nodes))
    assert error.startswith("14:") and "YAML syntax error" in error
    assert 'write the key in quotes: "*"' in error


def test_duplicate_yaml_key_names_both_lines(tmp_path: Path) -> None:
    nodes = "a: {type: hangup}\na: {type: hangup}\n"
    (error,) = errors_at(tmp_path, flow_text(nodes))
    assert error.startswith("10:3: error: YAML syntax error: found duplicate key")
    assert "(write each key once in a mapping (the first one is on line 9))" in error


def test_tab_indentation_hint(tmp_path: Path) -> None:
    (error,) = errors_at(tmp_path, "name: x\nnodes:\n\ta: 1\n")
    assert error.startswith("3:1: error: YAML syntax error") and "indent with spaces, not tabs" in error


def test_allowed_keys_written_as_a_number_keep_their_zero(tmp_path: Path) -> None:
    nodes = """
    a: {type: collect, prompt: hello, into: n, allowed: 0123456789, terminator: null, failure: b, next: b}
    b: {type: hangup}
    """
    assert errors_at(tmp_path, flow_text(nodes)) == [
        '9:55: error: node `a`: 123456789 was read as a number (write it in quotes: "0123456789")'
    ]


def test_bad_node_id_points_at_the_key(tmp_path: Path) -> None:
    (error,) = errors_at(tmp_path, flow_text("a: {type: hangup}\nbad id: {type: hangup}\n"))
    assert error == "10:3: error: `bad id` is not allowed as a name here (use letters, digits, -, _ and . (no spaces))"


def test_several_errors_are_all_reported_in_line_order(tmp_path: Path) -> None:
    nodes = """
    a: {type: play, prompt: hello, next: b, barge: true}
    b: {type: collect, prompt: hello, into: 9x, inter_digit: 3, next: a, failure: a}
    """
    errors = errors_at(tmp_path, flow_text(nodes))
    assert [e.split(": error")[0] for e in errors] == ["9:43", "10:43", "10:60"]


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert errors_at(tmp_path, "") == [
        "1:1: error: the file is empty (start with name:, languages:, start: and nodes:)"
    ]
    assert errors_at(tmp_path, "- a\n- b\n")[0].startswith("1:1: error: a flow file is a mapping")


def test_missing_and_binary_files_are_flow_errors(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="no such file"):
        load_flow(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(FlowError, match="not UTF-8 text"):
        load_flow(bad)


def test_problem_prints_as_file_line_column_severity_message_hint() -> None:
    problem = Problem("f.yaml", 3, 7, "unknown key `timout`", "did you mean `timeout`?")
    assert str(problem) == "f.yaml:3:7: error: unknown key `timout` (did you mean `timeout`?)"
    assert str(Problem("f.yaml", 1, 1, "x", None, "warning")) == "f.yaml:1:1: warning: x"


def test_check_errors_fail_the_load_and_warnings_are_kept(tmp_path: Path) -> None:
    nodes = GOOD_NODES + "orphan: {type: hangup}\n"
    loaded = load_ok(write(tmp_path, flow_text(nodes)))
    assert [p.message for p in loaded.warnings] == ["node `orphan` is never reached from the start node `a`"]
    broken = GOOD_NODES.replace("failure: b", "failure: nowhere")
    assert errors_at(tmp_path, flow_text(broken)) == [
        "16:14: error: node `a`: `nowhere` is not a node in this flow (name a node defined under nodes:)"
    ]


def test_check_false_loads_a_flow_with_check_errors(tmp_path: Path) -> None:
    broken = GOOD_NODES.replace("failure: b", "failure: nowhere")
    loaded = load_flow(write(tmp_path, flow_text(broken)), check=False)
    assert isinstance(loaded.flow.nodes["a"], MenuNode)


_YAML_BITS = st.sampled_from(
    ["name: x\n", "nodes:\n", "  a:\n", "    type: menu\n", "    timeout: 5 sec\n", "  - 1\n", "\t", "*", "#", "&a",
     ": ", "{", "]", "'", '"', "languages: [bg]\n", "start: a\n", "    next: a\n", "2027-03-03: x\n", "\x00"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_YAML_BITS | st.text(max_size=8), max_size=25).map("".join))
def test_any_text_loads_or_raises_only_flow_error(tmp_path: Path, text: str) -> None:
    try:
        load_flow_text(text, tmp_path / "fuzz.yaml")
    except FlowError as exc:
        assert exc.problems, "a FlowError always carries at least one problem"
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1


def test_flow_tree_loads_subflows_and_checks_goto_targets(tmp_path: Path) -> None:
    write(tmp_path, flow_text("s: {type: play, prompt: hello, next: r}\nr: {type: return}\n", start="s"), "sub.yaml")
    write(tmp_path, flow_text("bye-bye: {type: hangup, prompt: bye}\n", start="bye-bye"), "other.yaml")
    main = write(
        tmp_path,
        flow_text(
            """
            a: {type: subflow, flow: sub.yaml, next: b}
            b: {type: goto, flow: other.yaml, node: bye-by}
            """
        ),
    )
    with pytest.raises(FlowError) as info:
        load_flow_tree(main)
    assert lines(info.value.errors) == [
        "10:43: error: node `b`: other.yaml has no node `bye-by` (did you mean `bye-bye`?)"
    ]
    main.write_text(main.read_text().replace("node: bye-by", "node: bye-bye"))
    tree = load_flow_tree(main)
    assert sorted(p.name for p in tree.flows) == ["flow.yaml", "other.yaml", "sub.yaml"]
    assert tree.root.path == main
    assert tree.flow_at(tmp_path / "sub.yaml").flow.start == "s"


def test_flow_tree_warns_when_a_subflow_never_returns(tmp_path: Path) -> None:
    write(tmp_path, flow_text("s: {type: hangup, prompt: bye}\n", start="s"), "sub.yaml")
    main = write(tmp_path, flow_text("a: {type: subflow, flow: sub.yaml, next: b}\nb: {type: hangup}\n"))
    tree = load_flow_tree(main)
    assert len(tree.flows) == 2  # a warning does not stop the load
    (warning,) = [p for p in tree.warnings if "return" in p.message]
    assert str(warning).endswith(
        "9:28: warning: node `a`: the subflow sub.yaml has no `return` node, so `next` is never taken "
        "(add a node with type: return to the subflow, or use type: goto)"
    )


def test_flow_tree_reports_errors_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, flow_text("s: {type: play, prompt: hello, nxt: r}\nr: {type: return}\n", start="s"), "sub.yaml")
    main = write(tmp_path, flow_text("a: {type: subflow, flow: sub.yaml, next: b}\nb: {type: hangup, prompt: hullo}\n"))
    with pytest.raises(FlowError) as info:
        load_flow_tree(main)
    files = {Path(p.file).name for p in info.value.errors}
    assert files == {"flow.yaml", "sub.yaml"}


def test_calendar_file_loads_and_reports_positions(tmp_path: Path) -> None:
    good = write(tmp_path, "office:\n  holidays: BG\n  hours: {mon-fri: 09:00-18:00}\n", "calendars.yaml")
    calendars = load_calendar_file(good)
    assert calendars["office"].holidays == "BG"
    bad = write(tmp_path, "office:\n  holidays: BGR\n  hours: {mon-fry: 09:00-18:00}\n  tz: x\n", "bad.yaml")
    with pytest.raises(FlowError) as info:
        load_calendar_file(bad)
    text = [str(p).split(":", 1)[1] for p in info.value.problems]
    assert (
        "4:3: error: calendar `office`: unknown key `tz` (allowed here: timezone, holidays, hours, overrides)" in text
    )
    assert "2:13: error: calendar `office`: 'BGR' is not a country with a holiday calendar (did you mean GR?)" in (text)
    assert any(t.startswith("3:10: error: calendar `office`: 'mon-fry' is not a day") for t in text), text


def test_collect_defaults(tmp_path: Path) -> None:
    nodes = "a: {type: collect, prompt: hello, into: n, next: b, failure: b}\nb: {type: hangup}\n"
    node = load_ok(write(tmp_path, flow_text(nodes))).flow.nodes["a"]
    assert isinstance(node, CollectNode)
    assert (node.first_digit, node.inter_digit, node.total, node.terminator) == (5.0, 3.0, None, "#")


def test_problems_helper_sees_warnings(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, flow_text(GOOD_NODES))) == []
