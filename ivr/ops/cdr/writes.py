"""Writes as data: what the store asks a writer to do (insert, update, close the open rows), the batch limit, and
how a writer resolves the futures of a committed (or failed) batch on the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ivr.ops.cdr.record import CdrError

MAX_BATCH: Final = 512
"""Writes committed in one transaction at most."""


@dataclass(frozen=True, slots=True)
class _Insert:
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Update:
    record_id: str
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _CloseOpen:
    instance: str
    at: datetime


_Op = _Insert | _Update | _CloseOpen
_Work = tuple[_Op, "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _check_update(op: _Op, result: Any) -> BaseException | None:
    if isinstance(op, _Update) and result == 0:
        return CdrError(f"record {op.record_id} is not in the store (its insert failed?)")
    return None


# -- resolving futures on the loop -------------------------------------------------------------------------------


def _succeed_if_pending(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail_if_pending(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if error is None:
            _succeed_if_pending(future, result)
        else:
            _fail_if_pending(future, error)
