"""An http node against a real HTTP server on 127.0.0.1 (the daemon's aiohttp client, not fixtures)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ivr.flows.runtime import AiohttpClient, HttpError
from ivr.simulator.lab import IvrLab

SHOP = Path(__file__).parent / "scenarios" / "shop.yaml"


@pytest.fixture
async def crm() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def order(request: web.Request) -> web.Response:
        seen.append(request)
        number = request.match_info["number"]
        if number == "1111":
            return web.json_response({"state": "shipped"})
        if number == "2222":
            await asyncio.sleep(1.0)  # longer than the 0.3 s the client waits
            return web.json_response({"state": "late"})
        if number == "3333":
            return web.Response(status=500, text="boom")
        return web.json_response({"error": "no such order"}, status=404)

    app = web.Application()
    app.router.add_get("/orders/{number}", order)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_call_looks_its_order_up_on_a_real_server(crm: tuple[str, list[web.Request]], tmp_path: Path) -> None:
    base, seen = crm
    number, heard = "1111", "status-is"
    flow = tmp_path / "shop.yaml"
    flow.write_text(SHOP.read_text().replace("https://orders.example.com", base))
    async with IvrLab(flow=flow, live_http=True) as lab:
        call = await lab.call("100", at=dt.datetime(2026, 11, 24, 10, 0))
        await call.expect_prompt("hello", "menu")
        await call.press("1")
        await call.press(f"{number}#")
        await call.expect_prompt("you-entered")
        await call.press("1")
        await call.expect_prompt(heard)
        await call.expect_hangup()
        await call.finish()
    assert [r.path for r in seen] == [f"/orders/{number}"]
    assert seen[0].headers["User-Agent"] == "ivr"
    lookup = next(e for e in call.trace if e.kind == "input" and e.node == "lookup")
    assert lookup.detail["result"] == "http"


async def test_the_client_turns_timeouts_errors_and_oversize_answers_into_failures(
    crm: tuple[str, list[web.Request]],
) -> None:
    base, _ = crm
    client = AiohttpClient(max_bytes=64)
    try:
        ok = await client.request("GET", f"{base}/orders/1111", json=None, headers={}, timeout=2)
        assert (ok.status, ok.json) == (200, {"state": "shipped"})
        with pytest.raises(HttpError, match=r"no answer within 0\.3s"):
            await client.request("GET", f"{base}/orders/2222", json=None, headers={}, timeout=0.3)
        server_error = await client.request("GET", f"{base}/orders/3333", json=None, headers={}, timeout=2)
        assert (server_error.status, server_error.json) == (500, None)  # the flow's failure path decides on 5xx
        missing = await client.request("GET", f"{base}/orders/4444", json=None, headers={}, timeout=2)
        assert missing.status == 404
        small = AiohttpClient(max_bytes=8)
        try:
            with pytest.raises(HttpError, match="longer than 8 bytes"):
                await small.request("GET", f"{base}/orders/1111", json=None, headers={}, timeout=2)
        finally:
            await small.close()
        with pytest.raises(HttpError, match="ClientConnectorError"):
            await client.request("GET", "http://127.0.0.1:9/x", json=None, headers={}, timeout=2)
    finally:
        await client.close()
