"""Daemon configuration: ``configs/ivr.yaml`` validated into typed models, with errors that point at file:line.

Every setting has an embedded default, so ``ivr serve`` with no file at all runs the example configuration.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from ivr.speech.config import SpeechSettings

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(Exception):
    """A configuration problem, already phrased for the person who edits the file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SipSettings(_Model):
    listen: str = Field("127.0.0.1:5060", description="host:port for SIP over UDP and TCP")
    transports: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    advertised_host: str | None = Field(None, description="address written into Via/Contact (default: listen host)")
    user_agent: str = "ivr"
    t1: float = Field(0.5, gt=0, description="RFC 3261 T1 in seconds")
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, gt=0)
    # SIP over TCP, in the style of Kamailio's tcp_* settings (each connection is an attacker's cheapest lever).
    tcp_max_connections: int = Field(
        2048,
        ge=1,
        description="TCP connections accepted and open at once, in all (Kamailio tcp_max_connections); "
        "one more is accepted and closed at once, counted and logged once per source a minute",
    )
    tcp_max_connections_per_source: int = Field(
        256, ge=1, description="TCP connections open at once from one address; beyond: closed at once, as above"
    )
    tcp_message_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a SIP message may take to arrive whole over TCP from its first byte (headers and "
        "body: slowloris; Kamailio tcp_msg_read_timeout), and a new connection to bring its first message",
    )
    tcp_connection_lifetime: float = Field(
        3605.0,
        gt=0,
        description="a TCP connection with no message either way (nor a CRLF keep-alive) for this many seconds is "
        "closed (Kamailio tcp_connection_lifetime). Keep it above calls.max_call_seconds when callers or trunks "
        "hold calls on one connection without keep-alives: our BYE goes on that connection",
    )
    tcp_write_queue_max: int = Field(
        65536,
        ge=1024,
        description="bytes waiting to be sent on one TCP connection beyond what the kernel took (Kamailio "
        "tcp_conn_wq_max); above it the peer is not reading and the connection is closed",
    )
    session_expires: int = Field(
        1800,
        ge=0,
        description="RFC 4028 session timer, seconds: the interval asked for on calls placed, and applied (we "
        "refresh) to callers that support timers without asking; a call not refreshed in time ends with BYE "
        "(record reason session_expired). 0: off (no timer negotiated, 'timer' not supported)",
    )
    min_se: int = Field(
        90, ge=90, description="RFC 4028 Min-SE, seconds: a Session-Expires below it gets 422 (90: the RFC minimum)"
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @model_validator(mode="after")
    def _check_tcp_limits(self) -> SipSettings:
        if self.tcp_max_connections_per_source > self.tcp_max_connections:
            raise ValueError(
                f"tcp_max_connections_per_source ({self.tcp_max_connections_per_source}) is more than "
                f"tcp_max_connections ({self.tcp_max_connections}); lower it, or raise tcp_max_connections"
            )
        if 0 < self.session_expires < self.min_se:
            raise ValueError(
                f"session_expires ({self.session_expires} s) is below min_se ({self.min_se} s); raise it, or 0 for off"
            )
        if self.tcp_connection_lifetime < self.tcp_message_timeout:
            raise ValueError(
                f"tcp_connection_lifetime ({self.tcp_connection_lifetime:g} s) is shorter than tcp_message_timeout "
                f"({self.tcp_message_timeout:g} s); an idle connection must be allowed at least one message's time"
            )
        return self

    @property
    def host(self) -> str:
        return parse_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_hostport(self.listen)[1]


class MediaSettings(_Model):
    address: str = Field("127.0.0.1", description="local address for RTP sockets and the SDP c= line")
    rtp_ports: str = Field("20000-29999", description="inclusive range of UDP ports for RTP (even ports are used)")
    codecs: tuple[Literal["PCMU", "PCMA"], ...] = ("PCMU", "PCMA")
    allow_relatch: bool = Field(False, description="accept RTP from one new source address (NAT), once per call")
    send_after_first_packet: bool = Field(
        False,
        description="send no RTP until the caller's first valid RTP packet arrives, then send to its source "
        "(a caller's SDP address is not trusted: an unauthenticated INVITE cannot aim our RTP at a third party). "
        "Alone: the packet must come from the SDP address. With allow_relatch: from any source, which we latch onto "
        "(symmetric RTP, for callers behind NAT); use both on a daemon open to the internet. Prompt frames due while "
        "waiting are dropped (the flow's timing stays on the clock); a caller that never sends RTP hears nothing "
        "(set rtp_timeout to end such calls)",
    )
    dtmf_mode: Literal["auto", "rfc4733", "inband", "info"] = Field(
        "auto",
        description="auto: RFC 4733 when negotiated, else in-band tones; rfc4733/inband: only that; "
        "info: only SIP INFO (SIP INFO is always accepted)",
    )
    rtp_timeout: float = Field(
        0.0,
        ge=0,
        description="seconds without any RTP from the caller before the call is ended with BYE (reason rtp_timeout; "
        "0: never). Callers that go silent without comfort noise exist: 60 is a common value (Asterisk rtptimeout)",
    )
    rtp_hold_timeout: float = Field(
        0.0,
        ge=0,
        description="the same for a call the caller has put on hold (a held phone may send nothing; 0: never)",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address; write e.g. 127.0.0.1") from None
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @property
    def port_range(self) -> tuple[int, int]:
        return parse_port_range(self.rtp_ports)


class CallSettings(_Model):
    welcome_prompt: str = Field("prompts/en/welcome.wav", description="relative to the config file's folder")
    hangup_after_prompt: bool = Field(True, description="false: loop the prompt until the caller hangs up")
    max_calls: int = Field(2000, ge=1, description="concurrent calls; beyond it INVITEs get 503 Retry-After")
    max_calls_per_second: float = Field(
        200.0, gt=0, description="new calls per second (burst of the same size); beyond: 503 with Retry-After"
    )
    shed_lag: float = Field(0.25, gt=0, description="event-loop lag (s) above which new calls get 503")
    max_call_seconds: float = Field(3600.0, gt=0, description="a call longer than this is ended with BYE")
    drain_seconds: float = Field(
        600.0, ge=0, description="on SIGTERM, how long calls in progress may go on before they get a BYE"
    )
    recordings_dir: str = Field("var/recordings", description="where record nodes write WAV files")


class CdrSettings(_Model):
    url: str = Field(
        "sqlite:///var/cdr.db",
        description="sqlite:///PATH (relative to this file's folder) or postgresql://user:pass@host/db",
    )
    instance: str | None = Field(None, description="this node's name in the records (default: host name and SIP port)")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"{value!r}: write sqlite:///var/cdr.db or postgresql://user:pass@host/db")
        return value


class AdminSettingsModel(_Model):
    listen: str | None = Field("127.0.0.1:8080", description="host:port of the admin HTTP API; null: off")
    token: str | None = Field(None, description="bearer token for /calls, /flows, /reload, /drain (16+ chars)")
    metrics_require_token: bool = False
    ready_max_lag: float = Field(0.5, gt=0, description="/ready answers 503 above this event-loop lag (s)")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, port = value.rpartition(":")[0], value.rpartition(":")[2]
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:8080 (port 0: any free port)")
        return value


class RouteSettings(_Model):
    client: str = Field(min_length=1, description="the client company this line belongs to (goes into records)")
    numbers: tuple[str, ...] = Field(("*",), description="dialled numbers, with * and ? wildcards")
    flow: str = Field(description="the flow file, relative to this file's folder")


class FlowSettings(_Model):
    prompt_cache: str = Field("var/prompt-cache", description="synthesised prompt audio, reused across restarts")
    watch: bool = Field(True, description="reload when a flow file or a recorded prompt beside it changes")
    watch_interval: float = Field(2.0, gt=0, description="seconds between checks for changed files")


class DigestSettings(_Model):
    realm: str = Field("ivr", min_length=1, description="the realm callers' phones authenticate in")
    users: dict[str, str] = Field(
        default_factory=dict,
        description="user -> password, or -> 'sha256:HA1' / 'md5:HA1' (hex of user:realm:password)",
    )
    secret: str | None = Field(
        None,
        min_length=16,
        description="signs the nonces (nodes that share it accept each other's); default: random per start. "
        "Set it with IVR_SECURITY__DIGEST__SECRET rather than in the file",
    )
    algorithms: tuple[Literal["SHA-256", "MD5"], ...] = Field(
        ("SHA-256", "MD5"), min_length=1, description="offered in this order (RFC 8760: SHA-256 first)"
    )
    trusted_skip: bool = Field(True, description="sources in trusted_sources are not challenged")

    @field_validator("users")
    @classmethod
    def _check_users(cls, value: dict[str, str]) -> dict[str, str]:
        for user, secret in value.items():
            if not user or ":" in user:
                raise ValueError(f"{user!r} is not a user name (no colons)")
            kind, sep, digest = secret.partition(":")
            if sep and kind in ("sha256", "md5"):
                size = 64 if kind == "sha256" else 32
                if len(digest) != size or any(c not in "0123456789abcdef" for c in digest.lower()):
                    raise ValueError(f"user {user!r}: {kind}:HA1 must be {size} hex digits")
        return value


class RegistrationSettings(_Model):
    registrar: str = Field(description="the registrar's URI, e.g. sip:pbx.example.com or sip:10.0.0.1:5060")
    aor: str = Field(description="the address of record to register, e.g. sip:ivr@pbx.example.com")
    username: str | None = Field(None, description="digest user name (default: none; the registrar may not ask)")
    password: str | None = Field(None, description="digest password (better: IVR_REGISTRATION__PASSWORD)")
    expires: int = Field(3600, ge=10, le=86400, description="seconds asked for; refreshed before it runs out")
    contact_user: str = Field("ivr", min_length=1, description="user part of the Contact (what INVITEs come to)")

    @field_validator("registrar", "aor")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        if not value.startswith(("sip:", "sips:")):
            raise ValueError(f"{value!r} is not a sip: URI; write e.g. sip:pbx.example.com")
        return value


class SecuritySettings(_Model):
    trusted_sources: tuple[str, ...] = Field(
        (), description="CIDRs allowed to send SIP (the softswitch, the trunk); empty: every source"
    )
    untrusted: Literal["reject", "drop"] = Field("reject", description="reject: 403 Forbidden; drop: no answer")
    max_messages_per_source: float = Field(
        2000.0,
        gt=0,
        description="SIP messages per second from one address not in trusted_sources (burst of twice that); "
        "excess dropped. Trusted sources (the softswitch carrying every call) are not limited",
    )
    block_seconds: float = Field(
        10.0,
        ge=0,
        description="a source over max_messages_per_source is then blocked this long: all its messages dropped, "
        "logged once per block (as Kamailio's pike module); 0: only the excess is dropped",
    )
    digest: DigestSettings | None = Field(
        None, description="challenge INVITEs with digest authentication (RFC 7616/8760); null: off"
    )

    @field_validator("trusted_sources")
    @classmethod
    def _check_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR; write e.g. 10.0.0.0/8 or 192.0.2.10") from None
        return value

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_sources)


class LogSettings(_Model):
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class IvrConfig(_Model):
    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    calls: CallSettings = Field(default_factory=CallSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    cdr: CdrSettings = Field(default_factory=CdrSettings)
    routes: tuple[RouteSettings, ...] = Field(
        (), description="dialled number -> client and flow, first match wins; none: every call hears welcome_prompt"
    )
    flows: FlowSettings = Field(default_factory=FlowSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    admin: AdminSettingsModel = Field(default_factory=AdminSettingsModel)
    queues: str | None = Field(
        "queues.yaml", description="the queue endpoints file, relative to this file's folder; null: no queues"
    )
    speech: SpeechSettings = Field(
        default_factory=SpeechSettings, description="recognising menus' spoken keywords (docs/speech.md)"
    )
    registration: RegistrationSettings | None = Field(
        None, description="register the daemon at an upstream registrar (a PBX or trunk that sends calls to it)"
    )
    base_dir: Path = Field(REPO_CONFIGS, exclude=True, description="folder that relative paths are resolved against")

    @model_validator(mode="after")
    def _check_ports_distinct(self) -> IvrConfig:
        low, high = self.media.port_range
        if self.media.address == self.sip.host and low <= self.sip.port <= high:
            raise ValueError(f"the SIP port {self.sip.port} lies inside the RTP port range {low}-{high}")
        return self

    @property
    def cdr_url(self) -> str:
        """The CDR store URL with a relative SQLite path made absolute against the config file's folder."""
        url = self.cdr.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            path, _, query = url[len("sqlite:///") :].partition("?")
            url = f"sqlite:///{self.resolve(path)}" + (f"?{query}" if query else "")
        return url

    @property
    def queues_path(self) -> Path | None:
        return self.resolve(self.queues) if self.queues is not None else None

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.base_dir / path


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:5060")
    return host.strip("[]"), int(port)


def parse_port_range(value: str) -> tuple[int, int]:
    low_text, sep, high_text = value.partition("-")
    if not sep or not low_text.strip().isdigit() or not high_text.strip().isdigit():
        raise ValueError(f"{value!r} is not a port range; write e.g. 20000-29999")
    low, high = int(low_text), int(high_text)
    if not 1024 <= low < high <= 65535 or high - low < 1:
        raise ValueError(f"{value!r}: need 1024 <= low < high <= 65535")
    return low, high


def default_config_path() -> Path | None:
    """``./configs/ivr.yaml`` when run from a checkout, else the checkout this package was installed from."""
    for candidate in (Path.cwd() / "configs" / "ivr.yaml", REPO_CONFIGS / "ivr.yaml"):
        if candidate.is_file():
            return candidate
    return None


ENV_PREFIX = "IVR_"


def env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Settings from the environment: ``IVR_SECTION__KEY=value`` (double underscore between levels, any case),
    e.g. ``IVR_SIP__LISTEN=0.0.0.0:5060``, ``IVR_ADMIN__TOKEN=...``, ``IVR_CALLS__MAX_CALLS=500``. Values are read
    as YAML scalars or flow lists (``false``, ``500``, ``[udp]``). Returns dotted key -> (variable name, value).
    Variables without ``__`` (IVR_CONFIG, IVR_PYTHON ...) are not settings and are ignored."""
    found: dict[str, tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = YAML(typ="safe").load(raw) if raw.strip() else raw
        except MarkedYAMLError:
            value = raw
        found[dotted] = (name, raw if isinstance(value, dict) else value)
    return found


def load_config(
    path: Path | None, overrides: dict[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> IvrConfig:
    """Read and validate a config file (``None``: the embedded defaults), then settings from ``IVR_...``
    environment variables (``environ``, default: none), then ``overrides``: dotted keys from the command line
    (``{"sip.listen": "127.0.0.1:5070"}``). Raises :class:`ConfigError` naming file:line or the variable."""
    data: Any = CommentedMap()
    base_dir = REPO_CONFIGS
    if path is not None:
        base_dir = path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        data = yaml_mapping(text, path, ConfigError, "(sip:, media:, calls:, log:)")
    settings = plain(data)
    from_env = env_overrides(environ or {})
    merged: dict[str, Any] = {key: value for key, (_name, value) in from_env.items()}
    merged.update(overrides or {})
    for dotted, value in merged.items():
        node = settings
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    settings["base_dir"] = base_dir
    try:
        return IvrConfig.model_validate(settings)
    except ValidationError as exc:
        env_names = {key: name for key, (name, _value) in from_env.items() if key not in (overrides or {})}
        raise ConfigError(_describe(exc, data, path, env_names)) from None


def yaml_mapping(text: str, path: Path | str, error: type[Exception], keys_hint: str) -> CommentedMap:
    """A YAML file whose top level is a mapping (empty: an empty one), kept with its line numbers; otherwise
    ``error`` naming file:line:column and what the file should hold (``keys_hint``, e.g. ``(queues:)``)."""
    try:
        loaded = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise error(f"{where}: YAML syntax error: {exc.problem}") from None
    if loaded is None:
        return CommentedMap()
    if not isinstance(loaded, CommentedMap):
        raise error(f"{path}:1: the top level must be a mapping {keys_hint}")
    return loaded


def plain(node: Any) -> Any:
    """A ruamel round-trip tree as plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the setting at ``loc`` in a ruamel round-trip tree (of its nearest parent found)."""
    node = data
    line: int | None = None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            pos = node.lc.key(part)
            line = pos[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _describe(exc: ValidationError, data: Any, path: Path | None, env_names: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc)
        line = line_of(data, loc)
        env_name = next((name for dotted, name in env_names.items() if key.startswith(dotted)), None)
        if env_name is not None:
            where = f"environment {env_name}"
        else:
            where = f"{path}:{line}" if path is not None and line is not None else str(path or "<defaults>")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see configs/ivr.yaml for every setting)"
        lines.append(f"{where}: {key}: {message}")
    return "\n".join(lines)
