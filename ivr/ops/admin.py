"""The admin HTTP API (aiohttp): health, readiness, metrics, active calls, reload, drain, loaded flows.

Bound to 127.0.0.1 by default. Binding it anywhere else requires a token. Endpoints:

======================  ======  ==========================================================================
``GET /health``         open    liveness: the process answers (200)
``GET /ready``          open    readiness: 200, or 503 while draining or while the event loop lags over the limit
``GET /metrics``        open*   Prometheus text format (*``metrics_require_token=True`` puts it behind the token)
``GET /openapi.json``   open    this API, described in OpenAPI 3.1
``GET /calls``          token   active calls with their current node (``?limit=N``)
``GET /flows``          token   every loaded flow with its version
``POST /reload``        token   reload the flows (all or nothing): 200 with what loaded, 422 with the errors
``POST /drain``         token   stop taking new calls; calls in progress finish (202)
======================  ======  ==========================================================================

Why ``/metrics`` is open by default: Prometheus scrapes without credentials in most set-ups, the port is on loopback
unless configured otherwise, and the figures hold no caller data (labels are flow, node and queue names). Deployments
that expose the port set ``metrics_require_token`` and give Prometheus the token (``authorization: {credentials: ...}``
in the scrape config).

The token travels as ``Authorization: Bearer <token>`` and is compared in constant time. Every error is JSON:
``{"error": "...", "status": N}``. Query parameters are checked before any handler runs: an endpoint takes only its
own (``/calls``: ``limit``), each at most once and within its bounds; anything else is a 400 that says why.

The daemon is reached only through :class:`AdminBackend`, so this module knows nothing of SIP.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from aiohttp import web

from ivr.ops.metrics import CONTENT_TYPE, IvrMetrics

__all__ = ["OPENAPI", "AdminBackend", "AdminServer", "AdminSettings", "ReloadResult", "make_admin_app"]

log = structlog.get_logger("ivr.ops.admin")

MIN_TOKEN_LENGTH: Final = 16
MAX_BODY: Final = 64 * 1024
MAX_CALLS_LIMIT: Final = 100_000


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: ``ok`` and the flows now loaded (``name``, ``version``, ...), or not ``ok`` and the
    validation errors (``file:line:column: message``), the running flows left untouched."""

    ok: bool
    flows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class AdminBackend(Protocol):
    """The daemon, as the admin API sees it."""

    def active_calls(self) -> list[dict[str, Any]]:
        """One JSON-able dict per call in progress: ``call_id``, ``caller``, ``dialled``, ``flow``, ``node``,
        ``started_at`` (ISO 8601), ``answered`` (bool), ``duration_s``, ... (the daemon chooses)."""
        ...

    async def reload(self) -> ReloadResult:
        """Reload the flows with the same all-or-nothing rules as SIGHUP."""
        ...

    def drain(self) -> None:
        """Begin draining (idempotent): new calls and OPTIONS get 503, calls in progress finish. Returns at once."""
        ...

    @property
    def draining(self) -> bool: ...

    def flows(self) -> list[dict[str, Any]]:
        """One dict per loaded flow: ``name``, ``version``, and what else is useful (``numbers``, ``file``, ...)."""
        ...

    def event_loop_lag(self) -> float:
        """Seconds the event loop is running late (``EventLoopLagMonitor.lag``)."""
        ...


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port (tests); :meth:`AdminServer.start` returns the one bound."""
    token: str | None = None
    """Bearer token for the protected endpoints; without one they answer 403."""
    metrics_require_token: bool = False
    ready_max_lag: float = 0.5
    """``/ready`` answers 503 while the event loop lags more than this many seconds."""

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters (use a random one)")
        if self.token is not None and any(ch.isspace() or not ch.isprintable() for ch in self.token):
            raise ValueError("the admin token must be printable characters (no spaces or line breaks)")
        if self.token is None and not _is_loopback(self.host):
            raise ValueError(f"the admin API on {self.host} (not loopback) needs a token")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"admin port {self.port} is out of range")
        if self.ready_max_lag <= 0:
            raise ValueError("ready_max_lag must be positive")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- responses ---------------------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda obj: json.dumps(obj, default=str))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message, "status": status}, status=status, headers=headers)


_PUBLIC: Final = frozenset({"/health", "/ready", "/openapi.json"})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Api:
    def __init__(self, backend: AdminBackend, settings: AdminSettings, metrics: IvrMetrics | None) -> None:
        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.public = _PUBLIC if settings.metrics_require_token else _PUBLIC | {"/metrics"}
        self.token = None if settings.token is None else settings.token.encode()
        self.started = time.monotonic()
        self.reload_lock = asyncio.Lock()

    # -- middleware ----------------------------------------------------------------------------------------------

    @web.middleware
    async def guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path not in self.public:
            refused = self._refuse(request)
            if refused is not None:
                return refused
        if request.method in ("GET", "HEAD") and request.match_info.http_exception is None:
            query = _query(request)
            if isinstance(query, web.Response):
                return query
        try:
            return await handler(request)
        except web.HTTPException as exc:
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error(exc.status, exc.reason, headers)
        except Exception as exc:
            log.exception("admin request failed", method=request.method, path=request.path)
            return _error(500, f"internal error: {type(exc).__name__}")

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return _error(403, "no admin token is configured; protected endpoints are disabled")
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="ivr-admin"'}
        if not header:
            return _error(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
        if scheme.lower() != "bearer" or not credentials.strip():
            return _error(401, "the Authorization header must be 'Bearer <token>'", challenge)
        if not hmac.compare_digest(credentials.strip().encode(), self.token):
            return _error(
                401, "invalid bearer token", {"WWW-Authenticate": 'Bearer realm="ivr-admin", error="invalid_token"'}
            )
        return None

    # -- handlers ------------------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "uptime_s": round(time.monotonic() - self.started, 3)})

    async def ready(self, request: web.Request) -> web.Response:
        reasons: list[str] = []
        if self.backend.draining:
            reasons.append("draining")
        lag = self.backend.event_loop_lag()
        if lag > self.settings.ready_max_lag:
            reasons.append(f"event loop lag {lag:.3f} s is over {self.settings.ready_max_lag:.3f} s")
        body = {"ready": not reasons, "reasons": reasons, "event_loop_lag_s": round(lag, 4)}
        return _json(body, status=503 if reasons else 200)

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return _error(404, "metrics are not enabled")
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def calls(self, request: web.Request) -> web.Response:
        query = _query(request)  # the guard already answered 400 to a bad one
        limit = query.get("limit") if isinstance(query, dict) else None
        calls = self.backend.active_calls()
        shown = calls if limit is None else calls[:limit]
        return _json({"count": len(calls), "calls": shown, "draining": self.backend.draining})

    async def flows(self, request: web.Request) -> web.Response:
        return _json({"flows": self.backend.flows()})

    async def reload(self, request: web.Request) -> web.Response:
        problem = await _no_parameters(request)
        if problem is not None:
            return problem
        if self.reload_lock.locked():
            return _error(409, "a reload is already running; try again when it has finished")
        async with self.reload_lock:
            result = await self.backend.reload()
        log.info("admin reload", ok=result.ok, flows=len(result.flows), errors=len(result.errors))
        if result.ok:
            return _json({"ok": True, "flows": result.flows})
        return _json({"ok": False, "errors": result.errors, "status": 422, "error": "the flows did not load"}, 422)

    async def drain(self, request: web.Request) -> web.Response:
        problem = await _no_parameters(request)
        if problem is not None:
            return problem
        self.backend.drain()
        log.info("admin drain")
        return _json({"draining": self.backend.draining, "active_calls": len(self.backend.active_calls())}, 202)

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)


# The query parameters each GET endpoint takes, each a whole number within its bounds; any other parameter, a
# repeated one or a value out of bounds is a 400 that says why (never a 500: a value is checked for its length and
# its ASCII digits before int() sees it, which refuses past 4,300 digits).
_QUERY_BOUNDS: Final[dict[str, dict[str, tuple[int, int]]]] = {
    "/calls": {"limit": (1, MAX_CALLS_LIMIT)},
}
_MAX_DIGITS: Final = 20
# How much of a refused name or value the 400 repeats.
_ECHO: Final = 40


def _shown(text: str) -> str:
    return repr(text if len(text) <= _ECHO else text[:_ECHO] + "...")


def _query(request: web.Request) -> dict[str, int] | web.Response:
    """The query parameters of a GET, parsed with their bounds (``_QUERY_BOUNDS``), or the 400 that says what is
    wrong. Endpoints not in the table take none."""
    bounds = _QUERY_BOUNDS.get(request.path, {})
    known = ", ".join(sorted(bounds)) or "none"
    values: dict[str, int] = {}
    seen: set[str] = set()
    for name, text in request.query.items():
        if name not in bounds:
            return _error(400, f"unknown query parameter {_shown(name)} for {request.path}; known: {known}")
        if name in seen:
            return _error(400, f"query parameter {name} is given more than once")
        seen.add(name)
        low, high = bounds[name]
        if not 0 < len(text) <= _MAX_DIGITS or not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            return _error(400, f"{name} must be a whole number from {low} to {high}, not {_shown(text)}")
        values[name] = int(text)
    return values


async def _no_parameters(request: web.Request) -> web.Response | None:
    """POST bodies: empty or ``{}``; anything else is a mistake worth telling."""
    if request.query:
        return _error(400, f"{request.path} takes no query parameters")
    body = await request.read()
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, f"{request.path}: the body is not JSON (send none, or {{}})")
    if data != {}:
        return _error(400, f"{request.path} takes no parameters (send no body, or {{}})")
    return None


def make_admin_app(
    backend: AdminBackend, settings: AdminSettings, metrics: IvrMetrics | None = None
) -> web.Application:
    """The aiohttp application (for :class:`AdminServer`, or aiohttp's test client)."""
    api = _Api(backend, settings, metrics)
    app = web.Application(middlewares=[api.guard], client_max_size=MAX_BODY)
    app.router.add_get("/health", api.health, allow_head=True)
    app.router.add_get("/ready", api.ready, allow_head=True)
    app.router.add_get("/metrics", api.metrics_text)
    app.router.add_get("/openapi.json", api.openapi)
    app.router.add_get("/calls", api.calls)
    app.router.add_get("/flows", api.flows)
    app.router.add_post("/reload", api.reload)
    app.router.add_post("/drain", api.drain)
    return app


class AdminServer:
    """The admin API on its own TCP port: ``await start()`` (returns host and port bound), ``await close()``."""

    def __init__(self, backend: AdminBackend, settings: AdminSettings, metrics: IvrMetrics | None = None) -> None:
        self.settings = settings
        self.app = make_admin_app(backend, settings, metrics)
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"admin API cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror}"
            ) from exc
        self._runner = runner
        host, port = self.settings.host, self.settings.port
        for bound in runner.addresses:
            if isinstance(bound, tuple) and len(bound) >= 2:
                host, port = str(bound[0]), int(bound[1])
                break
        self.address = (host, port)
        log.info("admin API listening", host=host, port=port, token=self.settings.token is not None)
        return self.address

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


_ERROR_SCHEMA: Final = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    "required": ["error", "status"],
}


def _reply(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": content}


_ERRORS: Final = {
    "401": _reply("missing or wrong bearer token", _ERROR_SCHEMA),
    "403": _reply("no admin token configured", _ERROR_SCHEMA),
}
_SECURED: Final[list[dict[str, list[str]]]] = [{"bearer": []}]

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "ivr admin API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": _ERROR_SCHEMA},
    },
    "paths": {
        "/health": {
            "get": {"summary": "liveness", "security": [], "responses": {"200": _reply("the process answers")}}
        },
        "/ready": {
            "get": {
                "summary": "readiness for new calls",
                "security": [],
                "responses": {
                    "200": _reply("ready"),
                    "503": _reply("draining, or the event loop lags over the limit; 'reasons' says which"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format 0.0.4); open unless metrics_require_token",
                "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}, **_ERRORS},
            }
        },
        "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {"200": _reply("OpenAPI")}}},
        "/calls": {
            "get": {
                "summary": "active calls with their current node",
                "security": _SECURED,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CALLS_LIMIT},
                    }
                ],
                "responses": {
                    "200": _reply("count, calls, draining"),
                    "400": _reply("bad limit", _ERROR_SCHEMA),
                    **_ERRORS,
                },
            }
        },
        "/flows": {
            "get": {
                "summary": "loaded flows and their versions",
                "security": _SECURED,
                "responses": {"200": _reply("flows"), **_ERRORS},
            }
        },
        "/reload": {
            "post": {
                "summary": "reload flows, all or nothing (as SIGHUP)",
                "security": _SECURED,
                "responses": {
                    "200": _reply("ok, flows"),
                    "400": _reply("a body or parameters were sent", _ERROR_SCHEMA),
                    "409": _reply("a reload is already running", _ERROR_SCHEMA),
                    "422": _reply("validation errors; the running flows are unchanged"),
                    **_ERRORS,
                },
            }
        },
        "/drain": {
            "post": {
                "summary": "stop taking new calls; calls in progress finish",
                "security": _SECURED,
                "responses": {
                    "202": _reply("draining, active_calls"),
                    "400": _reply("a body or parameters were sent", _ERROR_SCHEMA),
                    **_ERRORS,
                },
            }
        },
    },
    "security": _SECURED,
}
