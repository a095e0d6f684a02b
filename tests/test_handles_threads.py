"""The handle registry under threads opening and closing handles concurrently."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import asynclens
from asynclens.records import Leak
from asynclens.sinks import MemorySink

THREADS = 8
ROUNDS = 200


def test_concurrent_open_close_is_counted_exactly(tmp_path: Path) -> None:
    """Threads opening and closing files and sockets while another takes snapshots: every
    open is counted exactly once, nothing is reported open or leaked, no internal error."""
    path = tmp_path / "data"
    path.write_bytes(b"x")
    sink = MemorySink()
    start = threading.Barrier(THREADS + 1)
    done = threading.Event()
    snapshots: list[int] = []

    def churn() -> None:
        start.wait()
        for _ in range(ROUNDS):
            f = open(path, "rb")
            s = socket.socket()
            f.close()
            s.close()

    def watch(session: asynclens.Session) -> None:
        start.wait()
        while not done.is_set():
            snapshots.append(len(session.open_handles()))

    with asynclens.session([sink], lag=False, scheduler=False) as session:
        workers = [threading.Thread(target=churn) for _ in range(THREADS)]
        watcher = threading.Thread(target=watch, args=(session,))
        for thread in [*workers, watcher]:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        watcher.join()
        stats = session.statistics().probes["handles"]
    assert stats.opened["file"] == THREADS * ROUNDS
    assert stats.opened["socket"] == THREADS * ROUNDS
    assert stats.opened["thread"] == THREADS + 1
    assert stats.open_now == {}
    assert snapshots and max(snapshots) <= 2 * THREADS + THREADS + 1
    assert [r for r in sink.records if isinstance(r, Leak)] == []
    assert session.statistics().internal_errors == 0


def test_thread_still_running_at_session_end_is_a_leak() -> None:
    """A non-daemon thread started in the session and still alive at its end is reported."""
    sink = MemorySink()
    stop = threading.Event()
    with asynclens.session([sink], lag=False, scheduler=False), asynclens.span("spawner"):
        thread = threading.Thread(target=stop.wait, name="worker-1")
        thread.start()
    stop.set()
    thread.join()
    leaks = [r for r in sink.records if isinstance(r, Leak)]
    assert [(r.handle_kind, r.span_name) for r in leaks] == [("thread", "spawner")]
    assert "worker-1" in leaks[0].description and "test_handles_threads.py" in (leaks[0].site or "")
