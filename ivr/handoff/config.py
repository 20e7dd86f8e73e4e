"""Queue endpoints: ``configs/queues.yaml`` validated into typed models, with errors that point at file:line.

A flow names a queue (``queue: billing``); only the queues written here can ever be called, so neither a flow nor a
caller can make the daemon dial an arbitrary number (toll fraud). Each queue says where it is (a SIP URI), how the
call gets there (``refer``, ``bridge``, or ``refer-then-bridge``: REFER first, bridge when the caller's phone cannot
be transferred), what data goes with it (SIP headers, User-to-User, an HTTP POST to the ACD) and how long to wait.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ivr.flows.model import DurationError, parse_duration
from ivr.sip.errors import SipError
from ivr.sip.uri import SipURI

__all__ = [
    "HttpPostSettings",
    "QueueConfigError",
    "QueueEndpoint",
    "QueueTable",
    "UuiSettings",
    "load_queues",
    "load_queues_text",
]

HandoffMethod = Literal["refer", "bridge", "refer-then-bridge"]

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!%*_+`'~.-]+$")  # RFC 3261 25.1 token
_DATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Headers a queue must never set: the dialog, routing and body framing are ours (and User-to-User comes from `uui`).
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Route", "Record-Route", "Max-Forwards", "Content-Length",
        "Content-Type", "Refer-To", "Referred-By", "User-to-User", "Event", "Subscription-State", "Require",
        "Proxy-Require", "Authorization", "Proxy-Authorization", "Allow", "Supported",
    )
)  # fmt: skip


class QueueConfigError(Exception):
    """A queue configuration problem, already phrased for the person who edits the file (file:line: ...)."""


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 10s or 1500ms")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise ValueError(f"{exc.message}; {exc.hint}") from None
    if seconds <= 0:
        raise ValueError(f"{value!r} is not longer than zero")
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UuiSettings(_Model):
    """RFC 7433 User-to-User: ``key=value&...`` of the chosen data keys, hex-encoded, with ``encoding=hex``."""

    enabled: bool = True
    keys: tuple[str, ...] | None = Field(None, description="data keys to carry, in order (default: every key)")
    max_bytes: int = Field(128, ge=1, le=4096, description="limit of the unencoded data (ISDN interworking: 128)")
    purpose: str | None = Field(None, description="the purpose= parameter, e.g. isdn-interwork (default: none)")

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for key in value or ():
            if not _DATA_KEY.match(key):
                raise ValueError(f"{key!r} is not a data key name (letters, digits, _)")
        return value

    @field_validator("purpose")
    @classmethod
    def _check_purpose(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a token; write e.g. isdn-interwork")
        return value


class HttpPostSettings(_Model):
    """POST the full JSON context to the ACD before the transfer (so the agent's screen is ready on answer)."""

    url: str = Field(description="http:// or https:// URL of the ACD's context endpoint")
    timeout: float = Field(2.0, description="each attempt, e.g. 2s")
    retries: int = Field(1, ge=0, le=5, description="further attempts after a failed one")
    required: bool = Field(False, description="true: no transfer when the ACD did not take the context")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. Authorization)")

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: write an http:// or https:// URL")
        return value


class QueueEndpoint(_Model):
    """One queue endpoint: the ACD queue a flow may hand a call to."""

    name: str = Field("", description="filled in from the mapping key")
    uri: str = Field(description="sip:billing@acd.example.com:5060 (sip: or sips:, no URI headers)")
    method: HandoffMethod = Field("refer", description="refer | bridge | refer-then-bridge")
    headers: dict[str, str] | None = Field(
        None, description="SIP header name -> data key (default: X-IVR-<Key> for every data key)"
    )
    header_prefix: str = Field("X-IVR-", description="prefix of the default header names")
    uui: UuiSettings = Field(default_factory=UuiSettings)
    http: HttpPostSettings | None = None
    refer_headers: bool = Field(
        True,
        description="REFER: embed the data in Refer-To as URI headers (false for transferees that mishandle them: "
        "baresip 1.0.0 copies them into its Request-URI)",
    )
    refer_timeout: float = Field(15.0, description="REFER: wait this long for the final NOTIFY (e.g. 15s)")
    answer_timeout: float = Field(30.0, description="bridge: ring the queue this long before giving up")
    wait_prompt: str | None = Field(
        None, description="bridge: audio the caller hears while the queue rings (default: a ringback tone)"
    )
    from_user: str | None = Field(None, description="bridge: the user part of our From (default: the caller's number)")

    @field_validator("refer_timeout", "answer_timeout", mode="before")
    @classmethod
    def _check_durations(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        try:
            uri = SipURI.parse(value)
        except SipError as exc:
            raise ValueError(f"{exc.reason}; write e.g. sip:billing@10.0.0.5:5060") from None
        if uri.headers:
            raise ValueError("a queue URI carries no ?headers: attached data is configured under headers: and uui:")
        if uri.password is not None:
            raise ValueError("a queue URI must not carry a password")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, key in (value or {}).items():
            _check_header_name(name)
            if not _DATA_KEY.match(key):
                raise ValueError(f"header {name}: {key!r} is not a data key name (letters, digits, _)")
        return value

    @field_validator("header_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not the start of a header name; write e.g. X-IVR-")
        return value

    @property
    def sip_uri(self) -> SipURI:
        return SipURI.parse(self.uri)

    def header_for(self, key: str) -> str | None:
        """The SIP header that carries data ``key`` (None: the key travels in no header)."""
        if self.headers is None:
            return self.header_prefix + "-".join(part.capitalize() for part in key.split("_"))
        return next((name for name, data_key in self.headers.items() if data_key == key), None)


def _check_header_name(name: str) -> None:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a SIP header name (RFC 3261 token)")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{name} is a header the SIP stack sets itself; choose another name, e.g. X-IVR-{name}")


class _QueuesFile(_Model):
    queues: dict[str, QueueEndpoint] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("queues"), dict):
            named: dict[str, Any] = {}
            for name, queue in data["queues"].items():
                if not isinstance(name, str) or not _DATA_KEY.match(name.replace("-", "_")):
                    raise ValueError(f"queue name {name!r}: use letters, digits, - and _")
                named[name] = {**queue, "name": name} if isinstance(queue, dict) else queue
            data = {**data, "queues": named}
        return data


class QueueTable:
    """The configured queues by name. ``get`` answers None for a name that is not configured."""

    def __init__(self, queues: dict[str, QueueEndpoint], source: Path | None = None) -> None:
        self._queues = dict(queues)
        self.source = source

    def get(self, name: str) -> QueueEndpoint | None:
        return self._queues.get(name)

    @property
    def names(self) -> set[str]:
        return set(self._queues)

    def __contains__(self, name: object) -> bool:
        return name in self._queues

    def __len__(self) -> int:
        return len(self._queues)

    def __iter__(self) -> Any:
        return iter(self._queues.values())


def load_queues(path: Path) -> QueueTable:
    """Read and validate a queues file. Raises :class:`QueueConfigError` naming file:line and the setting."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise QueueConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return load_queues_text(text, path)


def load_queues_text(text: str, path: Path | str = "<queues>") -> QueueTable:
    from ivr.config import line_of, plain, yaml_mapping

    data = yaml_mapping(text, path, QueueConfigError, "with queues:")
    try:
        parsed = _QueuesFile.model_validate(plain(data))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = line_of(data, loc)
            where = f"{path}:{line}" if line is not None else str(path)
            key = ".".join(str(p) for p in loc)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown setting (check the spelling; see configs/queues.yaml for every setting)"
            lines.append(f"{where}: {key}: {message}")
        raise QueueConfigError("\n".join(lines)) from None
    return QueueTable(parsed.queues, Path(path))
