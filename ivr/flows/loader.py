"""Loading flow files: YAML (ruamel round-trip, so every value keeps its line and column) into :class:`Flow`.

Every problem is reported as ``file:line:column: severity: message (hint)``; loading raises nothing but
:class:`FlowError`, which carries all the problems found (not just the first). Schema errors from pydantic are mapped
back to the YAML position of the key or value they concern, and phrased for ops: an unknown key gets a "did you mean",
a bad duration says "write 5s or 1500ms".
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, RootModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ivr.flows.calendar import Calendar
from ivr.flows.checks import check_flow
from ivr.flows.model import NODE_KINDS, Flow
from ivr.flows.problems import FlowError, LoadedFlow, Loc, Positions, Problem, Severity, problem_order

__all__ = [
    "FlowError",
    "FlowTree",
    "LoadedFlow",
    "Loc",
    "Positions",
    "Problem",
    "Severity",
    "load_calendar_file",
    "load_flow",
    "load_flow_text",
    "load_flow_tree",
]

# ---- YAML -> plain data with positions ------------------------------------------------------------------------

_COMMENT_TRAP_KEYS: Final = frozenset({"terminator", "key", "yes", "no"})


def _plain(node: Any, loc: Loc, positions: Positions, lines: list[str], traps: list[tuple[Loc, int, int]]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = _key_text(key)
            child = (*loc, name)
            key_pos = _pos(node.lc.key(key))
            try:
                value_pos = _pos(node.lc.value(key))
            except (KeyError, TypeError):
                value_pos = None
            positions.record(child, key_pos, value_pos)
            if value is None and name in _COMMENT_TRAP_KEYS and key_pos is not None:
                line_text = lines[key_pos[0] - 1] if key_pos[0] - 1 < len(lines) else ""
                after = line_text[key_pos[1] - 1 :].split(":", 1)[-1]
                if after.lstrip().startswith("#"):
                    traps.append((child, key_pos[0], key_pos[1]))
            out[name] = _plain(value, child, positions, lines, traps)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for i, value in enumerate(node):
            child = (*loc, i)
            try:
                item_pos = _pos(node.lc.item(i))
            except (KeyError, TypeError):
                item_pos = None
            positions.record(child, item_pos, item_pos)
            items.append(_plain(value, child, positions, lines, traps))
        return items
    if isinstance(node, dt.datetime | dt.date):
        return node.isoformat()
    if isinstance(node, str):
        return str(node)  # ruamel's ScalarString subclasses -> plain str
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, dt.datetime | dt.date):
        return key.isoformat()
    return str(key)


def _pos(pair: Any) -> tuple[int, int] | None:
    if pair is None:
        return None
    line, column = pair[0], pair[1]
    return int(line) + 1, int(column) + 1


def _parse_yaml(text: str, file: str) -> tuple[Any, Positions, list[Problem]]:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        raise FlowError([_yaml_problem(exc, file)]) from None
    except YAMLError as exc:  # ReaderError (control characters) and friends carry no mark
        raise FlowError([Problem(file, 1, 1, f"not a YAML file: {exc}".splitlines()[0])]) from None
    positions = Positions()
    traps: list[tuple[Loc, int, int]] = []
    data = _plain(document, (), positions, text.splitlines(), traps)
    problems = [
        Problem(
            file,
            line,
            column,
            f"`{loc[-1]}:` has no value: the # after it starts a YAML comment",
            f'write {loc[-1]}: "#" in quotes',
        )
        for loc, line, column in traps
    ]
    return data, positions, problems


def _yaml_problem(exc: MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or exc.context or "YAML syntax error").strip()
    hint: str | None = None
    if isinstance(exc, DuplicateKeyError):
        problem = f"{exc.problem.strip() if exc.problem else 'duplicate key'}"
        hint = "write each key once in a mapping"
        if exc.context_mark is not None:
            hint += f" (the first one is on line {exc.context_mark.line + 1})"
        line, column = (exc.problem_mark.line + 1, exc.problem_mark.column + 1) if exc.problem_mark else (line, column)
    elif "alias" in (exc.context or "") or "alias" in problem:
        hint = 'a bare * starts a YAML alias; write the key in quotes: "*"'
    elif "'\\t'" in problem or "\t" in problem:
        hint = "indent with spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        hint = 'a value containing ": " must be in quotes, e.g. "Note: closed"'
    return Problem(file, line, column, f"YAML syntax error: {problem}", hint)


# ---- pydantic errors -> problems ------------------------------------------------------------------------------


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _data_path(data: Any, loc: Loc) -> tuple[Loc, bool]:
    """The path in the YAML data that a pydantic ``loc`` refers to (pydantic adds union tags such as ``"menu"`` that
    are not in the data: they are skipped). The flag says whether the whole loc was found in the data."""
    path: list[str | int] = []
    node = data
    found = True
    for part in loc:
        if _has(node, part):
            node = node[part]
            path.append(part)
        else:
            found = False
    return tuple(path), found


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _tags(tp: Any) -> set[str]:
    tags: set[str] = set()
    if typing.get_origin(tp) is typing.Annotated:
        for meta in typing.get_args(tp)[1:]:
            tag = getattr(meta, "tag", None)
            if isinstance(tag, str):
                tags.add(tag)
    inner = _unwrap(tp)
    if isinstance(inner, type) and issubclass(inner, BaseModel) and "type" in inner.model_fields:
        for arg in typing.get_args(inner.model_fields["type"].annotation):
            if isinstance(arg, str):
                tags.add(arg)
    return tags


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _step(tp: Any, part: str | int) -> Any | None:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, RootModel):
        tp = _unwrap(tp.model_fields["root"].annotation)
    if _is_union(tp):
        members = typing.get_args(tp)
        if isinstance(part, str):
            for member in members:
                if part in _tags(member):
                    return member
        for member in members:
            if member is type(None):
                continue
            stepped = _step(member, part)
            if stepped is not None:
                return stepped
        return None
    origin = typing.get_origin(tp)
    if origin in (list, tuple) and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict and isinstance(part, str):
        return typing.get_args(tp)[1]
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
    return None


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp)
    candidates = [_unwrap(m) for m in typing.get_args(tp)] if _is_union(tp) else [tp]
    models = [m for m in candidates if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) == 1:
        return models[0]
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


_MISSING_HINTS: Final = {
    "next": "add next: <node id> (where to go after this node)",
    "else": "add else: <node id> (where to go when no case holds)",
    "failure": "add failure: <node id> (where to go when it fails)",
    "into": "add into: <variable name> (where the digits are kept)",
    "prompt": "add prompt: <prompt name>",
    "options": 'add options: [{key: "1", next: <node id>}]',
    "start": "add start: <node id> (the node a call starts at)",
    "languages": "add languages: [bg, en]",
    "language": "add language: bg (the caller's language at the start)",
    "nodes": "add nodes: with at least one node",
    "name": "add name: <flow name>",
}

_PATTERN_HINTS: Final = {
    "^[\\w][\\w.-]*$": "use letters, digits, -, _ and . (no spaces)",
    "^[A-Za-z_][A-Za-z0-9_]*$": "a variable name is letters, digits and _ (not starting with a digit)",
    "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$": "write a language code such as bg or en",
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a prompt name is letters, digits, -, _ and . (it names a file)",
    "^https?://": "write a URL that starts with http:// or https://",
}

_TYPE_NAMES: Final = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value lines)",
    "list_type": "a list ([a, b] or lines starting with -)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_type": "a date (YYYY-MM-DD)",
}


def _describe_input(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _context(path: Loc) -> str:
    """``nodes.billing.timeout`` -> "node `billing`: "."""
    if len(path) >= 2 and path[0] == "nodes":
        return f"node `{path[1]}`: "
    if len(path) >= 2 and path[0] == "prompts":
        return f"prompt `{path[1]}`: "
    if len(path) >= 2 and path[0] == "calendars":
        return f"calendar `{path[1]}`: "
    return ""


def _convert_errors(
    errors: list[ErrorDetails],
    data: Any,
    positions: Positions,
    file: str,
    root: type[BaseModel],
    context_prefix: Loc = (),
) -> list[Problem]:
    extras: dict[Loc, list[str]] = {}
    for error in errors:
        if error["type"] == "extra_forbidden":
            path, _ = _data_path(data, tuple(error["loc"]))
            extras.setdefault(path[:-1], []).append(str(path[-1]))
    problems: list[Problem] = []
    seen: set[tuple[int, int, str]] = set()
    for error in errors:
        problem = _convert_one(error, data, positions, file, root, extras, context_prefix)
        if problem is None:
            continue
        marker = (problem.line, problem.column, problem.message)
        if marker not in seen:
            seen.add(marker)
            problems.append(problem)
    return problems


def _convert_one(
    error: ErrorDetails,
    data: Any,
    positions: Positions,
    file: str,
    root: type[BaseModel],
    extras: Mapping[Loc, list[str]],
    context_prefix: Loc = (),
) -> Problem | None:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    path, _found = _data_path(data, loc)
    where = _context((*context_prefix, *path))
    hint: str | None = ctx.get("hint") if isinstance(ctx.get("hint"), str) else None
    at_key = False
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(path[-1])
        model = _model_at(root, loc[:-1])
        allowed = _keys_of(model) if model is not None else []
        close = _suggest(key, allowed)
        message = f"{where}unknown key `{key}`"
        if close is not None:
            hint = f"did you mean `{close}`?"
        elif allowed:
            hint = "allowed here: " + ", ".join(allowed)
        at_key = True
    elif kind == "missing":
        name = str(loc[-1])
        for extra in extras.get(path, []):
            if _suggest(extra, [name]) is not None:
                return None  # the misspelt key's "did you mean" says it all
        message = f"{where}missing `{name}`"
        hint = _MISSING_HINTS.get(name, f"add {name}: ...")
        at_key = True
    elif kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        message = f"{where}unknown node type `{tag}`"
        close = _suggest(tag, NODE_KINDS)
        hint = f"did you mean `{close}`?" if close else "node types: " + ", ".join(NODE_KINDS)
        path = (*path, "type")
    elif kind == "union_tag_not_found":
        message = f"{where}the node has no `type`"
        hint = "add type: one of " + ", ".join(NODE_KINDS)
        at_key = True
    elif kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"{where}{_describe_input(value)} is not one of {', '.join(expected)}"
        close = _suggest(str(value), expected) if isinstance(value, str) else None
        hint = f"did you mean `{close}`?" if close else None
    elif kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        message = f"{where}{_describe_input(value)} is not allowed here"
        hint = hint or _PATTERN_HINTS.get(pattern, f"it must match {pattern}")
        if loc and loc[-1] == "[key]":  # a bad mapping key (e.g. a node id): point at the key
            at_key = True
            message = f"{_describe_input(value)} is not allowed as a name here"
    elif kind in _TYPE_NAMES:
        message = f"{where}expected {_TYPE_NAMES[kind]}, got {_describe_input(value)}"
    elif kind in ("too_short", "too_long"):
        actual = ctx.get("actual_length")
        if kind == "too_short":
            limit = ctx.get("min_length")
            message = (
                f"{where}needs at least {limit} {'item' if limit == 1 else 'items'}"
                if actual == 0
                else (f"{where}too short: at least {limit} needed, {actual} given")
            )
        else:
            message = f"{where}too long: at most {ctx.get('max_length')} allowed, {actual} given"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        word = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
                "less_than": "less than"}[kind]  # fmt: skip
        message = f"{where}must be {word} {limit}, got {_describe_input(value)}"
    elif kind == "value_error":
        message = where + str(error["msg"]).removeprefix("Value error, ")
    else:
        message = where + str(error["msg"])
    line, column = positions.key(path) if at_key else positions.value(path)
    return Problem(file, line, column, message, hint)


# ---- public API -------------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlowError([Problem(str(path), 1, 1, "no such file")]) from None
    except UnicodeDecodeError as exc:
        problem = Problem(str(path), 1, 1, f"not UTF-8 text ({exc.reason})", "save the file as UTF-8")
        raise FlowError([problem]) from None
    except OSError as exc:
        raise FlowError([Problem(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from None


def load_flow_text(
    text: str,
    path: Path | str = "<flow>",
    *,
    check: bool = True,
    known_queues: set[str] | None = None,
    known_calendars: set[str] | None = None,
) -> LoadedFlow:
    """Load a flow from YAML ``text`` as if read from ``path`` (relative paths in it resolve against its folder).

    With ``check`` (the default) the static checks of :mod:`ivr.flows.checks` run too: errors make it raise, and
    warnings are kept in ``LoadedFlow.warnings``. Raises only :class:`FlowError`."""
    path = Path(path)
    file = str(path)
    data, positions, problems = _parse_yaml(text, file)
    if data is None:
        raise FlowError([Problem(file, 1, 1, "the file is empty", "start with name:, languages:, start: and nodes:")])
    if not isinstance(data, dict):
        raise FlowError([Problem(file, 1, 1, "a flow file is a mapping", "start with name:, languages:, start:")])
    try:
        flow = Flow.model_validate(data, context={"from_file": True})
    except ValidationError as exc:
        problems += _convert_errors(exc.errors(), data, positions, file, Flow)
        raise FlowError(problems) from None
    loaded = LoadedFlow(flow, path, positions)
    if check:
        problems += check_flow(loaded, known_queues=known_queues, known_calendars=known_calendars)
    if any(p.severity == "error" for p in problems):
        raise FlowError(problems)
    return LoadedFlow(flow, path, positions, tuple(sorted(problems, key=problem_order)))


def load_flow(
    path: Path | str,
    *,
    check: bool = True,
    known_queues: set[str] | None = None,
    known_calendars: set[str] | None = None,
) -> LoadedFlow:
    """Read and load the flow file at ``path`` (see :func:`load_flow_text`). Raises only :class:`FlowError`."""
    path = Path(path)
    return load_flow_text(_read(path), path, check=check, known_queues=known_queues, known_calendars=known_calendars)


def _linked_flows(loaded: LoadedFlow) -> Iterator[tuple[str, Path]]:
    for node_id, node in loaded.flow.nodes.items():
        target = getattr(node, "flow", None)
        if isinstance(target, str):
            yield node_id, loaded.resolve(target)


@dataclass(frozen=True)
class FlowTree:
    """A flow and every flow it reaches through ``subflow`` and ``goto`` nodes, all loaded and checked."""

    root: LoadedFlow
    flows: dict[Path, LoadedFlow]
    """Resolved path -> flow; the root is among them."""
    warnings: tuple[Problem, ...]
    """The warnings of every file, and the ones across files."""

    def flow_at(self, path: Path) -> LoadedFlow:
        """The loaded flow a ``subflow``/``goto`` path (already resolved against its flow's folder) names."""
        return self.flows[path.resolve()]


def load_flow_tree(
    path: Path | str,
    *,
    known_queues: set[str] | None = None,
    known_calendars: set[str] | None = None,
) -> FlowTree:
    """Load a flow and every flow it reaches through ``subflow`` and ``goto`` nodes, all checked.

    Either everything loads, or :class:`FlowError` lists the problems of every file (so a reload can be
    all-or-nothing). Across files it checks that a ``goto``'s ``node`` exists in its target and warns when a subflow
    has no ``return`` node."""
    loaded: dict[Path, LoadedFlow] = {}
    failed: set[Path] = set()
    problems: list[Problem] = []
    pending = [Path(path)]  # as written (messages name files the way the user does); keys are resolved
    while pending:
        current = pending.pop(0)
        key = current.resolve()
        if key in loaded or key in failed:
            continue
        try:
            flow = load_flow(current, known_queues=known_queues, known_calendars=known_calendars)
        except FlowError as exc:
            problems += exc.problems
            failed.add(key)
            try:  # still follow its links, so the errors of every file are reported at once
                unchecked = load_flow(current, check=False)
            except FlowError:
                continue
            pending += [linked for _node_id, linked in _linked_flows(unchecked) if linked.is_file()]
            continue
        loaded[key] = flow
        problems += flow.warnings
        pending += [linked for _node_id, linked in _linked_flows(flow) if linked.is_file()]
    for flow in loaded.values():
        for node_id, linked in _linked_flows(flow):
            target = loaded.get(linked.resolve())
            if target is not None:
                problems += _cross_check(flow, node_id, target)
    if any(p.severity == "error" for p in problems):
        raise FlowError(problems)
    root = loaded[Path(path).resolve()]
    return FlowTree(root, loaded, tuple(sorted(problems, key=problem_order)))


def _cross_check(source: LoadedFlow, node_id: str, target: LoadedFlow) -> list[Problem]:
    node = source.flow.nodes[node_id]
    kind = getattr(node, "type", "")
    if kind == "goto":
        wanted = getattr(node, "node", None)
        if isinstance(wanted, str) and wanted not in target.flow.nodes:
            close = _suggest(wanted, target.flow.nodes)
            return [
                source.problem(
                    ("nodes", node_id, "node"),
                    f"node `{node_id}`: {target.path.name} has no node `{wanted}`",
                    f"did you mean `{close}`?" if close else None,
                )
            ]
    if kind == "subflow" and not any(getattr(n, "type", "") == "return" for n in target.flow.nodes.values()):
        return [
            source.problem(
                ("nodes", node_id, "flow"),
                f"node `{node_id}`: the subflow {target.path.name} has no `return` node, so `next` is never taken",
                "add a node with type: return to the subflow, or use type: goto",
                "warning",
            )
        ]
    return []


class _Calendars(RootModel[dict[str, Calendar]]):
    pass


def load_calendar_file(path: Path | str) -> dict[str, Calendar]:
    """Read a calendar file (a mapping: calendar name -> calendar, as in a flow's ``calendars:``).
    Raises only :class:`FlowError`."""
    path = Path(path)
    file = str(path)
    data, positions, problems = _parse_yaml(_read(path), file)
    if not isinstance(data, dict):
        raise FlowError([Problem(file, 1, 1, "a calendar file is a mapping of calendar names", "office: {hours: ...}")])
    try:
        calendars = _Calendars.model_validate(data, context={"from_file": True}).root
    except ValidationError as exc:
        problems += _convert_errors(exc.errors(), data, positions, file, _Calendars, ("calendars",))
        raise FlowError(problems) from None
    if problems:
        raise FlowError(problems)
    return calendars
