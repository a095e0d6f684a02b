"""ASGI 3 middleware: one root span per HTTP request.

::

    app = AsgiMiddleware(app)            # or: app.add_middleware(AsgiMiddleware) in Starlette/FastAPI

The span is named ``"METHOD route"`` when the framework reports the matched route
(Starlette/FastAPI put it in ``scope["route"]``; pass ``route=`` to read your own)
and ``"METHOD path"`` otherwise. It continues the caller's trace from
``traceparent``, carries ``http.request.method``, ``url.path``, ``http.route``,
``http.response.status_code`` (and ``client.address`` with ``record_client=True``),
marks the response start with an ``http.response.start`` event, and ends when the
last body chunk has been sent, so streaming responses are covered whole. 5xx
answers and exceptions mark the span as failed. ``lifespan`` and ``websocket``
scopes, and every request while no session records, pass straight through.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .._state import context as _context
from ..tracing.propagation import extract
from ..tracing.spans import span

__all__ = ["AsgiMiddleware", "route_of"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_of(scope: Scope) -> str | None:
    """The matched route template from a scope, if the framework recorded one."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None) or (route if isinstance(route, str) else None)
    return path if isinstance(path, str) else None


class AsgiMiddleware:
    """Wrap an ASGI 3 application so every HTTP request runs in a root span.

    Args:
        app: the ASGI application.
        route: ``scope -> str | None`` naming the route (default :func:`route_of`).
        record_client: add ``client.address``/``client.port`` (off by default: personal data).
        trust_traceparent: continue incoming ``traceparent`` headers (default True).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        route: Callable[[Scope], str | None] | None = None,
        record_client: bool = False,
        trust_traceparent: bool = True,
    ) -> None:
        if not callable(app):
            raise TypeError(f"AsgiMiddleware(app): expected an ASGI application, got {type(app).__name__}")
        self.app = app
        self.route = route or route_of
        self.record_client = record_client
        self.trust_traceparent = trust_traceparent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or _context.active is None:
            await self.app(scope, receive, send)
            return
        try:
            request = _Request(self, scope)
            block = span(request.initial_name(), parent=request.parent(), **request.attrs())
        except Exception as exc:  # never fail a request because of asynclens
            _report("starting an ASGI request span", exc)
            await self.app(scope, receive, send)
            return
        with block as live:
            request.live = live
            try:
                await self.app(scope, receive, request.wrap(send))
            finally:
                request.name_it()


class _Request:
    """What the middleware knows about one request while it runs."""

    __slots__ = ("live", "method", "middleware", "named", "path", "scope", "status")

    def __init__(self, middleware: AsgiMiddleware, scope: Scope) -> None:
        self.middleware = middleware
        self.scope = scope
        self.method = str(scope.get("method") or "GET")
        path = scope.get("path")
        self.path = path if isinstance(path, str) and path else "/"
        self.status: int | None = None
        self.live: Any = None
        self.named = False

    def initial_name(self) -> str:
        return f"{self.method} {self.path}"

    def parent(self) -> Any:
        return extract(self.scope.get("headers") or ()) if self.middleware.trust_traceparent else None

    def attrs(self) -> dict[str, Any]:
        scope = self.scope
        attrs: dict[str, Any] = {
            "span.kind": "server",
            "http.request.method": self.method,
            "url.path": self.path,
            "url.scheme": str(scope.get("scheme") or "http"),
        }
        if scope.get("http_version"):
            attrs["network.protocol.version"] = str(scope["http_version"])
        server = scope.get("server")
        if server and len(server) == 2 and server[1] is not None:
            attrs["server.address"], attrs["server.port"] = str(server[0]), server[1]
        client = scope.get("client")
        if self.middleware.record_client and client and len(client) == 2:
            attrs["client.address"], attrs["client.port"] = str(client[0]), client[1]
        return attrs

    def wrap(self, send: Send) -> Send:
        async def traced_send(message: Message) -> None:
            try:
                self.observe(message)
            except Exception as exc:
                _report("reading an ASGI response message", exc)
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                self.end_early()

        return traced_send

    def observe(self, message: Message) -> None:
        live = self.live
        if not getattr(live, "recording", False):
            return
        if message.get("type") == "http.response.start":
            status = message.get("status")
            if isinstance(status, int):
                self.status = status
                live.set("http.response.status_code", status)
            live.event("http.response.start")

    def name_it(self) -> None:
        """Final name (route known only after routing) and error status for 5xx."""
        live = self.live
        if self.named or not getattr(live, "recording", False):
            return
        self.named = True
        try:
            route = self.middleware.route(self.scope)
            if route:
                live.set("http.route", route)
                live.name = f"{self.method} {route}"
            if self.status is not None and self.status >= 500 and live.error is None:
                live.error = ("error", "HTTPError", f"HTTP {self.status}")
        except Exception as exc:
            _report("naming an ASGI request span", exc)

    def end_early(self) -> None:
        """The last body chunk went out: the request is over, even if the app runs on."""
        live = self.live
        if getattr(live, "recording", False):
            self.name_it()
            live._end()


def _report(where: str, exc: BaseException) -> None:
    session = _context.active
    if session is not None:
        session.internal_error(where, exc)
