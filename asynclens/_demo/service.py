"""A small asyncio HTTP service with the mistakes asynclens is made to find.

Run it under asynclens and open the report::

    python -m asynclens run examples/service.py -o report.html

It starts a server on 127.0.0.1 (a free port), sends it a bounded burst of
requests from a client in the same process, and exits (about two seconds).
Standard library only; it also runs without asynclens (``python examples/service.py``).

The mistakes, on purpose:

* ``/search``  CPU-heavy scoring in the handler: the event loop is stalled (cause: cpu);
* ``/report``  a blocking call (``time.sleep`` standing in for a sync database driver);
* ``/proxy``   opens a connection upstream and never closes it (a leaked socket);
* ``/health``  a trivial request starved behind the others (waits for the loop, not for I/O);
* ``/user/N``  the well-behaved one: two queries in parallel tasks and a password hash in a
  thread pool, so its slivers spread over several tasks and threads, plus a fire-and-forget
  audit task that outlives the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import asynclens

_LEAKED: list[asyncio.StreamWriter] = []  # the leaked upstream connections (kept open on purpose)


@asynclens.trace(name="db.query")
async def query(table: str, key: int) -> dict[str, object]:
    await asyncio.sleep(0.004 + (key % 3) * 0.002)  # a well-behaved async driver
    return {"table": table, "key": key}


def _hash_password(key: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", b"secret", str(key).encode(), 20_000).hex()


@asynclens.trace
async def audit(event: str) -> None:
    await asyncio.sleep(0.05)  # outlives the request that started it


@asynclens.trace(name="handler.user")
async def handle_user(key: int) -> str:
    user, orders = await asyncio.gather(query("users", key), query("orders", key))
    digest = await asyncio.get_running_loop().run_in_executor(None, _hash_password, key)
    asyncio.ensure_future(audit(f"viewed user {key}"))  # fire and forget
    return f"user {user['key']} with orders {orders['key']} ({digest[:8]})"


@asynclens.trace(name="handler.search")
async def handle_search(query_text: str) -> str:
    with asynclens.span("score_documents", documents=80_000):
        score = score_documents(query_text)  # pure-Python CPU work on the event loop
    return f"best score {score}"


def score_documents(query_text: str) -> int:
    best = 0
    for doc in range(80_000):
        score = sum((doc * ord(ch)) % 97 for ch in query_text)
        best = max(best, score)
    return best


@asynclens.trace(name="handler.report")
async def handle_report() -> str:
    with asynclens.span("render_report"):
        time.sleep(0.08)  # noqa: ASYNC251 - on purpose: a blocking call inside a coroutine (a sync DB driver)
    return "report ready"


@asynclens.trace(name="handler.proxy")
async def handle_proxy(upstream_port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    await writer.drain()
    line = await reader.readline()
    _LEAKED.append(writer)  # never closed: a leaked connection
    return f"upstream said {line.decode().strip()}"


async def handle_health() -> str:
    return "ok"


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    request = (await reader.readline()).decode()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    method, path, _ = (request.split() + ["", "", ""])[:3]
    async with asynclens.span(f"{method} {path.split('?')[0].rstrip('0123456789')}", path=path):
        if path.startswith("/search"):
            body = await handle_search(path.partition("q=")[2] or "asyncio")
        elif path.startswith("/report"):
            body = await handle_report()
        elif path.startswith("/proxy"):
            body = await handle_proxy(port)
        elif path.startswith("/user/"):
            body = await handle_user(int(path.rsplit("/", 1)[1]))
        else:
            body = await handle_health()
    writer.write(f"HTTP/1.0 200 OK\r\ncontent-length: {len(body)}\r\n\r\n{body}".encode())
    await writer.drain()
    writer.close()


async def client(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data.decode().rpartition("\r\n\r\n")[2]


async def main() -> None:
    port_box: list[int] = []
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, port_box[0]), "127.0.0.1", 0)
    port_box.append(server.sockets[0].getsockname()[1])
    port = port_box[0]
    paths = []
    for i in range(6):
        paths += [f"/user/{i}", f"/user/{i + 10}", "/health", f"/search?q=loop{i}", "/health"]
        if i % 2 == 0:
            paths.append("/report")
        if i % 3 == 0:
            paths.append("/proxy")
    limit = asyncio.Semaphore(6)

    async def one(path: str) -> str:
        async with limit:
            return await client(port, path)

    answers = await asyncio.gather(*(one(p) for p in paths))
    await asyncio.sleep(0.1)  # let the audit tasks finish
    server.close()
    print(f"served {len(answers)} requests on port {port}; {len(_LEAKED)} upstream connections left open")


if __name__ == "__main__":
    asyncio.run(main())
