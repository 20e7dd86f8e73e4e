"""Helpers for the flow tests: small flow files written to a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ivr.flows.loader import FlowError, LoadedFlow, Problem, load_flow

HEADER = """\
name: test
languages: [bg, en]
language: bg
start: {start}
prompts:
  hello: {{bg: Здравейте, en: Hello}}
  bye: {{bg: Довиждане, en: Goodbye}}
"""


def flow_text(nodes: str, *, start: str = "a", header: str | None = None, extra: str = "") -> str:
    """A flow file: the standard header (prompts hello and bye in bg and en), ``extra`` top-level keys, and
    ``nodes`` (YAML for the mapping under nodes:, dedented)."""
    head = header if header is not None else HEADER.format(start=start)
    body = textwrap.indent(textwrap.dedent(nodes).strip("\n"), "  ")
    return head + textwrap.dedent(extra) + "nodes:\n" + body + "\n"


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs: object) -> list[Problem]:
    """Every problem (errors and warnings) loading ``path`` reports."""
    try:
        loaded = load_flow(path, **kwargs)  # type: ignore[arg-type]
    except FlowError as exc:
        return exc.problems
    return list(loaded.warnings)


def load_ok(path: Path, **kwargs: object) -> LoadedFlow:
    return load_flow(path, **kwargs)  # type: ignore[arg-type]


def lines(problems: list[Problem]) -> list[str]:
    """Problems as ``line:column: severity: message (hint)`` without the file name."""
    return [str(p).split(":", 1)[1] for p in problems]


def messages(problems: list[Problem], severity: str | None = None) -> str:
    return "\n".join(str(p) for p in problems if severity is None or p.severity == severity)
