"""Memory stays flat while spans stream to a file: RSS growth for N spans written
to a JSON lines file, and how many the bounded buffer had to drop.

    python benchmarks/streaming_memory.py [--spans 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import asynclens


@asynclens.trace(name="op")
def op() -> None:
    pass


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream.jsonl")
        before = rss_mb()
        start = time.perf_counter()
        with asynclens.session(sinks=[path], lag=False, track_handles=False, scheduler=False) as s:
            with asynclens.span("root"):
                for _ in range(opts.spans):
                    op()
        elapsed = time.perf_counter() - start
        stats = s.statistics()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size = os.path.getsize(path) / 2**20
    print(f"{opts.spans} spans in {elapsed:.1f} s ({opts.spans / elapsed:,.0f}/s), file {size:.0f} MB")
    print(f"RSS before {before:.0f} MB, peak {peak:.0f} MB: growth {peak - before:.0f} MB (budget 50 MB)")
    print(f"recorded {stats.spans_recorded}, dropped {stats.records_dropped} (buffer limit {stats.buffer_limit})")


if __name__ == "__main__":
    main()
