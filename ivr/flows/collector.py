"""The digit-collection timer rules of docs/flows.md section 5, as a sans-I/O state machine.

The engine feeds it keys and the loop clock's time, asks :meth:`DigitCollector.deadline` when to wake it, and calls
:meth:`DigitCollector.expire` then. It never reads a clock itself, so a scenario on virtual time gets the same result::

    collector = DigitCollector(node)
    ... prompt plays; keys pressed meanwhile go to collector.press(key, now) (barge-in: never lost) ...
    collector.prompt_ended(now)
    outcome = collector.press(key, now) or (collector.expire(now) if now >= collector.deadline() else None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ivr.flows.entries import entry_problem, mask
from ivr.flows.model import CollectNode

__all__ = ["CollectOutcome", "DigitCollector"]

EndedBy = Literal["terminator", "max_digits", "inter_digit", "first_digit", "total"]


@dataclass(frozen=True, slots=True)
class CollectOutcome:
    """How one try of a collect ended: a valid ``entry``, a ``no_match`` (with the reason) or a ``no_input``."""

    kind: Literal["entry", "no_match", "no_input"]
    digits: str
    ended_by: EndedBy
    problem: str | None = None

    def shown(self, sensitive: bool) -> str:
        """The digits as a log or trace may show them."""
        return mask(self.digits, sensitive)


class DigitCollector:
    """One try of a ``collect`` node. Times are seconds on one clock (the event loop's)."""

    def __init__(self, node: CollectNode) -> None:
        self.node = node
        self.digits = ""
        self.prompt_end: float | None = None
        self.last_key: float | None = None
        self.outcome: CollectOutcome | None = None

    def prompt_ended(self, now: float) -> None:
        """The prompt finished (or was stopped by a key): the timers start now."""
        if self.prompt_end is None:
            self.prompt_end = now

    def press(self, key: str, now: float) -> CollectOutcome | None:
        """A key from the caller; returns the outcome when this key completes the entry."""
        if self.outcome is not None:
            return self.outcome
        if self.node.terminator is not None and key == self.node.terminator:
            return self._finish("terminator")
        self.digits += key
        self.last_key = now
        if len(self.digits) >= self.node.max_digits:
            return self._finish("max_digits")
        return None

    def deadline(self) -> float:
        """When :meth:`expire` must be called (``inf`` while the prompt is still playing with no key yet).

        No key yet: prompt end + ``first_digit`` (or ``total`` if shorter). After a key: that key + ``inter_digit``,
        but never later than prompt end + ``total`` + ``inter_digit`` (the inter-digit timer overrides the total
        while keys are coming, by at most one inter-digit window)."""
        node = self.node
        total = node.total if node.total is not None else math.inf
        if self.last_key is None:
            if self.prompt_end is None:
                return math.inf
            return self.prompt_end + min(node.first_digit, total)
        start = self.prompt_end if self.prompt_end is not None else self.last_key
        return min(self.last_key + node.inter_digit, start + total + node.inter_digit)

    def expire(self, now: float) -> CollectOutcome | None:
        """The deadline passed: the outcome, or None if ``now`` is still before it (a stale wake-up)."""
        if self.outcome is not None:
            return self.outcome
        deadline = self.deadline()
        if now < deadline:
            return None
        if not self.digits:
            node = self.node
            by_total = node.total is not None and node.total < node.first_digit
            return self._finish("total" if by_total else "first_digit")
        capped = (
            self.node.total is not None
            and self.last_key is not None
            and (deadline < self.last_key + self.node.inter_digit)
        )
        return self._finish("total" if capped else "inter_digit")

    def _finish(self, ended_by: EndedBy) -> CollectOutcome:
        if not self.digits and ended_by in ("first_digit", "total"):
            self.outcome = CollectOutcome("no_input", "", ended_by)
        else:
            problem = entry_problem(self.node, self.digits)
            kind: Literal["entry", "no_match"] = "entry" if problem is None else "no_match"
            self.outcome = CollectOutcome(kind, self.digits, ended_by, problem)
        return self.outcome
