"""The flow language as typed models: what ops write in a flow file, validated and exported as JSON Schema.

A flow file is YAML::

    name: main-line
    languages: [bg, en]
    language: bg                 # the caller's language until a `language` node changes it
    fallback: bg                 # used when a prompt is missing in the caller's language
    start: hours-check
    prompts: {...}
    calendars: {...}
    nodes:
      hours-check: {type: hours, calendar: office, open: choose-language, closed: closed}
      ...

Everything here is shape and single-field rules; rules across fields and nodes (targets, reachability, prompts per
language, timers) live in :mod:`ivr.flows.checks` so each problem can point at the exact line.
Durations are text with a unit (``5s``, ``1500ms``, ``2m``) and are held as float seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ivr.flows.calendar import Calendar, TimeZoneName, parse_days, parse_range
from ivr.flows.templates import syntax_problem

__all__ = [
    "CHECKSUMS",
    "NODE_KINDS",
    "BranchCase",
    "BranchNode",
    "CollectNode",
    "ConfirmSpec",
    "DurationError",
    "Edge",
    "Flow",
    "GotoNode",
    "HangupNode",
    "HoursNode",
    "HttpNode",
    "LanguageNode",
    "MenuNode",
    "MenuOption",
    "Node",
    "PauseItem",
    "PlayNode",
    "PromptFile",
    "PromptItem",
    "PromptRef",
    "PromptText",
    "QueueNode",
    "RecordNode",
    "Retry",
    "ReturnNode",
    "SayItem",
    "SetNode",
    "SubflowNode",
    "ValueTest",
    "parse_duration",
]

# ---- small types ------------------------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_FULL_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT: Final = "write 5s or 1500ms"


class DurationError(ValueError):
    """Not a duration; ``hint`` says what to write instead."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.message = message
        self.hint = hint


def parse_duration(value: object) -> float:
    """``"5s"`` -> 5.0, ``"1500ms"`` -> 1.5, ``"1m30s"`` -> 90.0. Raises :class:`DurationError` naming what to write."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError(f"{value!r} is not a duration", DURATION_HINT)
    if isinstance(value, (int, float)):
        raise DurationError(
            f"{value:g} has no unit", f"write {value:g}s for seconds or {value * 1000:g}ms for milliseconds"
        )
    text = value.strip().replace(" ", "")
    if not _DURATION_FULL_RE.fullmatch(text):
        raise DurationError(f"{value!r} is not a duration", DURATION_HINT)
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_RE.findall(text))


def _duration(value: Any, info: ValidationInfo) -> Any:
    from_file = isinstance(info.context, dict) and info.context.get("from_file", False)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not from_file:
        return float(value)  # built in code or re-validated from a dump: seconds
    try:
        seconds = parse_duration(value)
    except DurationError as exc:
        raise PydanticCustomError("duration", "{message}", {"message": exc.message, "hint": exc.hint}) from None
    if seconds <= 0:
        raise PydanticCustomError(
            "duration", "{value} is not longer than zero", {"value": repr(value), "hint": DURATION_HINT}
        )
    if seconds > 24 * 3600:
        raise PydanticCustomError("duration", "{value} is longer than a day", {"value": repr(value)})
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(_duration, json_schema_input_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h)\s*)+$",
            "description": "a duration with a unit: 5s, 1500ms, 2m, 1m30s",
            "examples": ["5s", "1500ms"],
        }
    ),
]

DTMF_KEYS: Final = "0123456789*#ABCD"


def _dtmf_key(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return str(value)
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in DTMF_KEYS:
        return value.strip().upper()
    if value is None:
        raise PydanticCustomError(
            "dtmf_key", "no key given", {"hint": 'write the key in quotes: "#" or "*" (a bare # starts a comment)'}
        )
    raise PydanticCustomError(
        "dtmf_key", "{value} is not a phone key", {"value": repr(value), "hint": 'write one of 0-9, "*", "#" (or A-D)'}
    )


DtmfKey = Annotated[
    str,
    BeforeValidator(_dtmf_key),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[0-9*#A-Da-d]$"},
                {"type": "integer", "minimum": 0, "maximum": 9},
            ],
            "description": 'one phone key: "0"-"9", "*", "#" (quote * and #)',
        }
    ),
]

NodeId = Annotated[str, Field(pattern=r"^[\w][\w.-]*$", max_length=80)]
VarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Lang = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
PromptName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
Scalar = str | int | float | bool | None


def _template(value: Any) -> Any:
    if isinstance(value, str):
        problem = syntax_problem(value)
        if problem is not None:
            raise PydanticCustomError(
                "template", "{problem}", {"problem": problem, "hint": "templates look like {{ account }}"}
            )
    return value


def _expression(value: Any) -> Any:
    if isinstance(value, str):
        problem = syntax_problem(value, expression=True)
        if problem is not None:
            raise PydanticCustomError(
                "expression", "{problem}", {"problem": problem, "hint": "write e.g. tries < 3 and vip == 'yes'"}
            )
    return value


Template = Annotated[str, BeforeValidator(_template)]
"""Text that may hold ``{{ ... }}`` (see :mod:`ivr.flows.templates`)."""
Expression = Annotated[str, BeforeValidator(_expression)]


def _number_text(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise PydanticCustomError(
            "number_text",
            "{value} was read as a number, which loses a leading 0 or +",
            {"value": value, "hint": 'write phone numbers in quotes: "+359888123456" or "0888*"'},
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_by_name=True, validate_by_alias=True
    )


# ---- prompts ----------------------------------------------------------------------------------------------------


class PromptFile(_Model):
    """A recording for one language at a path of your choice (relative to the flow file)."""

    file: str = Field(min_length=1)
    """WAV, FLAC or OGG file, relative to the flow file's folder."""


class PromptText(_Model):
    """Text synthesised once at load, with an explicit espeak-ng voice."""

    text: str = Field(min_length=1)
    voice: str | None = None
    """espeak-ng voice, e.g. en-gb or bg (default: the language code)."""


def _prompt_variant(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        if "file" in value:
            return "file"
        if "text" in value:
            return "spec"
    return None


PromptVariant = Annotated[
    Annotated[str, Tag("text"), Field(min_length=1)]
    | Annotated[PromptFile, Tag("file")]
    | Annotated[PromptText, Tag("spec")],
    Discriminator(
        _prompt_variant,
        custom_error_type="prompt_variant",
        custom_error_message="a prompt in one language is text, {file: path} or {text: ..., voice: ...}",
    ),
]
PromptDef = dict[Lang, PromptVariant]
"""Language -> text to synthesise, or a file. An empty definition means: recordings at prompts/<lang>/<name>.wav."""


class SayItem(_Model):
    """Speak a value: a number, digits, an amount of money or a date, in the caller's language."""

    say: Template
    """The value, usually a template: "{{ account }}"."""
    as_: Literal["number", "digits", "amount", "date", "ordinal"] = Field("number", alias="as")
    """How to speak it."""
    gender: Literal["m", "f", "n"] | None = None
    """Bulgarian gender of what is counted (един/една/едно); default: neuter for numbers, masculine for ordinals."""
    currency: Literal["BGN", "EUR"] = "EUR"
    """For amounts: EUR (euro, cent) or BGN (лев, стотинка)."""


class PromptRef(_Model):
    """A prompt played in a fixed language whatever the caller's language ("For English, press 2")."""

    prompt: PromptName
    language: Lang


class PauseItem(_Model):
    """Silence between prompts."""

    pause: Duration


def _prompt_item_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict):
        if "say" in value:
            return "say"
        if "pause" in value:
            return "pause"
        if "prompt" in value:
            return "ref"
    return None


PromptItem = Annotated[
    Annotated[PromptName, Tag("name")]
    | Annotated[PromptRef, Tag("ref")]
    | Annotated[SayItem, Tag("say")]
    | Annotated[PauseItem, Tag("pause")],
    Discriminator(
        _prompt_item_kind,
        custom_error_type="prompt_item",
        custom_error_message="a prompt item is a prompt name, {prompt: name, language: en}, {say: ..., as: ...} "
        "or {pause: 500ms}",
    ),
]


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


Prompts = Annotated[
    Annotated[PromptItem, Tag("one")] | Annotated[list[PromptItem], Tag("many"), Field(min_length=1)],
    Discriminator(_one_or_many),
]
"""One prompt item or a list of them, played in order."""


def prompt_items(value: Any) -> tuple[PromptItem, ...]:
    """A ``Prompts`` field's value as a tuple (``None`` -> empty)."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


# ---- edges ------------------------------------------------------------------------------------------------------

EdgeKind = Literal["next", "option", "no_input", "no_match", "failure", "open", "closed", "holiday", "case", "else"]


@dataclass(frozen=True, slots=True)
class Edge:
    """A way out of a node: where to, why, and where in the node it is written (``loc``, relative to the node)."""

    target: str
    kind: EdgeKind
    label: str
    loc: tuple[str | int, ...]


# ---- nodes ------------------------------------------------------------------------------------------------------


class _Node(_Model):
    note: str | None = None
    """Free text for people (shown in `ivr graph`)."""

    def edges(self) -> Iterator[Edge]:
        next_ = getattr(self, "next", None)
        if isinstance(next_, str):
            yield Edge(next_, "next", "", ("next",))
        failure = getattr(self, "failure", None)
        if isinstance(failure, str):
            yield Edge(failure, "failure", "failure", ("failure",))

    def prompt_fields(self) -> Iterator[tuple[tuple[str | int, ...], tuple[PromptItem, ...]]]:
        """Every prompt list in the node, with its location relative to the node."""
        for name in ("prompt", "retry_prompt"):
            value = getattr(self, name, None)
            if value is not None:
                yield (name,), prompt_items(value)

    @property
    def takes_input(self) -> bool:
        """True when the node waits for the caller (a loop through it is not endless)."""
        return False


class PlayNode(_Node):
    """Play one or more prompts, then go on."""

    type: Literal["play"]
    prompt: Prompts
    barge_in: bool = False
    """A key pressed during the prompt stops it (and is kept for the next menu or collect)."""
    next: NodeId


class Retry(_Model):
    """What happens on no input or on a wrong input: a prompt, a number of tries, and where to go after the last."""

    prompt: Prompts | None = None
    """Played before asking again (e.g. "Sorry, I did not get that")."""
    tries: int = Field(3, ge=1, le=10)
    """How many of these failures the caller may have; counted apart from the other kind."""
    next: NodeId | None = None
    """Where to go after the last try (default: the node's `failure`)."""


class MenuOption(_Model):
    """A choice in a menu: a key, spoken words per language, or both."""

    key: DtmfKey | None = None
    words: dict[Lang, list[Annotated[str, Field(min_length=1)]]] = Field(default_factory=dict)
    """Spoken keywords per language: {en: [billing, invoice], bg: [сметки, фактура]}."""
    next: NodeId

    @model_validator(mode="after")
    def _key_or_words(self) -> MenuOption:
        if self.key is None and not any(self.words.values()):
            raise PydanticCustomError(
                "option", "an option needs a key or words", {"hint": 'add key: "1" or words: {en: [billing]}'}
            )
        return self

    @property
    def label(self) -> str:
        parts = [self.key] if self.key is not None else []
        for lang, words in self.words.items():
            if words:
                parts.append(f"{lang}: {', '.join(words)}")
        return " | ".join(parts)


class _InputNode(_Node):
    prompt: Prompts
    """Played first (FreeSWITCH greet-long)."""
    retry_prompt: Prompts | None = None
    """Played instead of `prompt` when asking again (greet-short); default: `prompt`."""
    barge_in: bool = True
    """A key pressed during a prompt stops it and counts as input."""
    no_input: Retry = Field(default_factory=Retry)
    """The caller pressed or said nothing in time."""
    no_match: Retry = Field(default_factory=Retry)
    """The caller gave an input that is not an option (or not a valid entry)."""
    failure: NodeId | None = None
    """Where to go after the last no-input or no-match try (unless that `Retry` names its own `next`)."""

    @property
    def takes_input(self) -> bool:
        return True

    def edges(self) -> Iterator[Edge]:
        yield from super().edges()
        if self.no_input.next is not None:
            yield Edge(self.no_input.next, "no_input", "no input", ("no_input", "next"))
        if self.no_match.next is not None:
            yield Edge(self.no_match.next, "no_match", "no match", ("no_match", "next"))

    def prompt_fields(self) -> Iterator[tuple[tuple[str | int, ...], tuple[PromptItem, ...]]]:
        yield from super().prompt_fields()
        for name in ("no_input", "no_match"):
            retry: Retry = getattr(self, name)
            if retry.prompt is not None:
                yield (name, "prompt"), prompt_items(retry.prompt)


class MenuNode(_InputNode):
    """Offer choices by key (DTMF) or spoken word; counts no-input and no-match apart."""

    type: Literal["menu"]
    options: list[MenuOption] = Field(min_length=1)
    timeout: Duration = 5.0
    """How long to wait for a choice after the prompt ends."""

    def edges(self) -> Iterator[Edge]:
        for i, option in enumerate(self.options):
            yield Edge(option.next, "option", option.label, ("options", i, "next"))
        yield from super().edges()


class ConfirmSpec(_Model):
    """Read the entry back and ask the caller to confirm it."""

    prompt: Prompts
    """E.g. [you-entered, {say: "{{ account }}", as: digits}, press-1-or-2]."""
    yes: DtmfKey = "1"
    no: DtmfKey = "2"
    timeout: Duration = 5.0
    """How long to wait for yes/no; no answer counts as no."""


CHECKSUMS: Final = ("luhn", "egn", "bulstat")


class CollectNode(_InputNode):
    """Collect digits from the keypad into a variable."""

    type: Literal["collect"]
    into: VarName
    """Variable that receives the digits."""
    min_digits: int = Field(1, ge=1, le=64)
    max_digits: int = Field(20, ge=1, le=64)
    """The entry ends by itself when this many digits are in."""
    allowed: str = "0123456789"
    """Keys that count as part of the entry."""
    terminator: DtmfKey | None = "#"
    """Key that ends the entry early (null: none)."""
    first_digit: Duration = 5.0
    """From the end of the prompt to the first digit."""
    inter_digit: Duration = 3.0
    """From each digit to the next; when it passes, the entry is complete."""
    total: Duration | None = None
    """A cap on the whole entry from the end of the prompt (null: none); see docs/flows.md for how inter_digit
    overrides it."""
    pattern: str | None = None
    """A regular expression the whole entry must match."""
    check: Literal["luhn", "egn", "bulstat"] | None = None
    """A checksum the entry must pass: luhn (cards), egn (Bulgarian personal number), bulstat (company number)."""
    confirm: ConfirmSpec | None = None
    sensitive: bool = False
    """Mask the digits in logs and traces."""
    next: NodeId

    @field_validator("allowed", mode="before")
    @classmethod
    def _allowed_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise PydanticCustomError(
                "allowed", "{value} was read as a number", {"value": value, "hint": 'write it in quotes: "0123456789"'}
            )
        if isinstance(value, str):
            bad = sorted({ch for ch in value.upper() if ch not in DTMF_KEYS})
            if bad or not value:
                raise PydanticCustomError(
                    "allowed",
                    "{value} holds characters that are not phone keys",
                    {"value": repr(value), "hint": "use 0-9, *, #, A-D"},
                )
            return value.upper()
        return value

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise PydanticCustomError(
                    "pattern", "bad regular expression: {error}", {"error": str(exc), "hint": r"write e.g. ^08\d{8}$"}
                ) from None
        return value

    def prompt_fields(self) -> Iterator[tuple[tuple[str | int, ...], tuple[PromptItem, ...]]]:
        yield from super().prompt_fields()
        if self.confirm is not None:
            yield ("confirm", "prompt"), prompt_items(self.confirm.prompt)


def _match_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "glob"
    if isinstance(value, list):
        return "any"
    if isinstance(value, dict):
        return "test"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    if isinstance(value, bool):
        return "bool"
    return None


class ValueTest(_Model):
    """A test on a value; every test given must hold."""

    equals: Scalar = None
    not_: str | list[str] | None = Field(None, alias="not")
    """Glob pattern(s) the value must NOT match."""
    regex: str | None = None
    """A regular expression the value must contain a match of (use ^...$ for the whole value)."""
    empty: bool | None = None
    """true: the value is missing or empty; false: it is set and not empty."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise PydanticCustomError("regex", "bad regular expression: {error}", {"error": str(exc)}) from None
        return value


Match = Annotated[
    Annotated[str, Tag("glob")]
    | Annotated[list[str], Tag("any")]
    | Annotated[ValueTest, Tag("test")]
    | Annotated[float, Tag("number")]
    | Annotated[bool, Tag("bool")],
    Discriminator(
        _match_kind,
        custom_error_type="match",
        custom_error_message='a condition is a pattern ("+3592*"), a list of patterns, or {regex: ..., gt: ...}',
    ),
]
"""A glob pattern ("+3592*", ? = one character), a list of them (any), a number, true/false, or a test."""

NumberMatch = Annotated[Match, BeforeValidator(_number_text)]


class BranchCase(_Model):
    """One case of a branch: every condition given must hold."""

    caller: NumberMatch | None = None
    """The caller's number (From user part)."""
    dialled: NumberMatch | None = None
    """The number the caller dialled."""
    vars: dict[VarName, Match] | None = None
    """Flow variables: {language: bg, tries: {lt: 3}}."""
    language: Lang | list[Lang] | None = None
    """The call's current language."""
    days: str | None = None
    """Days of the week: mon-fri, sat,sun, weekend."""
    time: str | None = None
    """Time of day: 18:00-22:00 (past midnight: 22:00-06:00)."""
    timezone: TimeZoneName | None = None
    """Zone for days/time (default: the flow's timezone)."""
    expr: Expression | None = None
    """A template expression that must be true: "tries|int < 3 and vip == 'yes'"."""
    next: NodeId

    @field_validator("days")
    @classmethod
    def _days(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_days(value)
            except ValueError as exc:
                raise PydanticCustomError("days", str(exc)) from None
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_range(value)
            except ValueError as exc:
                raise PydanticCustomError("time", str(exc)) from None
        return value

    @model_validator(mode="after")
    def _some_condition(self) -> BranchCase:
        conditions = (self.caller, self.dialled, self.vars, self.language, self.days, self.time, self.expr)
        if all(c is None for c in conditions):
            raise PydanticCustomError(
                "case",
                "a case without a condition always matches",
                {"hint": "add caller:, dialled:, vars:, language:, days:, time: or expr:, or use the branch's else:"},
            )
        return self

    @property
    def label(self) -> str:
        parts: list[str] = []
        for name in ("caller", "dialled", "language", "days", "time", "expr"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {_short(value)}")
        for var, test in (self.vars or {}).items():
            parts.append(f"{var} {_short(test)}")
        return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, BaseModel):
        return " ".join(f"{k} {v}" for k, v in value.model_dump(by_alias=True, exclude_none=True).items())
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return str(value)


class BranchNode(_Node):
    """Go one way or another on the caller's number, the dialled number, variables or the time."""

    type: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1)
    """Tried in order; the first whose conditions all hold wins."""
    else_: NodeId = Field(alias="else")
    """Where to go when no case holds."""

    def edges(self) -> Iterator[Edge]:
        for i, case in enumerate(self.cases):
            yield Edge(case.next, "case", case.label, ("cases", i, "next"))
        yield Edge(self.else_, "else", "else", ("else",))


class SetNode(_Node):
    """Set variables (values may be templates)."""

    type: Literal["set"]
    vars: dict[VarName, Template | int | float | bool | None] = Field(min_length=1)
    next: NodeId


class HoursNode(_Node):
    """Open or closed, by a named calendar (weekly hours, public holidays, dated overrides)."""

    type: Literal["hours"]
    calendar: str = Field(min_length=1)
    open: NodeId
    closed: NodeId
    holiday: NodeId | None = None
    """Where to go when closed because of a public holiday or a closed override (default: `closed`)."""

    def edges(self) -> Iterator[Edge]:
        yield Edge(self.open, "open", "open", ("open",))
        yield Edge(self.closed, "closed", "closed", ("closed",))
        if self.holiday is not None:
            yield Edge(self.holiday, "holiday", "holiday", ("holiday",))


class LanguageNode(_Node):
    """Switch the call's language (prompts, keywords, spoken numbers)."""

    type: Literal["language"]
    language: Lang
    next: NodeId


class HttpNode(_Node):
    """Look something up over HTTP; map the JSON answer to variables."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT"] = "GET"
    url: Template = Field(pattern=r"^https?://")
    headers: dict[str, Template] = Field(default_factory=dict)
    query: dict[str, Template] = Field(default_factory=dict)
    json_: dict[str, Any] | None = Field(None, alias="json")
    """Request body (POST/PUT); text values are templates."""
    timeout: Duration = 3.0
    map: dict[VarName, str] = Field(default_factory=dict)
    """Variable <- dotted path in the JSON answer: {name: customer.name, first_id: items.0.id}."""
    next: NodeId
    failure: NodeId
    """Where to go on timeout, a connection error, a non-2xx status or an answer that lacks a mapped path."""

    @field_validator("map")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for var, path in value.items():
            if not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", path):
                raise PydanticCustomError(
                    "json_path",
                    "{var}: {path} is not a dotted path",
                    {"var": var, "path": repr(path), "hint": "write e.g. customer.name"},
                )
        return value


class QueueNode(_Node):
    """Hand the call to a named queue endpoint with data attached (the call leaves the flow)."""

    type: Literal["queue"]
    queue: str = Field(min_length=1)
    data: dict[str, Template | int | float | bool | None] = Field(default_factory=dict)
    """Attached to the handoff: {account: "{{ account }}", language: "{{ language }}"}."""
    prompt: Prompts | None = None
    """Played before the handoff ("Connecting you to an agent")."""
    failure: NodeId | None = None
    """Where to go when the handoff fails (default: a goodbye and hang-up)."""


class RecordNode(_Node):
    """Record a message after an optional beep."""

    type: Literal["record"]
    prompt: Prompts | None = None
    beep: bool = True
    max_length: Duration = 120.0
    silence: Duration | None = 5.0
    """End after this much silence (null: only max_length or the terminator end it)."""
    terminator: DtmfKey | None = "#"
    into: VarName = "recording"
    """Variable that receives the recording's name."""
    next: NodeId


class GotoNode(_Node):
    """Go to another flow file for good (it does not come back)."""

    type: Literal["goto"]
    flow: str = Field(min_length=1)
    """Path of the other flow, relative to this file."""
    node: NodeId | None = None
    """Node to start at in that flow (default: its start)."""


class SubflowNode(_Node):
    """Run another flow file and come back here when it reaches a `return` node."""

    type: Literal["subflow"]
    flow: str = Field(min_length=1)
    """Path of the subflow, relative to this file. It shares the call's variables."""
    next: NodeId
    """Where to continue when the subflow returns."""

    @property
    def takes_input(self) -> bool:
        return True  # the subflow may wait for the caller; its own loops are checked in its own file


class ReturnNode(_Node):
    """End a subflow: go back to the flow that called it."""

    type: Literal["return"]


class HangupNode(_Node):
    """Say goodbye and hang up."""

    type: Literal["hangup"]
    prompt: Prompts | None = None


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectNode
    | BranchNode
    | SetNode
    | HoursNode
    | LanguageNode
    | HttpNode
    | QueueNode
    | RecordNode
    | GotoNode
    | SubflowNode
    | ReturnNode
    | HangupNode,
    Field(discriminator="type"),
]
NODE_KINDS: Final = (
    "play", "menu", "collect", "branch", "set", "hours", "language", "http", "queue", "record", "goto", "subflow",
    "return", "hangup",
)  # fmt: skip


# ---- the flow ---------------------------------------------------------------------------------------------------


class Flow(_Model):
    """A flow file."""

    name: str = Field(min_length=1, max_length=100)
    """What ops call this flow (shown in traces and CDRs)."""
    description: str | None = None
    languages: list[Lang] = Field(min_length=1)
    """Every language the flow speaks, e.g. [bg, en]."""
    language: Lang
    """The caller's language until a `language` node switches it."""
    fallback: Lang | None = None
    """Language used when a prompt is missing in the caller's language (default: `language`)."""
    voices: dict[Lang, str] = Field(default_factory=dict)
    """espeak-ng voice per language for text prompts (default: the language code): {en: en-gb}."""
    timezone: TimeZoneName = "Europe/Sofia"
    """Zone for time conditions in branches and for spoken dates."""
    start: NodeId
    """The node a call starts at."""
    variables: dict[VarName, Scalar] = Field(default_factory=dict)
    """Variables every call starts with."""
    prompts: dict[PromptName, PromptDef | None] = Field(default_factory=dict)
    """Prompt name -> text or file per language. Empty: recordings at prompts/<lang>/<name>.wav."""
    calendars: dict[Annotated[str, Field(pattern=r"^[\w][\w.-]*$")], Calendar] = Field(default_factory=dict)
    """Calendars defined in this file (the daemon may provide more)."""
    nodes: dict[NodeId, Node] = Field(min_length=1)

    @property
    def fallback_language(self) -> str:
        return self.fallback if self.fallback is not None else self.language

    def voice(self, language: str) -> str:
        return self.voices.get(language, language)
