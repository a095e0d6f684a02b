"""The pytest plugin on real test suites: bare runs against ``--asynclens`` runs.

For each suite (a well-known asyncio library whose sdist ships its tests), this
downloads the pinned sdist with ``pip download`` into ``--cache`` (default
``.cache/real-suites/``, ignored by git), unpacks it, makes one virtual
environment per suite with the library, its test dependencies and asynclens
(``pip install -e`` of this checkout), and runs its tests three ways:

* ``bare``: plain pytest (the asynclens plugin is installed but idle);
* ``leaks=fail``: ``--asynclens --asynclens-leaks=fail``;
* ``max-stall``: ``--asynclens --asynclens-max-stall=100ms``.

It prints, per suite, the pass/fail/error/skip counts of each run, its wall time
(the median over ``--rounds`` interleaved rounds, after one untimed collection
that compiles the bytecode) and the ratio to the bare run's, then every test whose outcome differs from the
bare run with the first line of why (from each run's JUnit XML). Each run is
bounded by ``--timeout`` seconds; the logs and XML files stay in the cache.

    python benchmarks/real_suites.py [--suite NAME ...] [--rounds 1] [--timeout 900] [--cache DIR]

The first run needs PyPI (``pip download``/``pip install``); later runs reuse
the cache. A benchmark, not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON_DEPS = ["pytest==9.2.0", "pytest-asyncio==1.5.0", "pytest-timeout==2.4.0"]


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    deps: tuple[str, ...] = ()
    #: what to pass pytest, relative to the unpacked sdist
    args: tuple[str, ...] = ("tests",)
    #: the sdist's own addopts may name plugins the suite's CI adds (coverage): dropped
    no_addopts: bool = False
    pip_name: str = ""

    @property
    def dist(self) -> str:
        return self.pip_name or self.name


SUITES = {
    suite.name: suite
    for suite in (
        Suite("aiofiles", "25.1.0"),
        # test_benchmarks.py needs pytest-codspeed's benchmark fixture: a benchmark, not a test
        Suite("janus", "2.0.0", args=("tests", "--ignore=tests/test_benchmarks.py"), no_addopts=True),
        # its tests live in the package and are unittest cases; perf.py is a benchmark
        Suite("aiosqlite", "0.22.1", args=("aiosqlite/tests/smoke.py",)),
        # its ini turns warnings into errors, pytest-asyncio 1.x's unset-loop-scope one included
        Suite(
            "async_lru",
            "2.4.0",
            args=("tests", "-o", "asyncio_default_fixture_loop_scope=function"),
            pip_name="async-lru",
            no_addopts=True,
        ),
    )
}

VARIANTS = {
    "bare": [],
    "leaks=fail": ["--asynclens", "--asynclens-leaks=fail"],
    "max-stall": ["--asynclens", "--asynclens-max-stall=100ms"],
}

_SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


@dataclass
class Run:
    variant: str
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # nodeid -> (outcome, why)
    note: str = ""


def sh(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def prepare(suite: Suite, cache: str, python: str) -> tuple[str, str]:
    """The unpacked sdist and the venv's python for ``suite`` (made once, then reused)."""
    sdists = os.path.join(cache, "sdists")
    os.makedirs(sdists, exist_ok=True)
    prefixes = {f"{suite.name}-{suite.version}.tar.gz", f"{suite.dist}-{suite.version}.tar.gz"}
    found = [f for f in os.listdir(sdists) if f in prefixes]
    if not found:
        sh(
            [
                python,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{suite.dist}=={suite.version}",
                "-d",
                sdists,
            ]
        )
        found = [f for f in os.listdir(sdists) if f in prefixes]
    archive = os.path.join(sdists, found[0])
    src_root = os.path.join(cache, "src")
    src = os.path.join(src_root, found[0].removesuffix(".tar.gz"))
    if not os.path.isdir(src):
        with tarfile.open(archive) as tar:
            tar.extractall(src_root, filter="data")
    venv = os.path.join(cache, "venvs", f"{suite.name}-{suite.version}")
    vpython = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".installed")
    if not os.path.exists(stamp):
        shutil.rmtree(venv, ignore_errors=True)
        sh([python, "-m", "venv", venv])
        sh([vpython, "-m", "pip", "install", "-q", src, *COMMON_DEPS, *suite.deps, "-e", ROOT])
        with open(stamp, "w") as f:
            freeze = subprocess.run([vpython, "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
            f.write(freeze.stdout)
    return src, vpython


def run(suite: Suite, src: str, vpython: str, variant: str, cache: str, timeout: float) -> Run:
    logs = os.path.join(cache, "logs")
    os.makedirs(logs, exist_ok=True)
    base = os.path.join(logs, f"{suite.name}-{variant.replace('=', '-')}")
    cmd = [vpython, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--junitxml={base}.xml", "--timeout=60"]
    if suite.no_addopts:
        cmd += ["-o", "addopts="]
    cmd += [*suite.args, *VARIANTS[variant]]
    result = Run(variant)
    env = _env()
    start = time.perf_counter()
    with open(base + ".log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            subprocess.run(cmd, cwd=src, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            result.note = f"timed out after {timeout:.0f} s"
    result.wall_s = time.perf_counter() - start
    with open(base + ".log") as log:
        text = log.read()
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if summary:
        for count, what in _SUMMARY.findall(summary[-1]):
            what = {"error": "errors", "warning": "warnings"}.get(what, what)
            result.counts[what] = int(count)
    result.outcomes = outcomes(base + ".xml") if os.path.exists(base + ".xml") else {}
    return result


def outcomes(path: str) -> dict[str, tuple[str, str]]:
    """Each test case's outcome in a JUnit XML file; a teardown error counts as the test's."""
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        nodeid = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, why = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                tag = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                if outcome == "passed" or tag in ("failed", "error"):
                    outcome = tag
                    why = _why(child.get("message") or "", child.text or "")
        out[nodeid] = (outcome, why)
    return out


_FINDING = re.compile(r"^\s*(leaked |event loop blocked|task '.*' waited|a ready callback waited)")


def _why(message: str, text: str) -> str:
    """The first line of a failure, and for asynclens's its first finding's headline."""
    lines = (message or text).strip().splitlines()
    head = lines[0] if lines else ""
    finding = next((line.strip() for line in text.splitlines() if _FINDING.match(line)), None)
    return f"{head} | {finding}" if finding and "asynclens" in head else head


def report(suite: Suite, runs: list[Run]) -> None:
    bare = runs[0]
    print(f"\n{suite.name} {suite.version}")
    print(f"  {'run':<12} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8} {'wall s':>8} {'ratio':>6}")
    for r in runs:
        ratio = r.wall_s / bare.wall_s if bare.wall_s else float("nan")
        c = r.counts
        skipped = c.get("skipped", 0) + c.get("xfailed", 0)
        print(
            f"  {r.variant:<12} {c.get('passed', 0):>7} {c.get('failed', 0):>7} {c.get('errors', 0):>7}"
            f" {skipped:>8} {r.wall_s:>8.2f} {ratio:>6.2f}" + (f"  {r.note}" if r.note else "")
        )
    for r in runs[1:]:
        for nodeid in sorted(set(bare.outcomes) | set(r.outcomes)):
            was, now = bare.outcomes.get(nodeid, ("absent", "")), r.outcomes.get(nodeid, ("absent", ""))
            if was[0] != now[0]:
                print(f"  differs ({r.variant}): {nodeid}: {was[0]} -> {now[0]}: {now[1][:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="only this suite (repeatable)")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS)[1:], help="only this asynclens run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each pytest run may take")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; wall times are their medians")
    parser.add_argument("--cache", default=os.path.join(ROOT, ".cache", "real-suites"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter the venvs are made from")
    args = parser.parse_args()
    variants = ["bare", *(args.variant or list(VARIANTS)[1:])]
    cache = os.path.abspath(args.cache)
    for name in args.suite or list(SUITES):
        suite = SUITES[name]
        src, vpython = prepare(suite, cache, args.python)
        warm_up(suite, src, vpython, args.timeout)
        rounds = [[run(suite, src, vpython, v, cache, args.timeout) for v in variants] for _ in range(args.rounds)]
        runs = rounds[-1]  # outcomes and counts of the last round; wall time the median of all
        for i, r in enumerate(runs):
            r.wall_s = statistics.median(round_[i].wall_s for round_ in rounds)
        report(suite, runs)


def warm_up(suite: Suite, src: str, vpython: str, timeout: float) -> None:
    """Collect once, untimed: the first run would otherwise also compile every module."""
    cmd = [vpython, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "--asynclens"]
    if suite.no_addopts:
        cmd += ["-o", "addopts="]
    subprocess.run([*cmd, *suite.args], cwd=src, capture_output=True, timeout=timeout, env=_env(), check=False)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as an ordinary install has
    return env


if __name__ == "__main__":
    main()
