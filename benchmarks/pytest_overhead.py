"""Wall time of a suite of small async tests with and without ``--asynclens``.

Generates ``--tests`` tiny pytest-asyncio tests (each awaits a traced coroutine
a few times) into a temporary directory and runs the suite in a fresh pytest
process per variant, the variants interleaved over ``--rounds`` rounds so that
machine noise hits both alike. Prints the median wall time of each variant and
its ratio to the bare run, the ratio of each round's pair, and what
``--asynclens`` costs per test (the CPU time it adds over the bare run, divided
by the number of tests; fixed costs included).

The children write and use bytecode caches (``PYTHONDONTWRITEBYTECODE`` is
dropped from their environment) as an ordinary install does; otherwise every
run would compile pytest, pytest-asyncio and asynclens from source and the bare
run would measure mostly that.

    python benchmarks/pytest_overhead.py [--tests 500] [--rounds 5]

Budget (issue 7): ``--asynclens`` adds at most 15 % to the 500-test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

TEST_TEMPLATE = """
@pytest.mark.asyncio
async def test_{i}():
    for _ in range(3):
        assert await work({i}) == {i}
"""

HEADER = """
import asyncio
import pytest
import asynclens

@asynclens.trace
async def work(n):
    await asyncio.sleep(0)
    return n
"""

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""

VARIANTS = {
    "bare": [],
    "--asynclens": ["--asynclens"],
}


def write_suite(root: str, tests: int, per_file: int = 50) -> None:
    with open(os.path.join(root, "pytest.ini"), "w") as f:
        f.write(INI)
    for start in range(0, tests, per_file):
        body = HEADER + "".join(TEST_TEMPLATE.format(i=i) for i in range(start, min(tests, start + per_file)))
        with open(os.path.join(root, f"test_gen_{start // per_file:03d}.py"), "w") as f:
            f.write(textwrap.dedent(body))


def run(root: str, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one pytest process."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        cmd, check=False, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"suite failed under {extra or 'bare'}:\n{done.stdout[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="asynclens-pytest-bench-") as root:
        write_suite(root, args.tests)
        run(root, [])  # warm the import and bytecode caches
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                w, c = run(root, VARIANTS[name])
                wall[name].append(w)
                cpu[name].append(c)
    bare_wall, bare_min, bare_cpu = statistics.median(wall["bare"]), min(wall["bare"]), statistics.median(cpu["bare"])
    print(
        f"pytest suite of {args.tests} async tests, {args.rounds} interleaved rounds, Python {sys.version.split()[0]}"
    )
    print(
        f"{'variant':<13} {'wall med s':>10} {'ratio':>6} {'wall min s':>10} {'ratio':>6} {'cpu med s':>9} {'ratio':>6}"
    )
    for name in VARIANTS:
        w, m, c = statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:<13} {w:>10.3f} {w / bare_wall:>6.3f} {m:>10.3f} {m / bare_min:>6.3f} {c:>9.3f} {c / bare_cpu:>6.3f}"
        )
    pairs = [lens / plain for lens, plain in zip(wall["--asynclens"], wall["bare"])]
    print("per-round wall ratio --asynclens/bare: " + " ".join(f"{r:.3f}" for r in pairs))
    print(f"median of per-round ratios: {statistics.median(pairs):.3f} (budget: <= 1.15)")
    added_us = (statistics.median(cpu["--asynclens"]) - bare_cpu) / args.tests * 1e6
    print(f"--asynclens adds {added_us:.0f} us of CPU per test (median CPU difference / {args.tests} tests)")


if __name__ == "__main__":
    main()
