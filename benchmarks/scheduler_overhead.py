"""Scheduler probe: correctness of the per-span breakdown, and what it costs.

1. Correctness, each scenario on asyncio and uvloop, figures next to the truth the planted
   code measured itself (``time.perf_counter_ns``, the session's clock):

   a. victim: a span awaits ``asyncio.sleep(0.3)`` while another task stalls the loop for
      300 ms from just before the sleep is due. yappi and OpenTelemetry report ~0.6 s "in
      sleep"; the ground truth is 0.3 s of waiting for the timer plus ~0.3 s starved by the
      loop. Budget: each category within 1 ms + 2 % of wall.
   b. back-to-back stalls: 60 ms of CPU in task A, then an 80 ms ``time.sleep`` in task B,
      in one loop iteration; then the loop runs on for 100 ms, or the run ends at once (the
      stalls are then reported while the session closes). Budget: two stalls, each one's
      duration within 2 ms of the truth, its line and cause right.
   c. multi-task request: a span gathers two children that sleep 50 ms (I/O) but cannot
      start for 100 ms (another task holds the loop with CPU), then one child burns 20 ms
      of CPU: truth ~20 ms CPU + ~100 ms starved + 50 ms I/O, along the critical path
      through the children. Budget: each category within 1 ms + 2 % of wall.
2. Per-operation cost: µs added per task step and per task creation (bare vs
   probe, interleaved), times steps per request of the echo service; then an
   echo-like request in one process (a task woken through a future, a traced
   handler): process CPU µs per request for each configuration, far steadier
   than the echo service's wall-clock throughput.
3. Echo-service throughput (``benchmarks/echo_service.py``): bare vs asynclens
   (spans, then spans + lag + handles + scheduler) vs OpenTelemetry's asyncio
   instrumentation vs yappi, interleaved rounds, paired ratios. Peers missing
   from the environment are skipped (``pip install -e '.[bench]'``).

Run: ``python benchmarks/scheduler_overhead.py`` (``--quick`` for a short run,
``--only correctness|ops|requests|throughput``; ``--only correctness`` alone takes under a
minute and exits 1 when a figure is out of its budget).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import asynclens  # noqa: E402
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import Span, Stall
from asynclens.testing import capture

MS = 1_000_000


def _loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("(uvloop not installed: asyncio loop only)")
    return loops


# ------------------------------------------------------------------ 1. correctness


def victim_once(
    factory: Callable[[], asyncio.AbstractEventLoop], sleep_s: float = 0.3, stall_s: float = 0.3
) -> dict[str, int]:
    truth: dict[str, int] = {}

    async def victim() -> None:
        with asynclens.span("victim"):
            t0 = time.perf_counter_ns()
            truth["sleep_call"] = t0
            await asyncio.sleep(sleep_s)
            truth["resumed"] = time.perf_counter_ns()

    async def staller() -> None:
        await asyncio.sleep(sleep_s - 0.002)  # stall from just before the victim's timer is due
        time.sleep(stall_s)

    async def main() -> None:
        await asyncio.gather(victim(), staller())

    loop = factory()
    try:
        with capture(probes=[SchedulerProbe()]) as cap:
            loop.run_until_complete(main())
    finally:
        loop.close()
    (span,) = [r for r in cap.records if isinstance(r, Span) and r.name == "victim"]
    due = truth["sleep_call"] + int(sleep_s * 1e9)
    true_io = due - span.start_ns
    true_starved = truth["resumed"] - due
    true_cpu = span.duration_ns - true_io - true_starved
    return {
        "wall": span.duration_ns,
        "cpu": span.cpu_ns or 0,
        "starved": span.sched_wait_ns or 0,
        "io": span.io_wait_ns or 0,
        "executor": span.executor_ns or 0,
        "true_cpu": true_cpu,
        "true_starved": true_starved,
        "true_io": true_io,
    }


def victim(loops: dict[str, Callable[[], asyncio.AbstractEventLoop]], repeats: int) -> bool:
    print("\n== 1a. victim: await asyncio.sleep(0.3) behind a 0.3 s stall (ms; reported | truth) ==")
    header = f"{'loop':<8} {'run':>3}  {'wall':>7}  {'CPU':>13}  {'starved by loop':>17}  {'I/O wait':>17}"
    header += f"  {'max err':>7}  {'budget':>6}  ok"
    print(header)
    all_ok = True
    for name, factory in loops.items():
        for i in range(repeats):
            r = victim_once(factory)
            err = max(abs(r["cpu"] - r["true_cpu"]), abs(r["starved"] - r["true_starved"]), abs(r["io"] - r["true_io"]))
            budget = MS + 0.02 * r["wall"]
            ok = err <= budget and r["cpu"] + r["starved"] + r["io"] + r["executor"] == r["wall"]
            all_ok &= ok
            print(
                f"{name:<8} {i + 1:>3}  {r['wall'] / MS:>7.1f}  {r['cpu'] / MS:>5.2f} | {r['true_cpu'] / MS:<5.2f}"
                f"  {r['starved'] / MS:>7.1f} | {r['true_starved'] / MS:<7.1f}"
                f"  {r['io'] / MS:>7.1f} | {r['true_io'] / MS:<7.1f}"
                f"  {err / MS:>7.3f}  {budget / MS:>6.2f}  {'yes' if ok else 'NO'}"
            )
    print("(a wall-clock profiler (yappi, OTel asyncio) charges the whole wall time to the sleep)")
    return all_ok


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # BURN
        pass


def _line_of(func: Callable[..., Any], marker: str) -> int:
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def _recorded(factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Any]) -> list[Any]:
    """The records of ``main()`` run on a new loop of ``factory`` under the default probes
    (lag and scheduler; handles off) and the default 50 ms stall threshold."""
    loop = factory()
    try:
        with capture(lag=True, scheduler=True) as cap:
            loop.run_until_complete(main())
    finally:
        loop.close()
    return cap.records  # after the session ended: the watchdog has turned every gap into stalls


def back_to_back_once(
    factory: Callable[[], asyncio.AbstractEventLoop], after_s: float, cpu_s: float = 0.06, sleep_s: float = 0.08
) -> tuple[dict[str, tuple[int, int]], list[Stall]]:
    truth: dict[str, tuple[int, int]] = {}

    async def burner() -> None:
        t0 = time.perf_counter_ns()
        _burn(cpu_s)
        truth["A"] = (t0, time.perf_counter_ns())

    async def sleeper() -> None:
        t0 = time.perf_counter_ns()
        time.sleep(sleep_s)  # noqa: ASYNC251  # SLEEP
        truth["B"] = (t0, time.perf_counter_ns())

    async def main() -> None:
        # both first steps are ready together: they run one after the other in one loop iteration
        await asyncio.gather(asyncio.create_task(burner(), name="A"), asyncio.create_task(sleeper(), name="B"))
        await asyncio.sleep(after_s)

    records = _recorded(factory, main)
    return truth, [r for r in records if isinstance(r, Stall)]


def back_to_back(loops: dict[str, Callable[[], asyncio.AbstractEventLoop]], repeats: int) -> bool:
    print(
        "\n== 1b. back-to-back stalls: 60 ms of CPU in task A, then time.sleep(0.08) in task B, one loop iteration =="
    )
    print("(ms; reported | truth; start from the truth of A's start; then: the loop runs on 100 ms, or the run ends)")
    print(
        f"{'loop':<8} {'run':>3}  {'then':<7}  {'stall':<5}  {'start':>15}  {'duration':>15}  {'err':>6}  {'line':>9}"
        f"  {'cause':>19}  {'budget':>6}  ok"
    )
    true_line = {"A": _line_of(_burn, "# BURN"), "B": _line_of(back_to_back_once, "# SLEEP")}
    true_cause = {"A": "cpu", "B": "blocking"}
    all_ok = True
    for name, factory in loops.items():
        for i in range(repeats):
            for after_s, then in ((0.1, "runs on"), (0.0, "ends")):
                truth, stalls = back_to_back_once(factory, after_s)
                origin = truth["A"][0]
                row = f"{name:<8} {i + 1:>3}  {then:<7}"
                for task in ("A", "B"):
                    lo, hi = truth[task]
                    mine = [s for s in stalls if s.task == task]
                    if len(mine) != 1:
                        all_ok = False
                        print(f"{row}  {task:<5}  NO: {len(mine)} stalls of task {task}: {mine}")
                        continue
                    (stall,) = mine
                    err = stall.duration_ns - (hi - lo)
                    ok = abs(err) <= 2 * MS and stall.line == true_line[task] and stall.cause == true_cause[task]
                    all_ok &= ok
                    print(
                        f"{row}  {task:<5}  {(stall.start_ns - origin) / MS:>6.2f} | {(lo - origin) / MS:<6.2f}"
                        f"  {stall.duration_ns / MS:>6.2f} | {(hi - lo) / MS:<6.2f}  {err / MS:>+6.2f}"
                        f"  {stall.line or 0:>4}|{true_line[task]:<4}  {stall.cause:>8} | {true_cause[task]:<8}"
                        f"  {2:>6.2f}  {'yes' if ok else 'NO'}"
                    )
                others = [s for s in stalls if s.task not in truth]
                if others:
                    all_ok = False
                    print(f"{row}  NO: other stalls: {others}")
    print("(each step over the threshold is a stall of its own: A's CPU is not blamed on B's sleep, nor merged)")
    return all_ok


def request_once(
    factory: Callable[[], asyncio.AbstractEventLoop], hog_s: float = 0.1, io_s: float = 0.05, burn_s: float = 0.02
) -> dict[str, Any]:
    t: dict[str, int] = {}
    now = time.perf_counter_ns

    async def hog(go: asyncio.Future[None]) -> None:
        await go
        _burn(hog_s)

    async def child(name: str, burn: float) -> None:
        t[name + ".start"] = now()
        await asyncio.sleep(io_s)
        t[name + ".resumed"] = now()
        _burn(burn)
        t[name + ".end"] = now()

    async def request(go: asyncio.Future[None]) -> None:
        with asynclens.span("request"):
            go.set_result(None)  # the hog is ready before the children are made: they start after it
            t["gather"] = now()
            await asyncio.gather(child("a", 0), child("b", burn_s))
            t["resumed"] = now()

    async def main() -> None:
        go = asyncio.get_running_loop().create_future()
        hog_task = asyncio.ensure_future(hog(go))
        await asyncio.sleep(0)  # the hog waits on ``go``
        await request(go)
        await hog_task

    records = _recorded(factory, main)
    (span,) = [r for r in records if isinstance(r, Span) and r.name == "request"]
    last = "a" if t["a.end"] > t["b.end"] else "b"  # the child that ended the gather: the critical path
    # starved: before the child could start, between its timer being due and it running, and
    # between its end and the request running again; I/O: the sleep, until its timer was due
    true_io = int(io_s * 1e9)
    due = t[last + ".start"] + true_io
    true_starved = (t[last + ".start"] - t["gather"]) + (t[last + ".resumed"] - due) + (t["resumed"] - t[last + ".end"])
    reported = {
        "cpu": span.cpu_ns or 0,
        "blocked": span.blocked_ns or 0,
        "starved": span.sched_wait_ns or 0,
        "io": span.io_wait_ns or 0,
        "executor": span.executor_ns or 0,
    }
    truth = {
        "cpu": span.duration_ns - true_io - true_starved,
        "blocked": 0,
        "starved": true_starved,
        "io": true_io,
        "executor": 0,
    }
    return {"wall": span.duration_ns, "reported": reported, "truth": truth, "held_up_by": span.held_up_by}


def multi_task_request(loops: dict[str, Callable[[], asyncio.AbstractEventLoop]], repeats: int) -> bool:
    print(
        "\n== 1c. multi-task request: gather of two 50 ms sleeps that cannot start for 100 ms (another task's CPU),"
        " then 20 ms of CPU in one child =="
    )
    print("(ms; reported | truth; along the critical path through the child that ended the gather)")
    cats = ("cpu", "blocked", "starved", "io", "executor")
    titles = {
        "cpu": "CPU",
        "blocked": "blocked",
        "starved": "starved by loop",
        "io": "I/O wait",
        "executor": "executor",
    }
    print(
        f"{'loop':<8} {'run':>3}  {'wall':>6}  "
        + "  ".join(f"{titles[c]:>15}" for c in cats)
        + f"  {'max err':>7}  {'budget':>6}  ok  held up by"
    )
    all_ok = True
    for name, factory in loops.items():
        for i in range(repeats):
            r = request_once(factory)
            rep, true = r["reported"], r["truth"]
            err = max(abs(rep[c] - true[c]) for c in cats)
            budget = MS + 0.02 * r["wall"]
            ok = err <= budget and sum(rep.values()) == r["wall"]
            all_ok &= ok
            cells = "  ".join(f"{rep[c] / MS:>6.2f} | {true[c] / MS:<6.2f}" for c in cats)
            print(
                f"{name:<8} {i + 1:>3}  {r['wall'] / MS:>6.1f}  {cells}  {err / MS:>7.3f}  {budget / MS:>6.2f}"
                f"  {'yes' if ok else 'NO ':<3} {r['held_up_by']}"
            )
    print("(the request's own task only waited on gather(): its children's time explains that wait)")
    return all_ok


def correctness(repeats: int, loop_names: list[str]) -> bool:
    loops = {name: factory for name, factory in _loops().items() if name in loop_names}
    ok = victim(loops, repeats)
    ok &= back_to_back(loops, repeats)
    return multi_task_request(loops, repeats) and ok


# ------------------------------------------------------------ 2. per-operation cost


def _per_op(factory: Callable[[], asyncio.AbstractEventLoop], probe: bool, steps: int) -> tuple[float, float, float]:
    async def stepper(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def creator(n: int) -> None:
        async def nothing() -> None:
            pass

        for _ in range(n):
            await asyncio.create_task(nothing())

    async def spans(n: int) -> None:
        for _ in range(n):
            with asynclens.span("s"):
                pass

    async def main() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        await asyncio.gather(stepper(steps // 2), stepper(steps // 2))
        t1 = time.perf_counter()
        await creator(steps // 10)
        t2 = time.perf_counter()
        await spans(steps)
        t3 = time.perf_counter()
        return (t1 - t0) / steps * 1e6, (t2 - t1) / (steps // 10) * 1e6, (t3 - t2) / steps * 1e6

    loop = factory()
    try:
        with asynclens.session(lag=False, track_handles=False, scheduler=probe, buffer_limit=10 * steps):
            return loop.run_until_complete(main())
    finally:
        loop.close()


def per_operation(repeats: int, steps: int) -> None:
    print(f"\n== 2. per-operation cost (µs, median of {repeats} interleaved runs; session on, scheduler off vs on) ==")
    print(
        f"{'loop':<8}  {'step off':>8}  {'step on':>7}  {'added':>6}  {'task off':>8}  {'task on':>7}  {'added':>6}"
        f"  {'span off':>8}  {'span on':>7}  {'added':>6}  {'est. per echo request':>21}"
    )
    for name, factory in _loops().items():
        runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for _ in range(repeats):
            for probe in (False, True):
                runs[probe].append(_per_op(factory, probe, steps))
        off = [statistics.median(r[i] for r in runs[False]) for i in range(3)]
        on = [statistics.median(r[i] for r in runs[True]) for i in range(3)]
        added = [b - a for a, b in zip(off, on)]
        per_request = added[0] + added[2]  # the connection task suspends once per request, one span per request
        print(
            f"{name:<8}  {off[0]:>8.2f}  {on[0]:>7.2f}  {added[0]:>6.2f}"
            f"  {off[1]:>8.2f}  {on[1]:>7.2f}  {added[1]:>6.2f}"
            f"  {off[2]:>8.2f}  {on[2]:>7.2f}  {added[2]:>6.2f}  {per_request:>17.2f} µs"
        )
    print("(task = create_task + its step + await; echo request = 1 step + 1 span: compare with bare CPU µs/req below)")


# ------------------------------------------------- 2b. echo-like request, in process

_OFF = {"lag": False, "track_handles": False, "scheduler": False}
#: name -> (session options, or None for no session; the request handler's wrapper)
_REQUEST_CONFIGS: dict[str, tuple[dict[str, bool] | None, str | None]] = {
    "bare": (None, None),
    "floor": (None, "floor"),  # python_floor.py: the least a pure-Python probe can do
    "spans": (_OFF, "trace"),
    "scheduler": ({**_OFF, "scheduler": True}, None),
    "spans+scheduler": ({**_OFF, "scheduler": True}, "trace"),
    "all": ({"lag": True, "track_handles": True, "scheduler": True}, "trace"),
}


def _per_request(factory: Callable[[], asyncio.AbstractEventLoop], config: str, n: int) -> float:
    """Process CPU µs per echo-like request: a task woken through a future (one step and
    one ``call_soon`` wake-up, like a connection task woken by its reader), then the
    request handler (traced or not). Process CPU includes the session's flusher thread
    and the flush of whatever is still buffered at the end."""
    options, wrap = _REQUEST_CONFIGS[config]

    async def echo(data: bytes) -> bytes:
        return data

    handler: Callable[[bytes], Any] = echo
    probes: Any = contextlib.nullcontext()
    if wrap == "trace":
        handler = asynclens.trace(name="echo")(echo)
    elif wrap == "floor":
        import python_floor

        handler = python_floor.span(echo)
        probes = python_floor.setup()
    loop = factory()
    try:
        session = asynclens.session(buffer_limit=2 * n, **options) if options is not None else None
        with session if session is not None else contextlib.nullcontext():

            async def main() -> float:
                lp = asyncio.get_running_loop()

                async def serve(k: int) -> None:
                    for _ in range(k):
                        fut = lp.create_future()
                        lp.call_soon(fut.set_result, b"x")
                        await handler(await fut)

                async with probes:  # the serving task is made inside: the floor's factory makes it
                    await asyncio.ensure_future(serve(n // 10))  # warm-up
                    if session is not None:
                        session.flush()
                    c0 = time.process_time()
                    await asyncio.ensure_future(serve(n))
                    if session is not None:  # what is still buffered costs its flush too
                        session.flush()
                    return (time.process_time() - c0) / n * 1e6

            return loop.run_until_complete(main())
    finally:
        loop.close()


def per_request(repeats: int, n: int) -> None:
    print(
        f"\n== 2b. echo-like request in one process (process CPU µs/request, median of {repeats} interleaved runs) =="
    )
    names = list(_REQUEST_CONFIGS)
    print(f"{'loop':<8}  " + "  ".join(f"{name:>16}" for name in names))
    for loop_name, factory in _loops().items():
        runs: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(repeats):
            for name in names:
                runs[name].append(_per_request(factory, name, n))
        med = {name: statistics.median(v) for name, v in runs.items()}
        base = med["bare"]
        cells = [f"{med['bare']:>16.2f}"] + [f"{med[k]:>8.2f} (+{med[k] - base:.2f})" for k in names[1:]]
        print(f"{loop_name:<8}  " + "  ".join(f"{c:>16}" for c in cells))
    print("(added µs per request: compare with the bare echo server's CPU µs/request in section 3;")
    print(" estimated throughput ratio of a CPU-bound server = bare / (bare + added))")


# ---------------------------------------------------------------- 3. throughput


def otel_asyncio_setup(**options: Any) -> Any:
    """Setup: OpenTelemetry SDK + the asyncio instrumentation (every coroutine/task traced)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    os.environ.setdefault("OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE", "_echo,handler,traced,on_client")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncioInstrumentor().instrument()
    return None


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def throughput(loops: list[str], rounds: int, seconds: float, clients: int) -> None:
    try:
        from echo_service import Variant, compare, print_table
    except ImportError:
        print("\n== 3. throughput: benchmarks/echo_service.py not found, skipped ==")
        return
    off = {"lag": False, "track_handles": False, "scheduler": False}
    variants: dict[str, Any] = {
        "bare": Variant(),
        "pure-Python floor (python_floor.py)": Variant(setup="python_floor:setup", wrap="python_floor:span"),
        "asynclens spans": Variant(
            setup="echo_service:asynclens_session", options=off, wrap="echo_service:asynclens_span"
        ),
        "asynclens spans+scheduler": Variant(
            setup="echo_service:asynclens_session",
            options={**off, "scheduler": True},
            wrap="echo_service:asynclens_span",
        ),
        "asynclens all (spans+lag+handles+sched)": Variant(
            setup="echo_service:asynclens_session",
            options={"lag": True, "track_handles": True, "scheduler": True},
            wrap="echo_service:asynclens_span",
        ),
    }
    if _have("opentelemetry.instrumentation.asyncio"):
        variants["OTel asyncio instr. + span/request"] = Variant(
            setup="scheduler_overhead:otel_asyncio_setup", wrap="echo_service:otel_span"
        )
    else:
        print("(opentelemetry-instrumentation-asyncio not installed: skipped)")
    if _have("yappi"):
        variants["yappi (wall clock)"] = Variant(setup="echo_service:yappi_setup", options={"clock": "wall"})
    else:
        print("(yappi not installed: skipped)")
    for loop in loops:
        results = compare(variants, clients=clients, seconds=seconds, rounds=rounds, loop=loop)
        print()
        print_table(
            results, title=f"== 3. echo service, {clients} clients, {loop} loop, {rounds} rounds x {seconds:g} s =="
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer rounds and repeats)")
    parser.add_argument(
        "--only",
        choices=["correctness", "ops", "requests", "throughput"],
        help="run one section: correctness (1: the victim, back-to-back stalls and multi-task request"
        " scenarios against their truth; under a minute; exit status 1 if a figure is out of budget),"
        " ops (2), requests (2b) or throughput (3)",
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both", help="loops to run on")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}")
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    ok = True
    if args.only in (None, "correctness"):
        ok = correctness(3 if args.quick else 5, loops)
        print(f"\nstalls and breakdowns within budget on every run: {'yes' if ok else 'NO'}")
    if args.only in (None, "ops"):
        per_operation(3 if args.quick else 5, 20_000 if args.quick else 60_000)
    if args.only in (None, "requests"):
        per_request(3 if args.quick else 5, 20_000 if args.quick else 40_000)
    if args.only in (None, "throughput"):
        if "uvloop" in loops and not _have("uvloop"):
            loops.remove("uvloop")
        throughput(
            loops, args.rounds or (3 if args.quick else 7), args.seconds or (1.0 if args.quick else 2.0), args.clients
        )
    if args.only == "correctness" and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
