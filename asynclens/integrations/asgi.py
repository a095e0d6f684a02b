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
    if route is None:
        return None
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
        self._connection_attrs: dict[Any, dict[str, Any]] = {}

    @staticmethod
    def _parent(scope: Scope) -> Any:
        """The caller's span from a ``traceparent`` header, if there is one."""
        headers = scope.get("headers") or ()
        if isinstance(headers, list):  # ASGI: (name, value) pairs, names lower-case bytes
            for pair in headers:
                name = pair[0] if type(pair) is tuple and len(pair) == 2 else None
                if name == b"traceparent" or type(name) is not bytes:  # or not plain ASGI: extract() reads it
                    break
            else:
                return None
        return extract(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _context.active is None or scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            request = _Request(self, scope, send)
            parent = self._parent(scope) if self.trust_traceparent else None
            block = span(request.name, parent=parent, **request.attrs())
        except Exception as exc:  # never fail a request because of asynclens
            _report("starting an ASGI request span", exc)
            await self.app(scope, receive, send)
            return
        with block as live:
            request.live = live if live.recording else None  # None: the session ended meanwhile
            try:
                await self.app(scope, receive, request.send)
            finally:
                request.name_it()


class _Request:
    """What the middleware knows about one request while it runs; :meth:`send` is the
    ``send`` the application gets."""

    __slots__ = ("_send", "live", "method", "middleware", "name", "named", "path", "scope", "status")

    def __init__(self, middleware: AsgiMiddleware, scope: Scope, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self._send = send
        method = scope.get("method")
        self.method = method if type(method) is str and method else str(method or "GET")
        path = scope.get("path")
        self.path = path if isinstance(path, str) and path else "/"
        self.name = f"{self.method} {self.path}"
        self.status: int | None = None
        self.live: Any = None
        self.named = False

    def attrs(self) -> dict[str, Any]:
        scope = self.scope
        middleware = self.middleware
        # the attributes of the connection, the same for every request on it: built once per
        # (scheme, version, server) (a server has few) and copied
        server = scope.get("server")
        if server is not None and type(server) is not tuple:  # a list: a key needs it hashable
            server = tuple(server)
        key = (scope.get("scheme"), scope.get("http_version"), server)
        connection = middleware._connection_attrs.get(key)
        if connection is None:
            connection = _connection_attrs(*key)
            if len(middleware._connection_attrs) < _MAX_CONNECTION_KINDS:
                middleware._connection_attrs[key] = connection
        attrs = connection.copy()
        attrs["http.request.method"] = self.method
        attrs["url.path"] = self.path
        client = scope.get("client") if middleware.record_client else None
        if client and len(client) == 2:
            attrs["client.address"], attrs["client.port"] = str(client[0]), client[1]
        return attrs

    def send(self, message: Message) -> Awaitable[None]:
        """The application's ``send``: the server's, returning its awaitable, except for
        the last body chunk, which ends the span once it has been sent. A plain function
        rather than a coroutine function: one coroutine less per message."""
        try:
            kind = message.get("type")
            if kind == "http.response.start":
                live = self.live
                if live is not None and not live.end_ns:
                    status = message.get("status")
                    if isinstance(status, int):
                        self.status = status
                        live.set("http.response.status_code", status)
                    live.event("http.response.start")
            elif kind == "http.response.body" and not message.get("more_body", False):
                return self._send_last(message)
        except Exception as exc:
            _report("reading an ASGI response message", exc)
        return self._send(message)

    async def _send_last(self, message: Message) -> None:
        await self._send(message)
        self.end_early()

    def name_it(self) -> None:
        """Final name (route known only after routing) and error status for 5xx."""
        live = self.live
        if self.named or live is None or live.end_ns:
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
        if live is not None and not live.end_ns:
            self.name_it()
            live._end()


_MAX_CONNECTION_KINDS = 64


def _connection_attrs(scheme: Any, version: Any, server: Any) -> dict[str, Any]:
    """A request span's attributes that come from its connection."""
    attrs: dict[str, Any] = {"span.kind": "server", "url.scheme": str(scheme or "http")}
    if version:
        attrs["network.protocol.version"] = str(version)
    if server and len(server) == 2 and server[1] is not None:
        attrs["server.address"], attrs["server.port"] = str(server[0]), server[1]
    return attrs


def _report(where: str, exc: BaseException) -> None:
    session = _context.active
    if session is not None:
        session.internal_error(where, exc)
