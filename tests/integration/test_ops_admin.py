"""The admin HTTP API over loopback with aiohttp's test client, against a small real backend."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from ivr.ops.admin import OPENAPI, AdminServer, AdminSettings, ReloadResult, make_admin_app
from ivr.ops.metrics import IvrMetrics

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Backend:
    """What the daemon would be: calls with their nodes, flows with versions, a reload that may fail."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = [
            {"call_id": "a@h", "caller": "+359888", "flow": "bank", "node": "menu"},
            {"call_id": "b@h", "caller": "+359889", "flow": "bank", "node": "account"},
        ]
        self.loaded: list[dict[str, Any]] = [{"name": "bank", "version": "3"}]
        self.next_reload = ReloadResult(ok=True, flows=[{"name": "bank", "version": "4"}])
        self.reloads = 0
        self.reload_gate: asyncio.Event | None = None
        self.draining = False
        self.lag = 0.0

    def active_calls(self) -> list[dict[str, Any]]:
        return list(self.calls)

    async def reload(self) -> ReloadResult:
        self.reloads += 1
        if self.reload_gate is not None:
            await self.reload_gate.wait()
        if self.next_reload.ok:
            self.loaded = self.next_reload.flows
        return self.next_reload

    def drain(self) -> None:
        self.draining = True

    def flows(self) -> list[dict[str, Any]]:
        return self.loaded

    def event_loop_lag(self) -> float:
        return self.lag


Factory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
async def make_client(backend: Backend) -> AsyncIterator[Factory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(metrics: IvrMetrics | None = None, **settings: Any) -> TestClient[Any, Any]:
        options: dict[str, Any] = {"token": TOKEN, **settings}
        app = make_admin_app(backend, AdminSettings(**options), metrics)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: Factory) -> TestClient[Any, Any]:
    metrics = IvrMetrics(process=False)
    metrics.call_started()
    return await make_client(metrics)


async def test_health_answers_without_a_token(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_ready_until_draining(client: TestClient[Any, Any], backend: Backend) -> None:
    response = await client.get("/ready")
    assert response.status == 200
    assert (await response.json())["ready"] is True
    backend.draining = True
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["reasons"] == ["draining"]


async def test_not_ready_while_the_event_loop_lags(make_client: Factory, backend: Backend) -> None:
    client = await make_client(ready_max_lag=0.2)
    backend.lag = 0.35
    response = await client.get("/ready")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False and "event loop lag 0.350 s is over 0.200 s" in body["reasons"][0]
    backend.lag = 0.1
    assert (await client.get("/ready")).status == 200


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/calls"), ("GET", "/flows"), ("POST", "/reload"), ("POST", "/drain")]
)
async def test_protected_endpoints_refuse_without_the_token(
    client: TestClient[Any, Any], backend: Backend, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing bearer token" in (await response.json())["error"]
    assert backend.reloads == 0 and not backend.draining


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"Bearer {TOKEN}x", "invalid bearer token"),
        (f"Bearer {TOKEN[:-1]}", "invalid bearer token"),
        (f"Basic {TOKEN}", "must be 'Bearer <token>'"),
        ("Bearer", "must be 'Bearer <token>'"),
    ],
)
async def test_wrong_credentials_are_refused(client: TestClient[Any, Any], header: str, message: str) -> None:
    response = await client.get("/calls", headers={"Authorization": header})
    assert response.status == 401
    assert message in (await response.json())["error"]


async def test_without_a_configured_token_protected_endpoints_are_disabled(make_client: Factory) -> None:
    client = await make_client(token=None)
    response = await client.get("/calls", headers=AUTH)
    assert response.status == 403
    assert "no admin token" in (await response.json())["error"]
    assert (await client.get("/health")).status == 200


async def test_calls_lists_active_calls_with_their_node(client: TestClient[Any, Any]) -> None:
    response = await client.get("/calls", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["count"] == 2 and [c["node"] for c in body["calls"]] == ["menu", "account"]
    limited = await (await client.get("/calls?limit=1", headers=AUTH)).json()
    assert limited["count"] == 2 and len(limited["calls"]) == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=-1", "limit=100001", "sort=node"])
async def test_calls_refuses_bad_parameters(client: TestClient[Any, Any], query: str) -> None:
    response = await client.get(f"/calls?{query}", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["status"] == 400


async def test_flows_lists_versions(client: TestClient[Any, Any]) -> None:
    assert await (await client.get("/flows", headers=AUTH)).json() == {"flows": [{"name": "bank", "version": "3"}]}


async def test_reload_returns_what_loaded(client: TestClient[Any, Any], backend: Backend) -> None:
    response = await client.post("/reload", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"ok": True, "flows": [{"name": "bank", "version": "4"}]}
    assert (await (await client.get("/flows", headers=AUTH)).json())["flows"][0]["version"] == "4"


async def test_reload_with_invalid_flows_returns_the_errors(client: TestClient[Any, Any], backend: Backend) -> None:
    backend.next_reload = ReloadResult(ok=False, errors=["flows/bank.yaml:12:5: unknown node 'mneu'"])
    response = await client.post("/reload", headers=AUTH)
    assert response.status == 422
    body = await response.json()
    assert body["ok"] is False and body["errors"] == ["flows/bank.yaml:12:5: unknown node 'mneu'"]
    assert backend.loaded == [{"name": "bank", "version": "3"}]


async def test_a_second_reload_while_one_runs_is_refused(client: TestClient[Any, Any], backend: Backend) -> None:
    backend.reload_gate = asyncio.Event()
    first = asyncio.create_task(client.post("/reload", headers=AUTH))
    for _ in range(200):
        if backend.reloads:
            break
        await asyncio.sleep(0.005)
    second = await client.post("/reload", headers=AUTH)
    assert second.status == 409
    backend.reload_gate.set()
    assert (await first).status == 200
    assert backend.reloads == 1


async def test_reload_accepts_an_empty_json_object_and_refuses_other_bodies(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/reload", headers=AUTH, json={})).status == 200
    response = await client.post("/reload", headers=AUTH, json={"flow": "bank"})
    assert response.status == 400
    assert "takes no parameters" in (await response.json())["error"]
    response = await client.post("/reload", headers=AUTH, data=b"{not json")
    assert response.status == 400
    assert "not JSON" in (await response.json())["error"]


async def test_drain_starts_draining(client: TestClient[Any, Any], backend: Backend) -> None:
    response = await client.post("/drain", headers=AUTH)
    assert response.status == 202
    assert await response.json() == {"draining": True, "active_calls": 2}
    assert backend.draining
    assert (await client.get("/ready")).status == 503


async def test_metrics_are_open_by_default_and_parse(client: TestClient[Any, Any]) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert families["ivr_active_calls"].samples[0].value == 1


async def test_metrics_can_require_the_token(make_client: Factory) -> None:
    client = await make_client(IvrMetrics(process=False), metrics_require_token=True)
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=AUTH)).status == 200


async def test_metrics_without_a_registry_is_a_json_404(make_client: Factory) -> None:
    client = await make_client(None)
    response = await client.get("/metrics")
    assert response.status == 404
    assert (await response.json())["error"] == "metrics are not enabled"


async def test_unknown_paths_and_methods_answer_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/nope", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["status"] == 404
    response = await client.get("/reload", headers=AUTH)
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert (await response.json())["status"] == 405


async def test_a_backend_failure_is_a_json_500_and_the_api_keeps_serving(
    client: TestClient[Any, Any], backend: Backend
) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("boom")

    backend.active_calls = broken  # type: ignore[method-assign]
    response = await client.get("/calls", headers=AUTH)
    assert response.status == 500
    assert (await response.json())["error"] == "internal error: RuntimeError"
    assert (await client.get("/health")).status == 200


async def test_oversized_bodies_are_refused(client: TestClient[Any, Any]) -> None:
    response = await client.post("/drain", headers=AUTH, data=b"x" * (128 * 1024))
    assert response.status == 413


async def test_openapi_describes_every_route(client: TestClient[Any, Any]) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == OPENAPI
    assert set(document["paths"]) == {
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/calls",
        "/flows",
        "/reload",
        "/drain",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "short"}, "at least 16"),
        ({"token": "x" * 16 + " y"}, "printable"),
        ({"host": "0.0.0.0"}, "needs a token"),
        ({"port": 70000}, "out of range"),
        ({"ready_max_lag": 0}, "positive"),
    ],
)
def test_unsafe_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdminSettings(**settings)


def test_a_public_address_is_allowed_with_a_token() -> None:
    assert AdminSettings(host="0.0.0.0", token=TOKEN).host == "0.0.0.0"


async def test_admin_server_listens_on_loopback_and_answers(backend: Backend) -> None:
    server = AdminServer(backend, AdminSettings(port=0, token=TOKEN), IvrMetrics(process=False))
    host, port = await server.start()
    try:
        assert host == "127.0.0.1" and port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/calls", headers=AUTH) as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/calls") as response:
                assert response.status == 401
    finally:
        await server.close()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_admin_server_reports_a_busy_port(backend: Backend) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AdminServer(backend, AdminSettings(port=port, token=TOKEN))
        with pytest.raises(OSError, match=f"admin API cannot listen on 127.0.0.1:{port}"):
            await server.start()


@pytest.mark.parametrize(
    "query",
    [
        "limit=" + "9" * 5000,  # int() refuses past 4,300 digits: this was a 500
        "limit=" + "0" * 5000 + "1",
        "limit=" + "1" * 30,
        "limit=%C2%B2",  # superscript two: str.isdigit() says yes, int() says no (a 500 too)
        "limit=%D9%A3",  # an Arabic-Indic three: not an ASCII digit
        "limit=",
        "limit=1&limit=2",
        "limit=+5",
        "limit=5%00",
        "x" * 3000 + "=1",
    ],
)
async def test_calls_query_is_parsed_with_bounds_never_a_500(client: TestClient[Any, Any], query: str) -> None:
    response = await client.get(f"/calls?{query}", headers=AUTH)
    assert response.status == 400
    body = await response.json()
    assert body["status"] == 400 and len(body["error"]) < 200


async def test_calls_limit_with_leading_zeros_is_the_number(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/calls?limit=0001", headers=AUTH)).json()
    assert body["count"] == 2 and len(body["calls"]) == 1


@pytest.mark.parametrize("path", ["/flows", "/health", "/ready", "/metrics", "/openapi.json"])
async def test_endpoints_without_parameters_refuse_any(make_client: Factory, path: str) -> None:
    client = await make_client(IvrMetrics())
    response = await client.get(f"{path}?limit=1", headers=AUTH)
    assert response.status == 400
    assert "unknown query parameter 'limit'" in (await response.json())["error"]
    assert (await client.get(path, headers=AUTH)).status in (200, 503)
