"""Scenario files: flows tested like code, written by ops next to the flows they test.

A scenario file (``*.test.yaml``) names what it tests (``config:`` a daemon config and the ``dialled`` number, or
``flow:`` one flow file), the inputs every case shares (caller number, dialled number, the date and time of the
call, the HTTP answers the flow's lookups get), and its cases. A case is a list of steps, each one line::

    config: ../ivr.yaml
    dialled: "2000"
    at: 2026-11-24 10:00            # a Tuesday, in the flow's time zone unless an offset is given
    http:
      GET https://crm.example.com/accounts/{account}:
        json: {name: Ivan, balance: 42.5}
    cases:
      - name: an English caller reaches billing
        steps:
          - expect prompt welcome
          - press 2
          - expect prompt main-menu in en
          - press 1
          - expect transfer billing with account=12345678
          - expect hangup

Steps:

``expect prompt NAME [in LANG] [saying "WORDS"]``
    The next prompt the caller hears is NAME (from the audio received). ``expect prompts A, B`` checks several.
``press KEYS [by rfc4733|info|inband]``
    Press keys one after another (RFC 4733 events unless told otherwise). Whatever was heard before and not
    expected is passed over: pressing during a prompt means having heard its start.
``say "TEXT" [in LANG] [by espeak|flite]`` / ``say FILE.wav``
    Speak: text synthesised with espeak-ng (or flite, English only), or a recording (any rate), sent as the
    caller's audio.
``silence DURATION`` (or ``wait DURATION``)
    Do nothing for a time (``6s``, ``500ms``, ``1m``).
``expect silence DURATION``
    Nothing is heard for that long.
``expect transfer QUEUE [with KEY=VALUE, ...]``
    The call is handed to queue QUEUE with (at least) that attached data: a REFER to the caller (the data from
    the Refer-To's headers), or, bridged, an INVITE to the queue endpoint (the lab runs a simulated ACD at each
    queue's address). ``queue_status: 486`` (per file or case) makes every queue answer busy instead of 200.
``expect hangup [within DURATION]``
    The daemon ends the call.
``hangup``
    The caller hangs up.

Errors name the file, line and column, with what to write instead, like ``ivr validate``.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.flows.loader import FlowError, Positions, Problem, _parse_yaml
from ivr.flows.runtime import FixtureResponse

__all__ = [
    "Case",
    "ScenarioFile",
    "Step",
    "load_scenario",
    "parse_duration",
    "parse_step",
]

StepKind = Literal[
    "expect_prompt", "press", "say", "silence", "expect_silence", "expect_transfer", "expect_hangup", "hangup"
]
PressMethod = Literal["rfc4733", "info", "inband"]

_TOP_KEYS = {"config", "flow", "dialled", "caller", "at", "codec", "http", "cases", "timeout", "queue_status"}
_CASE_KEYS = {"name", "dialled", "caller", "at", "codec", "http", "steps", "timeout", "queue_status"}
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    text: str
    line: int
    column: int
    names: tuple[str, ...] = ()
    language: str | None = None
    saying: str | None = None
    keys: str = ""
    method: PressMethod = "rfc4733"
    say_text: str | None = None
    say_file: Path | None = None
    voice: str | None = None
    seconds: float = 0.0
    queue: str | None = None
    data: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class Case:
    name: str
    line: int
    steps: list[Step]
    caller: str
    dialled: str
    at: dt.datetime | None
    codec: str
    timeout: float
    http: dict[str, FixtureResponse]
    queue_status: int = 200


@dataclass(slots=True)
class ScenarioFile:
    path: Path
    config: Path | None
    flow: Path | None
    cases: list[Case]

    @property
    def file(self) -> str:
        return str(self.path)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$")


def parse_duration(text: str) -> float:
    """``6s``, ``1.5s``, ``500ms``, ``2m`` (or a bare number of seconds) -> seconds."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 6s, 500ms or 2m")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit in ("m", "min") else value


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (close the quotes)") from None


_STEP_HINT = (
    'write one of: expect prompt NAME, press KEYS, say "TEXT", silence 6s, expect silence 3s, '
    "expect transfer QUEUE with key=value, expect hangup, hangup"
)


def parse_step(text: str, line: int = 0, column: int = 0, base: Path | None = None) -> Step:
    """One step line -> :class:`Step`; raises ``ValueError`` with what to write instead."""
    words = _words(text)
    if not words:
        raise ValueError(f"an empty step; {_STEP_HINT}")
    head = words[0].lower()
    rest = words[1:]
    if head == "press":
        if not rest:
            raise ValueError("press what? write e.g. press 2 or press 12345678#")
        keys = rest[0]
        if not re.fullmatch(r"[0-9*#A-Da-d]+", keys):
            raise ValueError(f"{keys!r} is not a sequence of keys; keys are 0-9, *, # and A-D")
        method: PressMethod = "rfc4733"
        if len(rest) > 1:
            if len(rest) != 3 or rest[1] != "by" or rest[2] not in ("rfc4733", "info", "inband"):
                raise ValueError(
                    f"after the keys write `by rfc4733`, `by info` or `by inband`, not {' '.join(rest[1:])!r}"
                )
            method = rest[2]  # type: ignore[assignment]
        return Step("press", text, line, column, keys=keys.upper(), method=method)
    if head == "say":
        if not rest:
            raise ValueError('say what? write say "billing" or say recordings/billing.wav')
        language = None
        voice = None
        what, options = rest[0], rest[1:]
        while options:
            if len(options) >= 2 and options[0] == "in":
                language, options = options[1], options[2:]
            elif len(options) >= 2 and options[0] == "by" and options[1] in ("espeak", "flite"):
                voice, options = options[1], options[2:]
            else:
                raise ValueError('put the words in quotes, then optionally in LANG and by espeak|flite: '
                                 'say "my account number" in en by flite')  # fmt: skip
        if what.lower().endswith((".wav", ".flac", ".ogg")):
            path = Path(what)
            if base is not None and not path.is_absolute():
                path = base / path
            return Step("say", text, line, column, say_file=path, language=language)
        return Step("say", text, line, column, say_text=what, language=language, voice=voice)
    if head in ("silence", "wait"):
        if len(rest) != 1:
            raise ValueError(f"write {head} 6s (one duration)")
        return Step("silence", text, line, column, seconds=parse_duration(rest[0]))
    if head == "hangup":
        if rest:
            raise ValueError("hangup takes nothing after it")
        return Step("hangup", text, line, column)
    if head != "expect" or not rest:
        raise ValueError(f"unknown step {text!r}; {_STEP_HINT}")
    what = rest[0].lower()
    args = rest[1:]
    if what in ("prompt", "prompts"):
        return _expect_prompt(text, line, column, args)
    if what == "silence":
        if len(args) != 1:
            raise ValueError("write expect silence 3s")
        return Step("expect_silence", text, line, column, seconds=parse_duration(args[0]))
    if what == "hangup":
        seconds = 0.0
        if args:
            if len(args) != 2 or args[0] != "within":
                raise ValueError("write expect hangup, or expect hangup within 10s")
            seconds = parse_duration(args[1])
        return Step("expect_hangup", text, line, column, seconds=seconds)
    if what == "transfer":
        if not args:
            raise ValueError("expect transfer to which queue? write expect transfer billing")
        queue = args[0]
        data: list[tuple[str, str]] = []
        if len(args) > 1:
            if args[1] != "with" or len(args) < 3:
                raise ValueError("write expect transfer billing with account=12345678, language=en")
            pairs = " ".join(args[2:]).split(",")
            for pair in pairs:
                key, sep, value = pair.strip().partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{pair.strip()!r} is not key=value")
                data.append((key.strip(), value.strip()))
        return Step("expect_transfer", text, line, column, queue=queue, data=tuple(data))
    raise ValueError(f"expect what? {what!r} is not something to expect; {_STEP_HINT}")


def _expect_prompt(text: str, line: int, column: int, args: list[str]) -> Step:
    names: list[str] = []
    language = None
    saying = None
    i = 0
    while i < len(args):
        word = args[i]
        if word == "in" and i + 1 < len(args):
            language = args[i + 1]
            i += 2
            continue
        if word == "saying" and i + 1 < len(args):
            saying = args[i + 1]
            i += 2
            continue
        names.extend(n for n in word.split(",") if n)
        i += 1
    if not names:
        raise ValueError("expect which prompt? write expect prompt main-menu")
    return Step("expect_prompt", text, line, column, names=tuple(names), language=language, saying=saying)


def _parse_at(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    text = str(value).strip()
    zone: ZoneInfo | None = None
    parts = text.rsplit(" ", 1)
    if len(parts) == 2 and "/" in parts[1]:
        try:
            zone = ZoneInfo(parts[1])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{parts[1]!r} is not a time zone; write e.g. Europe/Sofia") from None
        text = parts[0]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date and time; write e.g. 2026-11-24 10:00 or 2026-11-24T10:00+02:00"
        ) from None
    if zone is not None:
        when = when.replace(tzinfo=zone)
    return when


def load_scenario(path: Path | str) -> ScenarioFile:
    """Read a scenario file; raises :class:`~ivr.flows.loader.FlowError` listing every problem at file:line:col."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Problem(file, 1, 1, f"cannot read the scenario file: {exc}")]) from None
    data, positions, problems = _parse_yaml(text, file)
    if not isinstance(data, dict):
        raise FlowError(
            [Problem(file, 1, 1, "a scenario file is a mapping", "start with config: or flow:, then cases:")]
        )

    def where(loc: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
        if positions.has(loc):
            return positions.key(loc) if key else positions.value(loc)
        return 1, 1

    def problem(loc: tuple[str | int, ...], message: str, hint: str | None = None, *, key: bool = False) -> None:
        line, column = where(loc, key=key)
        problems.append(Problem(file, line, column, message, hint))

    for key in data:
        if key not in _TOP_KEYS:
            problem((key,), f"unknown key `{key}`", f"the keys are {', '.join(sorted(_TOP_KEYS))}", key=True)
    base = path.parent
    config = _path_or_none(data.get("config"), base)
    flow = _path_or_none(data.get("flow"), base)
    if (config is None) == (flow is None):
        problem((), "name what the scenarios test", "write config: ../ivr.yaml (with dialled:) or flow: main.yaml")
    for name, target in (("config", config), ("flow", flow)):
        if target is not None and not target.is_file():
            problem((name,), f"{target} does not exist", "the path is relative to this scenario file's folder")
    defaults = _inputs(data, (), problem, positions, base)
    cases: list[Case] = []
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        problem(("cases",) if "cases" in data else (), "no cases", "add cases: with - name: and steps:")
        raw_cases = []
    names_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_cases):
        loc: tuple[str | int, ...] = ("cases", i)
        if not isinstance(raw, dict):
            problem(loc, "a case is a mapping", "write - name: ... then steps:")
            continue
        for key in raw:
            if key not in _CASE_KEYS:
                problem((*loc, key), f"unknown key `{key}` in a case", f"the keys are {', '.join(sorted(_CASE_KEYS))}",
                        key=True)  # fmt: skip
        name = str(raw.get("name") or f"case {i + 1}")
        line = where(loc)[0]
        if name in names_seen:
            problem((*loc, "name"), f"two cases named {name!r}", f"the first is on line {names_seen[name]}")
        names_seen[name] = line
        inputs = _inputs(raw, loc, problem, positions, base, defaults)
        steps: list[Step] = []
        raw_steps = raw.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            problem(
                (*loc, "steps") if "steps" in raw else loc, f"case {name!r} has no steps", "add steps: - press 1 ..."
            )
            raw_steps = []
        for j, raw_step in enumerate(raw_steps):
            step_loc = (*loc, "steps", j)
            sline, scol = where(step_loc)
            if not isinstance(raw_step, str):
                problem(step_loc, "a step is one line of text", _STEP_HINT)
                continue
            try:
                steps.append(parse_step(raw_step, sline, scol, base))
            except ValueError as exc:
                problem(step_loc, str(exc))
        cases.append(
            Case(
                name=name,
                line=line,
                steps=steps,
                caller=inputs["caller"],
                dialled=inputs["dialled"],
                at=inputs["at"],
                codec=inputs["codec"],
                timeout=inputs["timeout"],
                http=inputs["http"],
                queue_status=inputs["queue_status"],
            )
        )
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise FlowError(problems)
    return ScenarioFile(path, config, flow, cases)


def _path_or_none(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def _inputs(
    data: dict[str, Any],
    loc: tuple[str | int, ...],
    problem: Any,
    positions: Positions,
    base: Path,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = dict(defaults) if defaults else {
        "caller": "0888123456", "dialled": "2000", "at": None, "codec": "PCMU", "timeout": DEFAULT_TIMEOUT,
        "http": {}, "queue_status": 200,
    }  # fmt: skip
    for key in ("caller", "dialled"):
        if key in data and data[key] is not None:
            out[key] = str(data[key])
    if "codec" in data:
        codec = str(data["codec"]).upper()
        if codec not in ("PCMU", "PCMA"):
            problem((*loc, "codec"), f"codec {data['codec']!r} is not offered by the simulator", "write PCMU or PCMA")
        out["codec"] = codec
    if "at" in data:
        try:
            out["at"] = _parse_at(data["at"])
        except ValueError as exc:
            problem((*loc, "at"), str(exc))
    if "queue_status" in data:
        status = data["queue_status"]
        if not isinstance(status, int) or not (200 <= status <= 299 or 400 <= status <= 699):
            problem((*loc, "queue_status"), f"queue_status {status!r} is not a SIP final status",
                    "write 200 (queues answer) or e.g. 486 (busy), 480 (unavailable)")  # fmt: skip
        else:
            out["queue_status"] = status
    if "timeout" in data:
        try:
            out["timeout"] = parse_duration(str(data["timeout"]))
        except ValueError as exc:
            problem((*loc, "timeout"), str(exc))
    if "http" in data:
        raw = data["http"]
        if not isinstance(raw, dict):
            problem(
                (*loc, "http"), "http: maps 'METHOD URL' to an answer", "write GET https://crm/x/{id}: {json: {...}}"
            )
        else:
            fixtures = dict(out["http"])
            for key, value in raw.items():
                try:
                    fixtures[str(key)] = FixtureResponse.of(value if isinstance(value, dict) else {"json": value})
                except (TypeError, ValueError) as exc:
                    problem((*loc, "http", key), f"bad HTTP answer: {exc}", "write {status: 200, json: {...}}")
            out["http"] = fixtures
    return out
