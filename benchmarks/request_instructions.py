"""Instructions per echo-like request, counted by valgrind's callgrind.

Times on this shared 2-core machine move by several per cent from run to run;
instruction counts do not. Each configuration of ``scheduler_overhead.py``'s
section 2b (a task woken through a future, then the request handler, traced or
not), plus the pure-Python floor of ``python_floor.py``, runs under callgrind
twice, with N and 2N requests; the difference divided by N is what one request
costs, start-up and imports cancelling out. Process-wide: the session's flusher
thread is counted too.

    python benchmarks/request_instructions.py [--requests 4000] [--loop asyncio|uvloop]

Needs ``valgrind`` on the PATH (Debian: ``apt-get install valgrind``). Takes about a
minute: every run is some 50 times slower under callgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import scheduler_overhead  # noqa: E402


def _child(config: str, requests: int, loop_name: str) -> None:
    """The measured run: ``requests`` echo-like requests in one configuration."""
    scheduler_overhead._per_request(scheduler_overhead._loops()[loop_name], config, requests)


def _instructions(config: str, requests: int, loop_name: str) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, os.path.abspath(__file__), "--child", config, str(requests), loop_name,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {config!r} failed: {done.stderr.strip()[-500:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "REQUESTS", "LOOP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config, requests, loop_name = args.child
        _child(config, int(requests), loop_name)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("request_instructions.py: valgrind is not on the PATH (Debian: apt-get install valgrind)")
    configs = list(scheduler_overhead._REQUEST_CONFIGS)
    n = args.requests
    jobs = [(config, count) for config in configs for count in (n, 2 * n)]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _instructions(job[0], job[1], args.loop), jobs)))
    print(f"Python {sys.version.split()[0]}, {args.loop} loop: instructions per echo-like request (callgrind, {n} vs {2 * n})")
    print(f"{'config':<18} {'instructions':>12} {'added':>9}")
    base = None
    for config in configs:
        per = (counts[(config, 2 * n)] - counts[(config, n)]) / n
        base = per if base is None else base
        print(f"{config:<18} {per:>12,.0f} {per - base:>+9,.0f}")
    print("(floor: python_floor.py, the least a pure-Python step probe with spans can do;")
    print(" all: + lag monitor and handle registry, which cost per loop iteration: one per request here)")


if __name__ == "__main__":
    main()
