"""aiohttp middleware and client traceparent injection, on a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (the 'integration' extra) is not installed")
from aiohttp import web

import asynclens
from asynclens.integrations.aiohttp import client_trace_config, middleware
from asynclens.testing import capture

STATE: Any = web.AppKey("state", dict) if hasattr(web, "AppKey") else "state"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def user(request: web.Request) -> web.Response:
    async with asynclens.span("db.load"):
        await asyncio.sleep(0)
    return web.Response(text=f"user {request.match_info['id']}")


async def missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def fail(request: web.Request) -> web.Response:
    raise ValueError("broken")


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(3):
        await response.write(b"part%d\n" % i)
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def forward(request: web.Request) -> web.Response:
    """Calls another service (this same server) with traceparent injected."""
    state = request.app[STATE]
    async with state["client"].get(f"{state['base']}/users/7") as response:
        return web.Response(text=await response.text())


@asynccontextmanager
async def server(**options: Any) -> AsyncIterator[str]:
    app = web.Application(middlewares=[middleware(**options)])
    state: dict[str, Any] = {}
    app[STATE] = state
    app.router.add_get("/users/{id}", user)
    app.router.add_get("/missing", missing)
    app.router.add_get("/fail", fail)
    app.router.add_get("/stream", stream)
    app.router.add_get("/forward", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    state["base"] = base
    state["client"] = aiohttp.ClientSession(trace_configs=[client_trace_config()])
    try:
        yield base
    finally:
        await state["client"].close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_requests_become_root_spans_named_by_route() -> None:
    with capture() as cap:
        async with server(record_client=True) as base, aiohttp.ClientSession() as client:
            headers = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
            async with client.get(f"{base}/users/42", headers=headers) as r:
                assert await r.text() == "user 42"
            async with client.get(f"{base}/missing") as r:
                assert r.status == 404
            async with client.get(f"{base}/fail") as r:
                assert r.status == 500
            async with client.get(f"{base}/nowhere") as r:
                assert r.status == 404
            async with client.get(f"{base}/stream") as r:
                assert await r.read() == b"part0\npart1\npart2\n"
    by_name = {s.name: s for s in cap.spans}
    assert set(by_name) == {"GET /users/{id}", "db.load", "GET /missing", "GET /fail", "GET /nowhere", "GET /stream"}
    users = by_name["GET /users/{id}"]
    assert users.trace_id == int(TRACE, 16) and users.parent_id == int(PARENT, 16) and users.remote_parent
    assert users.attrs["http.route"] == "/users/{id}" and users.attrs["http.response.status_code"] == 200
    assert users.attrs["client.address"] == "127.0.0.1" and users.attrs["span.kind"] == "server"
    assert by_name["db.load"].parent_id == users.span_id
    assert by_name["GET /missing"].attrs["http.response.status_code"] == 404 and by_name["GET /missing"].status != "error"
    assert by_name["GET /fail"].status == "error" and by_name["GET /fail"].error_type == "ValueError"
    assert "http.route" not in by_name["GET /nowhere"].attrs
    assert by_name["GET /stream"].duration_ns >= 30_000_000  # the span covers the streamed body


@pytest.mark.asyncio
async def test_client_requests_inject_traceparent_so_the_callee_joins_the_trace() -> None:
    with capture() as cap:
        async with server() as base, aiohttp.ClientSession() as client, client.get(f"{base}/forward") as r:
            assert await r.text() == "user 7"
    by_name = {s.name: s for s in cap.spans}
    outer, client_span, inner = by_name["GET /forward"], by_name["GET 127.0.0.1"], by_name["GET /users/{id}"]
    assert client_span.parent_id == outer.span_id and client_span.attrs["span.kind"] == "client"
    assert client_span.attrs["http.response.status_code"] == 200
    assert inner.trace_id == outer.trace_id and inner.parent_id == client_span.span_id and inner.remote_parent


@pytest.mark.asyncio
async def test_client_failure_ends_its_span_and_reaches_the_caller_unchanged() -> None:
    with capture() as cap:
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as client:
            async with asynclens.span("caller"):
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with client.get("http://127.0.0.1:1/"):
                        pass
    by_name = {s.name: s for s in cap.spans}
    assert by_name["GET 127.0.0.1"].status == "error" and by_name["GET 127.0.0.1"].parent_id == by_name["caller"].span_id


@pytest.mark.asyncio
async def test_without_a_session_nothing_is_added() -> None:
    async with server() as base, aiohttp.ClientSession() as client, client.get(f"{base}/forward") as r:
        assert await r.text() == "user 7"
