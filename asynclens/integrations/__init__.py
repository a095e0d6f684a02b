"""Web framework integrations: request root spans that continue W3C ``traceparent``.

* :mod:`asynclens.integrations.asgi`: pure ASGI 3 middleware (Starlette, FastAPI,
  Quart, Django ASGI, plain apps; no framework dependency).
* :mod:`asynclens.integrations.aiohttp`: aiohttp server middleware and a client
  trace config that injects ``traceparent`` (imported only when used).
"""

from __future__ import annotations

__all__: list[str] = []
