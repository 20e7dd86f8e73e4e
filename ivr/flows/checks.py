"""Static checks of a loaded flow: everything that can be known wrong before a caller finds it.

Errors (the flow does not load, ``ivr validate`` exits 1):
  unknown node targets; loops that a caller can never leave and that wait for no input; duplicate keys or keywords
  in a menu; menus and collects with no failure path; prompts missing in a language and in the fallback language;
  prompt files that do not exist; unknown prompts, queues, calendars and languages; impossible timers and lengths
  (inter_digit longer than total, min_digits above max_digits, a terminator that is also an allowed digit, a checksum
  whose length the limits exclude); setting a built-in variable; subflow files that do not exist.
Warnings (reported, the flow still loads):
  unreachable nodes; prompts that fall back to the fallback language (every gap listed); loops without input whose
  only way out is a condition nothing in the loop changes; unused prompts; templates reading variables no node sets;
  a first_digit timeout that the total cuts short; a record silence longer than its max length.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from ivr.flows.model import (
    BranchNode,
    CollectNode,
    Edge,
    GotoNode,
    HoursNode,
    HttpNode,
    LanguageNode,
    MenuNode,
    PromptFile,
    PromptRef,
    PromptText,
    QueueNode,
    RecordNode,
    SayItem,
    SetNode,
    SubflowNode,
)
from ivr.flows.numbers import LANGUAGES as SPOKEN_NUMBER_LANGUAGES
from ivr.flows.problems import LoadedFlow, Loc, Problem
from ivr.flows.prompt_sources import source_in
from ivr.flows.templates import BUILTIN_NAMES, has_template, variables_in

__all__ = ["check_flow", "reachable_nodes"]

_CHECKSUM_LENGTHS: Final = {"egn": {10}, "bulstat": {9, 13}, "luhn": set(range(2, 65))}


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _setting(loaded: LoadedFlow, node_id: str, name: str, value: float) -> str:
    """``inter_digit 3s``, or ``inter_digit 3s (the default)`` when the file does not write it."""
    written = loaded.positions.has(("nodes", node_id, name))
    return f"{name} {_fmt_seconds(value)}" + ("" if written else " (the default)")


def check_flow(
    loaded: LoadedFlow,
    *,
    known_queues: set[str] | None = None,
    known_calendars: set[str] | None = None,
) -> list[Problem]:
    """Every problem the static checks find in ``loaded``. ``known_queues`` / ``known_calendars`` are the names the
    daemon configuration provides (None: do not check that kind of name; calendars defined in the flow always count)."""
    problems: list[Problem] = []
    problems += _check_languages(loaded)
    problems += _check_targets(loaded)
    problems += _check_reachability(loaded)
    problems += _check_loops(loaded)
    problems += _check_menus(loaded)
    problems += _check_inputs(loaded)
    problems += _check_prompts(loaded)
    problems += _check_names(loaded, known_queues, known_calendars)
    problems += _check_variables(loaded)
    problems += _check_linked_files(loaded)
    return problems


# ---- languages --------------------------------------------------------------------------------------------------


def _check_languages(loaded: LoadedFlow) -> Iterator[Problem]:
    flow = loaded.flow
    languages = set(flow.languages)
    seen: set[str] = set()
    for i, lang in enumerate(flow.languages):
        if lang in seen:
            yield loaded.problem(("languages", i), f"language `{lang}` is listed twice", "list each language once")
        seen.add(lang)

    def unknown(loc: Loc, lang: str, severity: str = "error", *, at: str = "value") -> Problem:
        hint = _did_you_mean(lang, languages) or f"add it to languages: [{', '.join([*flow.languages, lang])}]"
        return loaded.problem(
            loc, f"`{lang}` is not one of this flow's languages ({', '.join(flow.languages)})", hint,
            "error" if severity == "error" else "warning", at="key" if at == "key" else "value",
        )  # fmt: skip

    if flow.language not in languages:
        yield unknown(("language",), flow.language)
    if flow.fallback is not None and flow.fallback not in languages:
        yield unknown(("fallback",), flow.fallback)
    for lang in flow.voices:
        if lang not in languages:
            yield unknown(("voices", lang), lang, "warning", at="key")
    for name, definition in flow.prompts.items():
        for lang in definition or {}:
            if lang not in languages:
                yield unknown(("prompts", name, lang), lang, at="key")
    for node_id, node in flow.nodes.items():
        if isinstance(node, LanguageNode) and node.language not in languages:
            yield unknown(("nodes", node_id, "language"), node.language)
        if isinstance(node, MenuNode):
            for i, option in enumerate(node.options):
                for lang in option.words:
                    if lang not in languages:
                        yield unknown(("nodes", node_id, "options", i, "words", lang), lang, at="key")
        if isinstance(node, BranchNode):
            for i, case in enumerate(node.cases):
                values = [case.language] if isinstance(case.language, str) else list(case.language or [])
                for lang in values:
                    if lang not in languages:
                        yield unknown(("nodes", node_id, "cases", i, "language"), lang)


# ---- graph ------------------------------------------------------------------------------------------------------


def _node_edges(loaded: LoadedFlow) -> dict[str, list[Edge]]:
    return {node_id: list(node.edges()) for node_id, node in loaded.flow.nodes.items()}


def _check_targets(loaded: LoadedFlow) -> Iterator[Problem]:
    nodes = loaded.flow.nodes
    if loaded.flow.start not in nodes:
        yield loaded.problem(
            ("start",), f"start node `{loaded.flow.start}` does not exist",
            _did_you_mean(loaded.flow.start, nodes) or "name one of the nodes under nodes:",
        )  # fmt: skip
    for node_id, edges in _node_edges(loaded).items():
        for edge in edges:
            if edge.target not in nodes:
                yield loaded.problem(
                    ("nodes", node_id, *edge.loc),
                    f"node `{node_id}`: `{edge.target}` is not a node in this flow",
                    _did_you_mean(edge.target, nodes) or "name a node defined under nodes:",
                )


def reachable_nodes(loaded: LoadedFlow) -> set[str]:
    """Node ids a call can reach from the start node."""
    edges = _node_edges(loaded)
    seen: set[str] = set()
    pending = [loaded.flow.start] if loaded.flow.start in loaded.flow.nodes else []
    while pending:
        node_id = pending.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        pending.extend(e.target for e in edges[node_id] if e.target in loaded.flow.nodes and e.target not in seen)
    return seen


def _check_reachability(loaded: LoadedFlow) -> Iterator[Problem]:
    if loaded.flow.start not in loaded.flow.nodes:
        return
    reached = reachable_nodes(loaded)
    for node_id in loaded.flow.nodes:
        if node_id not in reached:
            yield loaded.problem(
                ("nodes", node_id),
                f"node `{node_id}` is never reached from the start node `{loaded.flow.start}`",
                "link to it from another node, or delete it",
                "warning",
                at="key",
            )


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (flows can be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_path(graph: dict[str, list[str]], members: set[str], first: str) -> list[str]:
    """A shortest path first -> ... -> first inside ``members``."""
    previous: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in graph[node]:
                if child not in members:
                    continue
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(previous[path[-1]])
                    return [*reversed(path), first]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [first, first]


def _check_loops(loaded: LoadedFlow) -> Iterator[Problem]:
    nodes = loaded.flow.nodes
    graph = {node_id: [e.target for e in edges if e.target in nodes] for node_id, edges in _node_edges(loaded).items()}
    order = {node_id: i for i, node_id in enumerate(nodes)}
    for component in _strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue  # not a cycle
        if any(nodes[m].takes_input for m in members):
            continue  # the caller is asked something on every round
        first = min(members, key=order.__getitem__)
        path = " -> ".join(_cycle_path(graph, members, first))
        exits = [t for m in members for t in graph[m] if t not in members]
        if not exits:
            yield loaded.problem(
                ("nodes", first),
                f"endless loop {path}: no node in it waits for the caller, and none leads out",
                "make one of them a menu or collect, or give a branch a way out of the loop",
                at="key",
            )
        elif not any(isinstance(nodes[m], (SetNode, HttpNode)) for m in members):
            yield loaded.problem(
                ("nodes", first),
                f"loop {path} waits for no input, and nothing in it changes a variable: only the clock can end it",
                'count the rounds with a set node (tries: "{{ tries|default(0) + 1 }}") and branch on it',
                "warning",
                at="key",
            )


# ---- menus and digit collection -------------------------------------------------------------------------------


def _norm_word(word: str) -> str:
    return " ".join(word.casefold().split())


def _failure_path_problem(loaded: LoadedFlow, node_id: str, node: MenuNode | CollectNode) -> Problem | None:
    if node.failure is not None:
        return None
    missing = [kind for kind, retry in (("no input", node.no_input), ("no match", node.no_match)) if retry.next is None]
    if not missing:
        return None
    return loaded.problem(
        ("nodes", node_id),
        f"{node.type} `{node_id}` has no failure path: after the last {' or '.join(missing)} "
        "the call has nowhere to go",
        "add failure: <node id>, e.g. an operator queue or a polite goodbye",
        at="key",
    )


def _check_menus(loaded: LoadedFlow) -> Iterator[Problem]:
    for node_id, node in loaded.flow.nodes.items():
        if not isinstance(node, MenuNode):
            continue
        base: Loc = ("nodes", node_id)
        keys: dict[str, int] = {}
        words: dict[tuple[str, str], int] = {}
        for i, option in enumerate(node.options):
            if option.key is not None:
                if option.key in keys:
                    line = loaded.positions.value((*base, "options", keys[option.key], "key"))[0]
                    yield loaded.problem(
                        (*base, "options", i, "key"),
                        f"menu `{node_id}`: key `{option.key}` is used twice (first on line {line})",
                        "give each option its own key",
                    )
                else:
                    keys[option.key] = i
            for lang, spoken in option.words.items():
                for j, word in enumerate(spoken):
                    norm = _norm_word(word)
                    if (lang, norm) in words:
                        first = words[(lang, norm)]
                        line = loaded.positions.value((*base, "options", first, "words", lang))[0]
                        yield loaded.problem(
                            (*base, "options", i, "words", lang, j),
                            f"menu `{node_id}`: the {lang} word `{word}` belongs to two options (first on line {line})",
                            "each spoken word may lead to one option only",
                        )
                    else:
                        words[(lang, norm)] = i
        problem = _failure_path_problem(loaded, node_id, node)
        if problem is not None:
            yield problem


def _check_inputs(loaded: LoadedFlow) -> Iterator[Problem]:
    for node_id, node in loaded.flow.nodes.items():
        base: Loc = ("nodes", node_id)
        if isinstance(node, CollectNode):
            problem = _failure_path_problem(loaded, node_id, node)
            if problem is not None:
                yield problem
            if node.min_digits > node.max_digits:
                yield loaded.problem(
                    (*base, "min_digits"),
                    f"collect `{node_id}`: min_digits {node.min_digits} is more than max_digits {node.max_digits}",
                    "make min_digits <= max_digits",
                )
            if node.total is not None and node.inter_digit > node.total:
                yield loaded.problem(
                    (*base, "inter_digit"),
                    f"collect `{node_id}`: {_setting(loaded, node_id, 'inter_digit', node.inter_digit)} is longer "
                    f"than {_setting(loaded, node_id, 'total', node.total)}",
                    "raise total or lower inter_digit: the total must leave room for a pause between digits",
                )
            if node.total is not None and node.first_digit > node.total:
                yield loaded.problem(
                    (*base, "first_digit"),
                    f"collect `{node_id}`: {_setting(loaded, node_id, 'first_digit', node.first_digit)} can never "
                    f"run out: {_setting(loaded, node_id, 'total', node.total)} ends the wait first",
                    "lower first_digit or raise total",
                    "warning",
                )
            if node.terminator is not None and node.terminator in node.allowed:
                yield loaded.problem(
                    (*base, "terminator") if loaded.positions.has((*base, "terminator")) else (*base, "allowed"),
                    f"collect `{node_id}`: the terminator `{node.terminator}` is also an allowed digit",
                    f"remove {node.terminator} from allowed, or choose another terminator",
                )
            if node.check is not None:
                lengths = _CHECKSUM_LENGTHS[node.check]
                if not any(node.min_digits <= n <= node.max_digits for n in lengths):
                    wanted = " or ".join(str(n) for n in sorted(lengths)) if len(lengths) < 5 else "2 or more"
                    yield loaded.problem(
                        (*base, "check"),
                        f"collect `{node_id}`: {node.check} numbers have {wanted} digits, but min_digits/max_digits "
                        f"allow {node.min_digits}-{node.max_digits}",
                        f"set min_digits and max_digits to allow {wanted} digits",
                    )
            if node.confirm is not None and node.confirm.yes == node.confirm.no:
                yield loaded.problem(
                    (*base, "confirm", "no"),
                    f"collect `{node_id}`: confirm uses `{node.confirm.yes}` for both yes and no",
                    'use different keys, e.g. yes: "1", no: "2"',
                )
        if isinstance(node, RecordNode) and node.silence is not None and node.silence >= node.max_length:
            yield loaded.problem(
                (*base, "silence"),
                f"record `{node_id}`: silence {_fmt_seconds(node.silence)} is not shorter than max_length "
                f"{_fmt_seconds(node.max_length)}, so it never ends a recording",
                "lower silence, or set it to null",
                "warning",
            )


# ---- prompts ----------------------------------------------------------------------------------------------------


def _prompt_uses(loaded: LoadedFlow) -> Iterator[tuple[Loc, str | SayItem | Any]]:
    """Every prompt item a node plays, with the location of the item."""
    for node_id, node in loaded.flow.nodes.items():
        for field_loc, items in node.prompt_fields():
            loc: Loc = ("nodes", node_id, *field_loc)
            as_list = loaded.positions.has((*loc, 0))
            for i, item in enumerate(items):
                yield ((*loc, i) if as_list else loc), item


def _check_prompts(loaded: LoadedFlow) -> Iterator[Problem]:
    flow = loaded.flow
    declared = flow.prompts
    used: dict[str, set[str]] = {}  # prompt -> languages it is played in
    fallback = flow.fallback_language
    for loc, item in _prompt_uses(loaded):
        if isinstance(item, str | PromptRef):
            name = item if isinstance(item, str) else item.prompt
            needed = set(flow.languages) if isinstance(item, str) else {item.language}
            used.setdefault(name, set()).update(needed)
            if isinstance(item, PromptRef) and item.language not in flow.languages:
                yield loaded.problem(
                    (*loc, "language"),
                    f"`{item.language}` is not one of this flow's languages ({', '.join(flow.languages)})",
                    _did_you_mean(item.language, flow.languages),
                )
            if name not in declared:
                yield loaded.problem(
                    (*loc, "prompt") if isinstance(item, PromptRef) else loc,
                    f"prompt `{name}` is not declared under prompts:",
                    _did_you_mean(name, declared) or f"add it under prompts: ({name}: {{bg: ..., en: ...}})",
                )
        elif isinstance(item, SayItem):
            unsupported = sorted(set(flow.languages) - SPOKEN_NUMBER_LANGUAGES)
            if unsupported:
                yield loaded.problem(
                    loc,
                    f"numbers can be spoken in {', '.join(sorted(SPOKEN_NUMBER_LANGUAGES))} only; callers in "
                    f"{', '.join(unsupported)} will hear them in {fallback}",
                    None,
                    "warning",
                )
    for name, definition in declared.items():
        base: Loc = ("prompts", name)
        if name not in used:
            yield loaded.problem(base, f"prompt `{name}` is never played", "delete it or play it", "warning", at="key")
        for lang, variant in (definition or {}).items():
            if isinstance(variant, PromptFile) and not loaded.resolve(variant.file).is_file():
                yield loaded.problem(
                    (*base, lang, "file"), f"prompt `{name}` ({lang}): no such file {variant.file}",
                    f"the path is relative to {loaded.base_dir}",
                )  # fmt: skip
            text = variant.text if isinstance(variant, PromptText) else variant if isinstance(variant, str) else None
            if text is not None and has_template(text):
                yield loaded.problem(
                    (*base, lang, "text") if isinstance(variant, PromptText) else (*base, lang),
                    f"prompt `{name}` ({lang}): text prompts are synthesised once at load, so {{{{ }}}} is never "
                    "filled in",
                    'to speak a value, add {say: "{{ account }}", as: digits} to the node\'s prompt list',
                )
        if name not in used:
            continue
        gaps: list[str] = []
        for lang in [lang for lang in flow.languages if lang in used[name]]:
            if source_in(loaded, name, lang) is not None:
                continue
            if lang != fallback and source_in(loaded, name, fallback) is not None:
                gaps.append(lang)
            else:
                where = "" if lang == fallback else f" nor in the fallback language {fallback}"
                yield loaded.problem(
                    base,
                    f"prompt `{name}` has no recording or text in {lang}{where}: callers would hear nothing",
                    f"add {lang}: <text> under it, or record prompts/{lang}/{name}.wav",
                    at="key",
                )
        if gaps:
            yield loaded.problem(
                base,
                f"prompt `{name}` is missing in {', '.join(gaps)}: those callers hear it in {fallback}",
                " ".join(f"add {lang}: <text> or record prompts/{lang}/{name}.wav;" for lang in gaps).rstrip(";"),
                "warning",
                at="key",
            )


# ---- names from the daemon configuration ------------------------------------------------------------------------


def _check_names(
    loaded: LoadedFlow, known_queues: set[str] | None, known_calendars: set[str] | None
) -> Iterator[Problem]:
    flow = loaded.flow
    for node_id, node in flow.nodes.items():
        if isinstance(node, QueueNode) and known_queues is not None and node.queue not in known_queues:
            yield loaded.problem(
                ("nodes", node_id, "queue"),
                f"node `{node_id}`: there is no queue called `{node.queue}`",
                _did_you_mean(node.queue, known_queues)
                or (f"queues: {', '.join(sorted(known_queues))}" if known_queues else "no queues are configured"),
            )
        if isinstance(node, HoursNode) and node.calendar not in flow.calendars:
            if known_calendars is None:
                continue
            if node.calendar not in known_calendars:
                names = set(flow.calendars) | known_calendars
                yield loaded.problem(
                    ("nodes", node_id, "calendar"),
                    f"node `{node_id}`: there is no calendar called `{node.calendar}`",
                    _did_you_mean(node.calendar, names)
                    or (f"calendars: {', '.join(sorted(names))}" if names else "define it under calendars:"),
                )


# ---- variables and templates ------------------------------------------------------------------------------------


def _templates(loaded: LoadedFlow) -> Iterator[tuple[Loc, str, bool]]:
    """(location, source, is_expression) of every template in the flow."""
    for loc, item in _prompt_uses(loaded):
        if isinstance(item, SayItem):
            yield (*loc, "say"), item.say, False
    for node_id, node in loaded.flow.nodes.items():
        base: Loc = ("nodes", node_id)
        if isinstance(node, SetNode):
            for var, value in node.vars.items():
                if isinstance(value, str):
                    yield (*base, "vars", var), value, False
        elif isinstance(node, QueueNode):
            for key, value in node.data.items():
                if isinstance(value, str):
                    yield (*base, "data", key), value, False
        elif isinstance(node, HttpNode):
            yield (*base, "url"), node.url, False
            for section in ("headers", "query"):
                for key, value in getattr(node, section).items():
                    yield (*base, section, key), value, False
            yield from _json_templates((*base, "json"), node.json_)
        elif isinstance(node, BranchNode):
            for i, case in enumerate(node.cases):
                if case.expr is not None:
                    yield (*base, "cases", i, "expr"), case.expr, True


def _json_templates(loc: Loc, value: Any) -> Iterator[tuple[Loc, str, bool]]:
    if isinstance(value, str):
        yield loc, value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_templates((*loc, str(key)), item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_templates((*loc, i), item)


def _check_variables(loaded: LoadedFlow) -> Iterator[Problem]:
    flow = loaded.flow
    defined: set[str] = set(flow.variables)
    setters: list[tuple[Loc, str]] = [(("variables", v), v) for v in flow.variables]
    for node_id, node in flow.nodes.items():
        base: Loc = ("nodes", node_id)
        if isinstance(node, SetNode):
            setters += [((*base, "vars", v), v) for v in node.vars]
        elif isinstance(node, (CollectNode, RecordNode)):
            setters.append(((*base, "into"), node.into))
            if isinstance(node, RecordNode):  # the engine also sets <into>_seconds and <into>_reason
                defined.update((f"{node.into}_seconds", f"{node.into}_reason"))
        elif isinstance(node, HttpNode):
            setters += [((*base, "map", v), v) for v in node.map]
            defined.update(("http_status", "http_error"))  # set by the engine after every lookup
        elif isinstance(node, QueueNode) and node.failure is not None:
            defined.add("queue_error")  # set by the engine when a handoff fails
    for loc, var in setters:
        defined.add(var)
        if var in BUILTIN_NAMES:
            hint = "use a node with type: language" if var == "language" else "choose another name"
            yield loaded.problem(
                loc, f"`{var}` is a built-in name and cannot be set", hint,
                at="key" if loc[-1] == var and loc[-2] in ("vars", "map", "variables") else "value",
            )  # fmt: skip
    readable = defined | BUILTIN_NAMES
    for loc, source, is_expr in _templates(loaded):
        for name in sorted(variables_in(source, expression=is_expr) - readable):
            yield loaded.problem(
                loc,
                f"`{name}` is read here but no node sets it",
                _did_you_mean(name, readable) or f"set it first, or write {{{{ {name} | default('') }}}}",
                "warning",
            )
    for node_id, node in flow.nodes.items():
        if isinstance(node, BranchNode):
            for i, case in enumerate(node.cases):
                for var in case.vars or {}:
                    if var not in readable:
                        yield loaded.problem(
                            ("nodes", node_id, "cases", i, "vars", var),
                            f"`{var}` is tested here but no node sets it",
                            _did_you_mean(var, readable),
                            "warning",
                            at="key",
                        )


# ---- other flow files -------------------------------------------------------------------------------------------


def _check_linked_files(loaded: LoadedFlow) -> Iterator[Problem]:
    for node_id, node in loaded.flow.nodes.items():
        if isinstance(node, (GotoNode, SubflowNode)):
            path = loaded.resolve(node.flow)
            if path.resolve() == loaded.path.resolve():
                yield loaded.problem(
                    ("nodes", node_id, "flow"), f"node `{node_id}`: a flow cannot {node.type} to itself",
                    "link to a node in this flow instead",
                )  # fmt: skip
            elif not path.is_file():
                siblings = [p.name for p in _yaml_files(path.parent)]
                yield loaded.problem(
                    ("nodes", node_id, "flow"),
                    f"node `{node_id}`: no flow file {node.flow}",
                    _did_you_mean(Path(node.flow).name, siblings) or f"the path is relative to {loaded.base_dir}",
                )


def _yaml_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")]
    except OSError:
        return []
