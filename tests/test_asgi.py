"""ASGI middleware: pure-ASGI unit tests and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from asynclens.integrations.asgi import AsgiMiddleware, route_of
from asynclens.records import Span
from asynclens.testing import capture

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A small ASGI app: routes by path, streams, fails, handles lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/items/"):
        scope["route"] = SimpleNamespace(path="/items/{id}")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"item"})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        scope["state_after_body"] = True
        await asyncio.sleep(0.2)  # work after the response is complete (background work)
    elif path == "/boom":
        raise RuntimeError("handler failed")
    else:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"unavailable"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def uvicorn_server(asgi: Any) -> AsyncIterator[int]:
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn (the 'integration' extra) is not installed")
    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, lifespan="on", log_level="warning", loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def only(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


@pytest.mark.asyncio
async def test_real_server_requests_become_root_spans_continuing_traceparent() -> None:
    with capture() as cap:
        async with uvicorn_server(AsgiMiddleware(app)) as port:
            status, body = await asyncio.to_thread(get, port, "/items/42", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
            assert (status, body) == (200, b"item")
            status, _ = await asyncio.to_thread(get, port, "/other", {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"})
            assert status == 503
            status, _ = await asyncio.to_thread(get, port, "/boom")
            assert status == 500
    spans = cap.spans
    item = only(spans, "GET /items/{id}")
    assert item.trace_id == int(TRACE, 16) and item.parent_id == int(PARENT, 16) and item.remote_parent
    assert item.attrs["http.route"] == "/items/{id}" and item.attrs["url.path"] == "/items/42"
    assert item.attrs["http.response.status_code"] == 200 and item.attrs["span.kind"] == "server"
    assert item.status == "ok" and [e.name for e in item.events] == ["http.response.start"]
    assert "client.address" not in item.attrs
    other = only(spans, "GET /other")  # invalid (upper-case) traceparent: a new trace
    assert other.parent_id is None and not other.remote_parent and other.trace_id != int(TRACE, 16)
    assert other.status == "error" and other.attrs["http.response.status_code"] == 503
    boom = only(spans, "GET /boom")
    assert boom.status == "error" and boom.error_type == "RuntimeError"
    assert len(spans) == 3  # lifespan made no span


@pytest.mark.asyncio
async def test_streaming_response_span_ends_with_the_last_body_chunk() -> None:
    with capture() as cap:
        async with uvicorn_server(AsgiMiddleware(app, record_client=True)) as port:
            status, body = await asyncio.to_thread(get, port, "/stream")
            returned_at = cap.session.now()
            assert body == b"chunk0\nchunk1\nchunk2\n"
            await asyncio.sleep(0.3)  # let the app finish its after-response work
    stream = only(cap.spans, "GET /stream")
    assert stream.end_ns <= returned_at  # ended at the last byte, not 0.2 s later when the app returned
    assert stream.end_ns - stream.start_ns >= 30_000_000  # but covered all three chunks
    assert stream.attrs["client.address"] == "127.0.0.1"


@pytest.mark.asyncio
async def test_websocket_and_lifespan_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        await send({"type": "websocket.accept"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {}

    with capture() as cap:
        middleware = AsgiMiddleware(inner)
        await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
        await middleware({"type": "lifespan"}, receive, send)
    assert seen == ["websocket", "lifespan"] and sent == [{"type": "websocket.accept"}] * 2
    assert cap.spans == []


@pytest.mark.asyncio
async def test_without_a_session_requests_pass_through() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await AsgiMiddleware(app)({"type": "http", "method": "GET", "path": "/items/1", "headers": []}, None, send)
    assert sent[-1]["body"] == b"item"


@pytest.mark.asyncio
async def test_cancelled_request_ends_the_span_as_cancelled() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    async def send(message: dict[str, Any]) -> None:
        pass

    with capture() as cap:
        task = asyncio.create_task(AsgiMiddleware(slow)({"type": "http", "method": "POST", "path": "/slow", "headers": []}, None, send))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (span,) = cap.spans
    assert span.name == "POST /slow" and span.status == "cancelled"


def test_route_of_reads_starlette_style_routes() -> None:
    assert route_of({"route": SimpleNamespace(path="/a/{x}")}) == "/a/{x}"
    assert route_of({"route": SimpleNamespace(path_format="/b/{y}", path="/b/{y:int}")}) == "/b/{y}"
    assert route_of({"route": "/c"}) == "/c"
    assert route_of({}) is None


def test_middleware_rejects_a_non_app() -> None:
    with pytest.raises(TypeError, match="ASGI application"):
        AsgiMiddleware("app")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_each_request_gets_its_own_connections_attributes() -> None:
    """The connection attributes are built once per kind of connection and copied: requests on
    different servers, schemes and versions (a list for ``server``, as some servers send) keep
    their own, and a span's attributes changing later never leak into the next request's."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = AsgiMiddleware(app)
    scopes = [
        {"type": "http", "method": "GET", "path": "/items/1", "headers": [], "scheme": "https",
         "http_version": "2", "server": ["10.0.0.1", 443]},
        {"type": "http", "method": "GET", "path": "/items/2", "headers": [], "scheme": "http",
         "http_version": "1.1", "server": ("127.0.0.1", 8000)},
        {"type": "http", "method": "GET", "path": "/other", "headers": [], "scheme": "https",
         "http_version": "2", "server": ["10.0.0.1", 443]},
    ]  # fmt: skip
    with capture() as cap:
        for scope in scopes:
            await middleware(scope, None, send)
    assert [sent_message["type"] for sent_message in sent].count("http.response.body") == 3
    first, second, third = cap.spans
    assert (first.attrs["url.scheme"], first.attrs["server.address"]) == ("https", "10.0.0.1")
    assert first.attrs["server.port"] == 443
    assert (second.attrs["url.scheme"], second.attrs["network.protocol.version"]) == ("http", "1.1")
    assert (first.attrs["http.route"], second.attrs["http.route"]) == ("/items/{id}", "/items/{id}")
    assert "http.route" not in third.attrs and third.attrs["http.response.status_code"] == 503
    assert third.attrs["url.path"] == "/other" and third.attrs["server.address"] == "10.0.0.1"
    assert cap.session.statistics().internal_errors == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"x"), (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())],
        [("traceparent", f"00-{TRACE}-{PARENT}-01")],  # str names: not ASGI, still read
        [[b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()]],  # pairs as lists
    ],
    ids=["asgi", "str-names", "list-pairs"],
)
async def test_traceparent_is_continued_from_any_form_of_headers(headers: list[Any]) -> None:
    async def send(message: dict[str, Any]) -> None:
        pass

    with capture() as cap:
        await AsgiMiddleware(app)({"type": "http", "method": "GET", "path": "/items/1", "headers": headers}, None, send)
    (span,) = cap.spans
    assert f"{span.trace_id:032x}" == TRACE and f"{span.parent_id:016x}" == PARENT
    assert cap.session.statistics().internal_errors == 0
