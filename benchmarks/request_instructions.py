"""Instructions per request, counted by valgrind's callgrind.

Times on this shared 2-core machine move by several per cent from run to run;
instruction counts do not. Two workloads:

* ``task`` (default): a task per request, woken through a future a plain callback
  resolves, then a handler awaiting a child (both traced in the traced configs):
  what a connection-per-task server does per request;
* ``echo``: ``scheduler_overhead.py``'s section 2b, one long-lived task woken through
  a future per request, then the handler (traced or not);
* ``asgi``: ``asgi_service.py``'s FastAPI service driven in process through ASGI, without
  HTTP, on the chosen loop: 50 connections, each running its requests one after another in
  a task per request (as uvicorn does), the two endpoints in rotation. Its configurations
  are ``asgi_service.py``'s asynclens variants (``bare``, ``asynclens``, ``asynclens-spans``):
  the realistic service's per-request cost, free of the load generator and of timing noise.
  Under callgrind the program runs some ``SLOWDOWN`` times slower while the session's
  background threads keep real time, so their time-driven work (the lag monitor's ticks,
  the watchdog, which would take every step of the slowed loop for a stall, the flusher's
  batches, the scheduler's per-second budget of task records and its snapshot window)
  would count many times over per request: they are scaled by the same factor, so they do
  per request what they do at full speed.

Each configuration, plus the pure-Python floor of ``python_floor.py``, runs under
callgrind twice, with N and 2N requests; the difference divided by N is what one
request costs, start-up and imports cancelling out. Process-wide: the session's
flusher thread is counted too. Every configuration runs with the compiled core and
with the pure-Python fallback (``ASYNCLENS_PURE_PYTHON=1``), side by side.

    python benchmarks/request_instructions.py [--requests 4000] [--loop asyncio|uvloop] [--workload task|echo]

Needs ``valgrind`` on the PATH (Debian: ``apt-get install valgrind``). Takes about a
minute: every run is some 50 times slower under callgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import asgi_service  # noqa: E402
import scheduler_overhead  # noqa: E402

#: The added-instructions budgets of a request with every probe on (issue 18), by loop.
BUDGET = {"asyncio": 0.25, "uvloop": 0.5}


def _task_requests(factory: Callable[[], asyncio.AbstractEventLoop], config: str, n: int) -> None:
    """``n`` task-per-request requests in one configuration (see the module docstring)."""
    import asynclens

    options, wrap = scheduler_overhead._REQUEST_CONFIGS[config]

    async def child(data: bytes) -> bytes:
        return data

    async def handler(data: bytes) -> bytes:
        return await traced_child(data)

    traced_child: Callable[[bytes], Any] = child
    traced_handler: Callable[[bytes], Any] = handler
    probes: Any = contextlib.nullcontext()
    if wrap == "trace":
        traced_child = asynclens.trace(name="child")(child)
        traced_handler = asynclens.trace(name="handler")(handler)
    elif wrap == "floor":
        import python_floor

        traced_child, traced_handler = python_floor.span(child), python_floor.span(handler)
        probes = python_floor.setup()
    loop = factory()
    try:
        session = asynclens.session(buffer_limit=4 * n, **options) if options is not None else None
        with session if session is not None else contextlib.nullcontext():

            async def request(lp: asyncio.AbstractEventLoop) -> bytes:
                fut = lp.create_future()
                lp.call_soon(fut.set_result, b"x")
                return await traced_handler(await fut)  # type: ignore[no-any-return]

            async def main() -> None:
                lp = asyncio.get_running_loop()
                async with probes:  # the tasks are made inside: the floor's factory makes them
                    for _ in range(n):
                        await lp.create_task(request(lp))
                if session is not None:
                    session.flush()

            loop.run_until_complete(main())
    finally:
        loop.close()


#: The ``asgi`` workload's configurations: ``asgi_service.py``'s variants.
ASGI_CONFIGS = ("bare", "asynclens", "asynclens-spans")
ASGI_CONNECTIONS = 50
#: How much slower a Python program runs under callgrind (measured here: 50-80x).
SLOWDOWN = 50


def _asgi_requests(factory: Callable[[], asyncio.AbstractEventLoop], variant: str, n: int) -> None:
    """``n`` requests to the ``asgi_service.py`` app through ASGI (see the module docstring)."""
    from asynclens.probes.scheduler.probe import SchedulerProbe
    from asynclens.session import Session

    defaults = inspect.signature(Session.__init__).parameters
    timed = ("lag_interval", "stall_threshold", "flush_interval")
    asgi_service.SESSION_OPTIONS.update({name: SLOWDOWN * defaults[name].default for name in timed})
    # the scheduler probe's per-second budget of task records and its snapshot window, likewise
    probe_defaults = SchedulerProbe.__init__.__kwdefaults__
    probe_defaults["notable_per_second"] = max(1, probe_defaults["notable_per_second"] // SLOWDOWN)
    probe_defaults["window"] = probe_defaults["window"] * SLOWDOWN
    inst = asgi_service.INSTRUMENTATIONS[variant]()
    app = asgi_service.build_app(inst)
    mix = asgi_service.request_mix()
    scopes = []
    for method, target, body in mix:
        path, _, query = target.partition("?")
        headers = [(b"host", b"127.0.0.1")]
        if body is not None:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        scopes.append((scope, body or b""))

    async def one(scope: dict[str, Any], body: bytes) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        status = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        if status != [200]:
            raise SystemExit(f"asgi workload: {scope['method']} {scope['path']} answered {status}")

    async def connection(k: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        for j in range(count):
            await loop.create_task(one(*scopes[(k + j) % len(scopes)]))

    async def main() -> None:
        per, extra = divmod(n, ASGI_CONNECTIONS)
        await asyncio.gather(*(connection(k, per + (k < extra)) for k in range(ASGI_CONNECTIONS)))

    loop = factory()
    try:
        with inst.around():
            loop.run_until_complete(main())
    finally:
        loop.close()


def _child(config: str, requests: int, loop_name: str, workload: str) -> None:
    """The measured run: ``requests`` requests in one configuration."""
    factory = scheduler_overhead._loops()[loop_name]
    if workload == "asgi":
        _asgi_requests(factory, config, requests)
    elif workload == "task":
        _task_requests(factory, config, requests)
    else:
        scheduler_overhead._per_request(factory, config, requests)


def _instructions(config: str, requests: int, loop_name: str, workload: str, pure: bool) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, os.path.abspath(__file__), "--child", config, str(requests), loop_name, workload,
    ]  # fmt: skip
    env = {**os.environ, "ASYNCLENS_PURE_PYTHON": "1" if pure else ""}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {config!r} failed: {done.stderr.strip()[-500:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--workload", choices=["task", "echo", "asgi"], default="task")
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "REQUESTS", "LOOP", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config, requests, loop_name, workload = args.child
        _child(config, int(requests), loop_name, workload)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("request_instructions.py: valgrind is not on the PATH (Debian: apt-get install valgrind)")
    import asynclens

    if asynclens.IMPLEMENTATION != "c":
        print("request_instructions.py: the compiled core is not built here: both columns are pure Python")
    configs = list(ASGI_CONFIGS if args.workload == "asgi" else scheduler_overhead._REQUEST_CONFIGS)
    n = args.requests
    jobs = [(config, count, pure) for config in configs for count in (n, 2 * n) for pure in (False, True)]
    # the floor and bare run no asynclens code: once is enough
    jobs = [job for job in jobs if job[0] not in ("floor", "bare") or not job[2]]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(
            zip(jobs, pool.map(lambda job: _instructions(job[0], job[1], args.loop, args.workload, job[2]), jobs))
        )

    def per(config: str, pure: bool) -> float:
        if (config, n, pure) not in counts:
            pure = False
        return (counts[(config, 2 * n, pure)] - counts[(config, n, pure)]) / n

    print(
        f"Python {sys.version.split()[0]}, {args.loop} loop, {args.workload} workload: "
        f"instructions per request (callgrind, {n} vs {2 * n})"
    )
    print("| config | compiled core | added | × bare | pure Python | added | × bare |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = per("bare", False)
    for config in configs:
        cells = [config]
        for pure in (False, True):
            count = per(config, pure)
            cells += [f"{count:,.0f}", f"{count - base:+,.0f}", f"{(count - base) / base:.2f}"]
        print("| " + " | ".join(cells) + " |")
    if args.workload == "asgi":
        for config, budget, label in asgi_service.BUDGETS:
            if config not in configs:
                continue
            ratio = per(config, False) / base
            verdict = "met" if ratio <= budget else "NOT met"
            print(f"budget ({label}): ≤ {budget}× bare's instructions per request: {ratio:.2f}× ({verdict})")
        return
    added = (per("all", False) - base) / base
    verdict = "met" if added <= BUDGET[args.loop] else "NOT met"
    print(f"budget: every probe on adds ≤ {BUDGET[args.loop]}× bare on {args.loop}: {added:.2f}× ({verdict})")
    print("(floor: python_floor.py, the least a pure-Python step probe with spans can do;")
    print(" all: every probe, as a default session: + lag monitor and handle registry, per loop iteration)")


if __name__ == "__main__":
    main()
