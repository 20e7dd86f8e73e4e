"""What loading a flow gives: a :class:`LoadedFlow` (the model, its file and where every key was written) or the
:class:`Problem` list of a :class:`FlowError`, each at ``file:line:column``.

These values are shared by the loader (:mod:`ivr.flows.loader`), the static checks (:mod:`ivr.flows.checks`) and
prompt resolution (:mod:`ivr.flows.prompt_sources`), so none of those needs to import another to name them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ivr.flows.model import Flow

__all__ = ["FlowError", "LoadedFlow", "Loc", "Positions", "Problem", "Severity", "problem_order"]

Severity = Literal["error", "warning"]
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth a look) in a flow file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class FlowError(Exception):
    """A flow (or calendar) file could not be loaded; ``problems`` lists every error (and the warnings)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def problem_order(problem: Problem) -> tuple[str, int, int, int]:
    return problem.file, problem.line, problem.column, 0 if problem.severity == "error" else 1


class Positions:
    """Where each key and value of a YAML document was written (1-based line, column), by path."""

    def __init__(self) -> None:
        self._keys: dict[Loc, tuple[int, int]] = {(): (1, 1)}
        self._values: dict[Loc, tuple[int, int]] = {(): (1, 1)}

    def record(self, loc: Loc, key: tuple[int, int] | None, value: tuple[int, int] | None) -> None:
        if key is not None:
            self._keys[loc] = key
        if value is not None:
            self._values[loc] = value

    def key(self, loc: Loc) -> tuple[int, int]:
        """Position of the key at ``loc`` (for a list item: the item); the nearest written parent if absent."""
        while loc not in self._keys and loc not in self._values:
            loc = loc[:-1]
        return self._keys.get(loc) or self._values[loc]

    def value(self, loc: Loc) -> tuple[int, int]:
        """Position of the value at ``loc``; the nearest written parent's if absent."""
        while loc not in self._values and loc not in self._keys:
            loc = loc[:-1]
        return self._values.get(loc) or self._keys[loc]

    def has(self, loc: Loc) -> bool:
        return loc in self._keys or loc in self._values


@dataclass(frozen=True)
class LoadedFlow:
    """A flow that loaded (and, unless asked otherwise, passed the checks): the model, its file and positions."""

    flow: Flow
    path: Path
    positions: Positions = field(repr=False)
    warnings: tuple[Problem, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def file(self) -> str:
        return str(self.path)

    def problem(
        self,
        loc: Loc,
        message: str,
        hint: str | None = None,
        severity: Severity = "error",
        *,
        at: Literal["key", "value"] = "value",
    ) -> Problem:
        line, column = self.positions.key(loc) if at == "key" else self.positions.value(loc)
        return Problem(self.file, line, column, message, hint, severity)

    def resolve(self, relative: str) -> Path:
        """A path written in the flow, relative to the flow file's folder."""
        path = Path(relative)
        return path if path.is_absolute() else self.base_dir / path
