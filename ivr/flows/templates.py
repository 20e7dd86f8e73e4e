"""The safe template language for values in flows: Jinja2 in its sandbox, over plain data only.

``"{{ account }}"``, ``"https://crm/api/{{ account | urlencode }}"``, ``"{{ balance | float > 100 }}"``.

What a template sees is the call's context (:func:`call_context`): the flow's variables, ``caller``, ``dialled``,
``language``, ``client``, ``call_id`` and ``now`` (a mapping: ``now.weekday``, ``now.hour``...). Every value is plain
data: text, numbers, booleans, None, lists and mappings of those. Attribute access to Python objects is refused
(``"x".upper`` is an error, so is ``caller.__class__``); ``a.b`` on a mapping reads its key ``b``. Undefined variables
are errors (write ``{{ vip | default('no') }}``). Templates are compiled once, at load.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "BUILTIN_NAMES",
    "TemplateProblem",
    "call_context",
    "evaluate",
    "has_template",
    "plain_data",
    "render",
    "syntax_problem",
    "variables_in",
]

BUILTIN_NAMES: Final = frozenset({"caller", "dialled", "language", "client", "call_id", "now", "flow"})
"""Names every template can read besides the flow's variables; flows cannot ``set`` them."""

MAX_OUTPUT: Final = 4096


class TemplateProblem(ValueError):
    """A template failed to compile or to render; the message says where and why, for a log or a trace."""


class _PlainSandbox(SandboxedEnvironment):
    """A sandbox that reads keys of mappings and items of lists, and nothing else from any object."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False  # only filters and tests (which are not "called" from templates) do work


@functools.cache
def _environment() -> _PlainSandbox:
    env = _PlainSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals.clear()  # no range(), lipsum(), dict(), cycler(), joiner(), namespace()
    env.filters["digits"] = lambda value: "".join(ch for ch in str(value) if ch.isdigit())
    env.filters["last"] = _last
    return env


def _last(value: Any, count: int = 1) -> Any:
    """``{{ account | last(4) }}``: the last characters of text (or items of a list)."""
    if isinstance(value, str):
        return value[-count:] if count > 0 else ""
    items = list(value)
    return items[-1] if count == 1 and items else items[-count:]


def has_template(text: str) -> bool:
    """True when ``text`` holds template syntax (``{{``, ``{%`` or ``{#``)."""
    return "{{" in text or "{%" in text or "{#" in text


def syntax_problem(source: str, *, expression: bool = False) -> str | None:
    """None when ``source`` compiles; else what is wrong, phrased for the person who wrote it."""
    try:
        if expression:
            _compile_expression(source)
        else:
            _compile(source)
    except TemplateSyntaxError as exc:
        return f"template error: {exc.message}"
    return None


def variables_in(source: str, *, expression: bool = False) -> frozenset[str]:
    """The top-level names ``source`` reads (``{{ account }}`` -> {"account"}); empty when it does not compile."""
    env = _environment()
    try:
        ast: nodes.Template = env.parse("{{ (" + source + ") }}" if expression else source)
    except TemplateSyntaxError:
        return frozenset()
    return frozenset(meta.find_undeclared_variables(ast))


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return _environment().from_string(source)


@functools.lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return _environment().compile_expression(source, undefined_to_none=False)


def render(source: str, context: Mapping[str, Any]) -> str:
    """``source`` rendered against ``context`` (plain data). Text without template syntax is returned unchanged.
    Raises :class:`TemplateProblem` on undefined names, refused access or output longer than 4096 characters."""
    if not has_template(source):
        return source
    try:
        out = str(_compile(source).render(dict(context)))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template error in {source!r}: {exc.message}") from None
    except (UndefinedError, SecurityError) as exc:
        raise TemplateProblem(f"{source!r}: {exc.message or exc}") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, OverflowError) as exc:
        raise TemplateProblem(f"{source!r}: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise TemplateProblem(f"{source!r}: rendered text longer than {MAX_OUTPUT} characters")
    return out


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The value of a Jinja expression (``"tries < 3 and vip == 'yes'"``) against ``context``; raises
    :class:`TemplateProblem` like :func:`render`."""
    try:
        value = _compile_expression(expression)(**dict(context))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"expression error in {expression!r}: {exc.message}") from None
    except (UndefinedError, SecurityError) as exc:
        raise TemplateProblem(f"{expression!r}: {exc.message or exc}") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, OverflowError) as exc:
        raise TemplateProblem(f"{expression!r}: {exc}") from None
    if isinstance(value, StrictUndefined):
        raise TemplateProblem(f"{expression!r}: undefined")
    return value


def plain_data(value: Any, *, _depth: int = 0) -> Any:
    """``value`` checked (and copied) as plain data: str, int, float, bool, None, lists and str-keyed mappings.
    Raises ``TypeError`` for anything else, so no Python object reaches a template."""
    if _depth > 32:
        raise TypeError("data nested more than 32 levels deep")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, _depth=_depth + 1) for v in value]
    raise TypeError(f"{type(value).__name__} is not plain data (text, number, bool, list, mapping)")


def time_context(when: dt.datetime) -> dict[str, Any]:
    """``now`` as templates see it: ``date`` (YYYY-MM-DD), ``time`` (HH:MM), ``weekday`` (mon..sun), ``hour``,
    ``minute``, ``day``, ``month``, ``year`` in the zone of ``when``."""
    return {
        "date": when.date().isoformat(),
        "time": f"{when.hour:02d}:{when.minute:02d}",
        "weekday": ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[when.weekday()],
        "hour": when.hour,
        "minute": when.minute,
        "day": when.day,
        "month": when.month,
        "year": when.year,
        "iso": when.isoformat(timespec="seconds"),
    }


def call_context(
    variables: Mapping[str, Any],
    *,
    caller: str,
    dialled: str,
    language: str,
    now: dt.datetime,
    call_id: str = "",
    client: str = "",
    flow: str = "",
) -> dict[str, Any]:
    """The mapping templates and branch expressions read: the flow's variables plus the built-in names
    (built-ins win over variables of the same name)."""
    context: dict[str, Any] = plain_data(dict(variables))
    context.update(
        caller=caller,
        dialled=dialled,
        language=language,
        now=time_context(now),
        call_id=call_id,
        client=client,
        flow=flow,
    )
    return context
