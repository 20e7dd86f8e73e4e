"""How a ``branch`` node chooses: its cases' conditions judged against a call's context and the time.

Pure functions over plain data and an aware datetime (the engine passes the loop's idea of "now" turned into
wall-clock time), so the same branch gives the same answer in the daemon, the simulator and a unit test.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ivr.flows.calendar import parse_days, parse_range, time_zone
from ivr.flows.model import BranchCase, BranchNode, ValueTest
from ivr.flows.templates import TemplateProblem, evaluate

__all__ = ["BranchChoice", "case_holds", "choose_branch", "value_matches"]

_TRUE_WORDS = frozenset({"true", "yes", "1", "on", "да"})


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", "."))
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _glob(value: Any, pattern: str) -> bool:
    """Glob match on text: ``*`` any run, ``?`` one character, ``[0-4]`` a set; case-sensitive."""
    return fnmatch.fnmatchcase(_text(value), pattern)


def _test(test: ValueTest, value: Any) -> bool:
    text = _text(value)
    if test.equals is not None:
        wanted, got = _as_number(test.equals), _as_number(value)
        if wanted is not None and got is not None:
            if wanted != got:
                return False
        elif _text(test.equals) != text:
            return False
    if test.not_ is not None:
        patterns = [test.not_] if isinstance(test.not_, str) else test.not_
        if any(_glob(value, p) for p in patterns):
            return False
    if test.regex is not None and re.search(test.regex, text) is None:
        return False
    if test.empty is not None and (text.strip() == "") != test.empty:
        return False
    bounds = (test.gt, test.ge, test.lt, test.le)
    if any(b is not None for b in bounds):
        number = _as_number(value)
        if number is None:
            return False
        if test.gt is not None and not number > test.gt:
            return False
        if test.ge is not None and not number >= test.ge:
            return False
        if test.lt is not None and not number < test.lt:
            return False
        if test.le is not None and not number <= test.le:
            return False
    return True


def value_matches(condition: Any, value: Any) -> bool:
    """Whether ``value`` (a variable, or the caller's number) satisfies ``condition`` as written in a case:
    a glob pattern, a list of patterns (any), a number (numeric equality), true/false, or a :class:`ValueTest`."""
    if isinstance(condition, ValueTest):
        return _test(condition, value)
    if isinstance(condition, bool):
        return (_text(value).strip().lower() in _TRUE_WORDS) == condition
    if isinstance(condition, (int, float)):
        number = _as_number(value)
        return number is not None and number == float(condition)
    if isinstance(condition, list):
        return any(_glob(value, p) for p in condition)
    return _glob(value, str(condition))


def _in_time(case: BranchCase, now: dt.datetime, flow_timezone: str) -> bool:
    local = now.astimezone(time_zone(case.timezone or flow_timezone))
    minute = local.hour * 60 + local.minute
    if case.time is not None:
        start, end = parse_range(case.time)
        inside_today = start <= minute < end
        inside_spill = end > 24 * 60 and minute < end - 24 * 60
        if not (inside_today or inside_spill):
            return False
        if case.days is not None:
            # A range past midnight belongs to the day it started on: fri 22:00-02:00 holds early on Saturday.
            day = local.weekday() if inside_today else (local.weekday() - 1) % 7
            return day in parse_days(case.days)
    return case.days is None or local.weekday() in parse_days(case.days)


def case_holds(case: BranchCase, context: Mapping[str, Any], now: dt.datetime, flow_timezone: str) -> bool:
    """True when every condition of ``case`` holds. ``context`` is :func:`ivr.flows.templates.call_context`'s
    mapping; ``now`` is an aware datetime. Raises :class:`TemplateProblem` when ``expr`` cannot be evaluated."""
    if now.tzinfo is None:
        raise ValueError("pass an aware datetime as now")
    if case.caller is not None and not value_matches(case.caller, context.get("caller", "")):
        return False
    if case.dialled is not None and not value_matches(case.dialled, context.get("dialled", "")):
        return False
    if case.language is not None:
        languages = [case.language] if isinstance(case.language, str) else case.language
        if context.get("language") not in languages:
            return False
    for name, condition in (case.vars or {}).items():
        if not value_matches(condition, context.get(name)):
            return False
    if (case.days is not None or case.time is not None) and not _in_time(case, now, flow_timezone):
        return False
    return case.expr is None or bool(evaluate(case.expr, context))


@dataclass(frozen=True, slots=True)
class BranchChoice:
    """Where a branch goes, which case decided (None: ``else``), and any case that could not be judged."""

    target: str
    case: int | None
    errors: tuple[str, ...] = ()


def choose_branch(node: BranchNode, context: Mapping[str, Any], now: dt.datetime, flow_timezone: str) -> BranchChoice:
    """The first case of ``node`` that holds, else ``else``. A case whose expression fails (an undefined variable)
    is skipped and its error reported in the choice, so the call goes on rather than dropping."""
    errors: list[str] = []
    for i, case in enumerate(node.cases):
        try:
            if case_holds(case, context, now, flow_timezone):
                return BranchChoice(case.next, i, tuple(errors))
        except TemplateProblem as exc:
            errors.append(f"case {i + 1}: {exc}")
    return BranchChoice(node.else_, None, tuple(errors))
