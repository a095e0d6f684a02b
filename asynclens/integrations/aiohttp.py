"""aiohttp integration: server middleware (request root spans) and client ``traceparent`` injection.

::

    from asynclens.integrations.aiohttp import client_trace_config, middleware

    app = web.Application(middlewares=[middleware()])
    session = aiohttp.ClientSession(trace_configs=[client_trace_config()])

The server span is named ``"METHOD route"`` (the resource's canonical path, e.g.
``/users/{id}``; the request path when no route matched), continues an incoming
``traceparent``, and records the same attributes as the ASGI middleware. The
client trace config opens a client span per outgoing request and sends its
``traceparent`` (and the trace's ``tracestate``), so the callee's spans join the
caller's trace. Importing this module requires aiohttp.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

try:
    from aiohttp import TraceConfig, web  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "asynclens.integrations.aiohttp needs aiohttp: pip install aiohttp (or asyncio-lens[integration])"
    ) from exc

from .._state import context as _context
from ..tracing.propagation import extract, inject
from ..tracing.spans import span

__all__ = ["client_trace_config", "middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_of(request: web.Request) -> str | None:
    try:
        info = request.match_info
        if getattr(info, "http_exception", None) is not None:  # no route matched
            return None
        resource = info.route.resource
        return resource.canonical if resource is not None else None
    except Exception:
        return None


def middleware(*, record_client: bool = False, trust_traceparent: bool = True) -> Any:
    """An aiohttp middleware that runs each request in a root span (see the module doc)."""

    @web.middleware
    async def asynclens_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _context.active is None:
            return await handler(request)
        try:
            method = request.method
            attrs: dict[str, Any] = {
                "span.kind": "server",
                "http.request.method": method,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "network.protocol.version": f"{request.version.major}.{request.version.minor}",
            }
            host = request.host
            if host:
                attrs["server.address"] = host
            if record_client and request.remote:
                attrs["client.address"] = request.remote
            route = _route_of(request)
            if route:
                attrs["http.route"] = route
            parent = extract(request.headers) if trust_traceparent else None
            block = span(f"{method} {route or request.path}", parent=parent, **attrs)
        except Exception as exc:
            _report("starting an aiohttp request span", exc)
            return await handler(request)
        answer: web.HTTPException | None = None
        with block as live:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's way of answering 3xx/4xx: not a failure
                _set_status(live, exc.status)
                if exc.status >= 500:
                    raise
                answer = exc
            else:
                _set_status(live, response.status)
        if answer is not None:
            raise answer
        return response

    return asynclens_middleware


def _set_status(live: Any, status: int) -> None:
    if getattr(live, "recording", False):
        live.set("http.response.status_code", status)
        if status >= 500 and live.error is None:
            live.error = ("error", "HTTPError", f"HTTP {status}")


def client_trace_config(*, spans: bool = True) -> TraceConfig:
    """A :class:`aiohttp.TraceConfig` that sends ``traceparent`` with every request.

    With ``spans=True`` each request also gets a client span (``"METHOD host"``)
    whose id is the one sent; with ``spans=False`` the current span's is sent.
    """
    config = TraceConfig(trace_config_ctx_factory=_ClientContext)

    async def on_request_start(session: Any, ctx: Any, params: Any) -> None:
        try:
            if _context.active is None:
                return
            if spans:
                url = params.url
                block = span(
                    f"{params.method} {url.host}",
                    **{"span.kind": "client", "http.request.method": params.method,
                       "server.address": url.host, "server.port": url.port, "url.path": url.path},
                )
                ctx.live = block.__enter__()
                ctx.block = block
            inject(params.headers)
        except Exception as exc:
            _report("starting an aiohttp client span", exc)

    async def on_request_end(session: Any, ctx: Any, params: Any) -> None:
        _end_client(ctx, status=params.response.status)

    async def on_request_exception(session: Any, ctx: Any, params: Any) -> None:
        _end_client(ctx, exc=params.exception)

    config.on_request_start.append(on_request_start)
    config.on_request_end.append(on_request_end)
    config.on_request_exception.append(on_request_exception)
    return config


class _ClientContext(SimpleNamespace):
    """Per-request state of the client trace config: the client span, if any."""

    def __init__(self, trace_request_ctx: Any = None) -> None:
        super().__init__(block=None, live=None, trace_request_ctx=trace_request_ctx)


def _end_client(ctx: Any, status: int | None = None, exc: BaseException | None = None) -> None:
    block = getattr(ctx, "block", None)
    if block is None:
        return
    ctx.block = None
    try:
        if status is not None:
            _set_status(ctx.live, status)
        block.__exit__(type(exc) if exc else None, exc, None)
    except Exception as error:
        _report("ending an aiohttp client span", error)


def _report(where: str, exc: BaseException) -> None:
    session = _context.active
    if session is not None:
        session.internal_error(where, exc)
