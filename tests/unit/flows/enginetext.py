"""Small flows for the engine tests: a header with the prompts they play, nodes written per test."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ivr.flows.loader import FlowTree, load_flow_tree

HEADER = """\
name: {name}
languages: [bg, en]
language: bg
fallback: bg
start: {start}
prompts:
  hello: {{bg: Здравейте, en: Hello}}
  menu: {{bg: Меню, en: Menu}}
  menu-short: {{bg: Кратко меню, en: Short menu}}
  no-input: {{bg: Не чух, en: I did not hear you}}
  invalid: {{bg: Невалиден избор, en: Not valid}}
  enter: {{bg: Въведете номера, en: Enter the number}}
  enter-short: {{bg: Номерът, en: The number}}
  you-entered: {{bg: Въведохте, en: You entered}}
  confirm: {{bg: Ако е вярно натиснете едно, en: If correct press one}}
  connecting: {{bg: Свързване, en: Connecting}}
  busy: {{bg: Заето, en: Busy}}
  leave-message: {{bg: Оставете съобщение, en: Leave a message}}
  thanks: {{bg: Благодаря, en: Thank you}}
  closed: {{bg: Затворено, en: Closed}}
  holiday: {{bg: Празник, en: Holiday}}
  balance: {{bg: Балансът Ви е, en: Your balance is}}
  only-bg: {{bg: Само на български}}
  bye: {{bg: Довиждане, en: Bye}}
{goodbye}"""


def flow_file(
    tmp_path: Path,
    nodes: str,
    *,
    start: str = "a",
    top: str = "",
    name: str = "t",
    file: str = "flow.yaml",
    goodbye: bool = True,
) -> Path:
    """Write a flow (the standard header, ``top`` extra top-level YAML, then ``nodes``) and return its path."""
    head = HEADER.format(
        name=name, start=start, goodbye="  goodbye: {bg: Довиждане и лек ден, en: Goodbye}\n" if goodbye else ""
    )
    body = textwrap.indent(textwrap.dedent(nodes).strip("\n"), "  ")
    path = tmp_path / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + textwrap.dedent(top) + "nodes:\n" + body + "\n", encoding="utf-8")
    return path


def flow_tree(tmp_path: Path, nodes: str, **kwargs: object) -> FlowTree:
    return load_flow_tree(flow_file(tmp_path, nodes, **kwargs))  # type: ignore[arg-type]
