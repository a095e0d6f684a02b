"""A small asyncio HTTP service with the mistakes asynclens is made to find.

Run it under asynclens and open the report::

    python -m asynclens run examples/service.py -o report.html

It starts a server on 127.0.0.1 (a free port), sends it some ordinary traffic and then a
burst of four requests that arrive together, from a client in the same process, and exits
(about a second). Standard library only; it also runs without asynclens
(``python examples/service.py``).

The mistakes, on purpose, each made once and each well clear of the default 50 ms stall
threshold (about 3x), so that every run shows every one of them:

* ``/search``  CPU-heavy scoring in the handler: 150 ms of CPU on the event loop (cause: cpu);
* ``/report``  a blocking call, ``time.sleep(0.15)`` standing in for a sync database driver
  (cause: blocking); in the burst it runs right after ``/search``, in the same loop iteration,
  and is still a stall of its own;
* ``/proxy``   opens a connection upstream and never closes it (a leaked connection);
* ``/health``  a trivial request (one quick database ping) that arrives with the burst: it is
  starved behind ``/search`` and ``/report`` (it waits for the loop, not for I/O);
* ``/user/N``  the well-behaved one: two queries in parallel tasks (``gather``) and a password
  hash in a thread pool, plus a fire-and-forget audit task that outlives the request. In the
  burst its queries cannot start until ``/search`` and ``/report`` let go of the loop: its
  breakdown follows its critical path into the child tasks and shows that wait as "starved by
  the loop", not as I/O.

Each mistake's line carries a ``# mistake:`` comment (the tests find the lines by it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import asynclens

#: CPU time ``/search`` spends scoring: a budget rather than a number of documents, so that
#: the stall is the same size on a fast machine and a slow one.
SEARCH_CPU_S = 0.15
#: How long ``/report`` blocks the loop.
REPORT_BLOCK_S = 0.15
#: The requests of the burst, in the order they arrive (all four in one loop iteration).
BURST = ("/health?burst", "/user/42", "/search?q=asyncio", "/report")

_LEAKED: list[asyncio.StreamWriter] = []  # the leaked upstream connections (kept open on purpose)
_open_connections = 0  # connections the server is handling now


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
    with asynclens.span("score_documents", cpu_budget_ms=int(SEARCH_CPU_S * 1000)):
        score = score_documents(query_text, SEARCH_CPU_S)
    return f"best score {score}"


def score_documents(query_text: str, budget_s: float) -> int:
    """Score documents against the query until ``budget_s`` of CPU time is spent."""
    best = first = 0
    deadline = time.thread_time() + budget_s
    while time.thread_time() < deadline:
        docs = range(first, first + 500)
        best = max(best, *[sum([doc * ord(ch) % 97 for ch in query_text]) for doc in docs])  # mistake: CPU on the loop
        first += 500
    return best


@asynclens.trace(name="handler.report")
async def handle_report() -> str:
    with asynclens.span("render_report"):
        time.sleep(REPORT_BLOCK_S)  # noqa: ASYNC251  # mistake: a blocking call on the loop (a sync DB driver)
    return "report ready"


@asynclens.trace(name="handler.proxy")
async def handle_proxy(upstream_port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream_port)  # mistake: never closed
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    await writer.drain()
    line = await reader.readline()
    _LEAKED.append(writer)
    return f"upstream said {line.decode().strip()}"


async def handle_health() -> str:
    await query("health", 0)
    return "ok"


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    global _open_connections
    _open_connections += 1
    try:
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
    finally:
        _open_connections -= 1


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data.decode().rpartition("\r\n\r\n")[2]


async def client(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    await writer.drain()
    return await answer(reader, writer)


async def burst(port: int) -> list[str]:
    """The burst's requests, sent together once the server waits on every connection: their
    handlers then run one after another in one loop iteration, in the order sent."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in BURST]
    while _open_connections < len(BURST):
        await asyncio.sleep(0.005)
    for (_, writer), path in zip(connections, BURST):
        writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    return await asyncio.gather(*(answer(reader, writer) for reader, writer in connections))


async def main() -> None:
    port_box: list[int] = []
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, port_box[0]), "127.0.0.1", 0)
    port_box.append(server.sockets[0].getsockname()[1])
    port = port_box[0]
    paths = []
    for i in range(6):
        paths += [f"/user/{i}", "/health", f"/user/{i + 10}"]
        if i == 2:
            paths.append("/proxy")
    limit = asyncio.Semaphore(6)

    async def one(path: str) -> str:
        async with limit:
            return await client(port, path)

    answers = await asyncio.gather(*(one(p) for p in paths))
    await asyncio.sleep(0.1)  # let the audit tasks finish
    answers += await burst(port)
    await asyncio.sleep(0.5)  # serve on a moment, as a server does, before shutting down
    server.close()
    print(f"served {len(answers)} requests on port {port}; {len(_LEAKED)} upstream connections left open")


if __name__ == "__main__":
    asyncio.run(main())
