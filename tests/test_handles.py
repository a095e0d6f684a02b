"""The open-handle registry: leaks of every kind, GC-closed handles, snapshots, I/O, clean removal."""

from __future__ import annotations

import asyncio
import builtins
import gc
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
import weakref
from asyncio import runners, selector_events, unix_events
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

import asynclens
from asynclens.probes.handles import patches as _handle_patches
from asynclens.probes.handles import tcp_counters as _tcp_counters
from asynclens.records import HandleRecord, IoRates, Leak, Span
from asynclens.sinks import JsonLinesSink, MemorySink

SOURCE = Path(__file__).read_text().splitlines()
HERE = os.path.relpath(__file__)
SLEEPER = (sys.executable, "-c", "import time; time.sleep(30)")  # sites are relative to the working directory


def line_of(marker: str) -> int:
    """The line of this file that carries ``# <marker>``."""
    hits = [i for i, text in enumerate(SOURCE, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def at(marker: str, function: str) -> str:
    if sys.version_info < (3, 11):  # no co_qualname: sites name the bare function
        function = function.rsplit(".", 1)[-1]
    return f"{HERE}:{line_of(marker)} in {function}"


def make_session(*sinks: Any, **options: Any) -> asynclens.Session:
    options.setdefault("lag", False)
    options.setdefault("scheduler", False)
    return asynclens.session(list(sinks), **options)


async def close_both(writer: asyncio.StreamWriter, server: asyncio.AbstractServer) -> None:
    """Close a client connection, then its server, waiting for each."""
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return RUNNERS[request.param]


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Objects a test leaked on purpose, released after it."""
    keep: list[Any] = []
    yield keep
    for obj in keep:
        if isinstance(obj, threading.Event):
            obj.set()
    for obj in reversed(keep):
        if isinstance(obj, subprocess.Popen):
            obj.kill()
            obj.wait()
        elif isinstance(obj, threading.Event):
            obj.set()
        elif isinstance(obj, threading.Thread):
            obj.join()
        elif hasattr(obj, "close"):
            obj.close()


async def sleeper() -> None:
    await asyncio.sleep(30)  # TASK-AWAIT


@asynclens.trace(name="leaky.request")
async def leaky_request(port: int, keep: list[Any]) -> None:
    keep.append(open(__file__))  # LEAK-FILE
    keep.append(os.fdopen(os.open(__file__, os.O_RDONLY), "rb"))  # LEAK-FDOPEN
    keep.append(socket.socket())  # LEAK-SOCKET
    keep.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))  # LEAK-POPEN
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # LEAK-TRANSPORT
    keep.append(writer)
    keep.append(asyncio.get_running_loop().create_task(sleeper(), name="leaked-task"))
    stop = threading.Event()
    keep.append(stop)
    thread = threading.Thread(target=stop.wait, name="leaked-thread")
    thread.start()  # LEAK-THREAD
    keep.append(thread)


async def serve_nothing() -> asyncio.AbstractServer:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    return await asyncio.start_server(on_client, "127.0.0.1", 0)


def test_every_kind_of_leak_names_its_line_and_span(run: Callable[..., Any], cleanup: list[Any]) -> None:
    """A socket, file, fdopen file, subprocess, transport, task and thread leaked in a span are
    reported at session end with the line that opened them and that span, on asyncio and uvloop."""
    sink = MemorySink()

    async def main() -> asynclens.Session:
        server = await serve_nothing()
        async with make_session(sink) as session:
            await leaky_request(server.sockets[0].getsockname()[1], cleanup)
            await asyncio.sleep(0.01)  # the leaked task starts and waits
        for obj in cleanup:
            if isinstance(obj, asyncio.Task):
                obj.cancel()
            elif isinstance(obj, asyncio.StreamWriter):
                obj.close()
        cleanup[:] = [o for o in cleanup if not isinstance(o, (asyncio.Task, asyncio.StreamWriter))]
        await asyncio.sleep(0.05)  # let the server see the clients go
        server.close()
        return session

    session = run(main())
    span = next(r for r in sink.records if isinstance(r, Span) and r.name == "leaky.request")
    leaks = [r for r in sink.records if isinstance(r, Leak)]
    by_site = {}
    for leak in leaks:
        assert leak.closed_by is None and leak.close_ns is None
        by_site.setdefault(leak.site, set()).add(leak.handle_kind)
        mine = leak.site is not None and leak.site.endswith(("in leaky_request", "in sleeper"))
        if mine and (leak.handle_kind != "task" or sys.version_info >= (3, 12)):
            assert (leak.span_name, leak.span_id, leak.trace_id) == ("leaky.request", span.span_id, span.trace_id), leak
    expected = {
        "LEAK-FILE": "file",
        "LEAK-FDOPEN": "file",
        "LEAK-SOCKET": "socket",
        "LEAK-POPEN": "subprocess",
        "LEAK-TRANSPORT": "transport",
        "LEAK-THREAD": "thread",
    }
    for marker, kind in expected.items():
        assert kind in by_site.get(at(marker, "leaky_request"), set()), (marker, by_site)
    assert by_site.get(at("TASK-AWAIT", "sleeper")) == {"task"}
    assert all(leak.stack and leak.stack[-1] == leak.site for leak in leaks)
    summary = session.summary()
    assert "Left open:" in summary
    for marker in ("LEAK-FILE", "LEAK-FDOPEN", "LEAK-SOCKET", "LEAK-POPEN", "LEAK-TRANSPORT"):
        assert f"opened at {at(marker, 'leaky_request')} [span leaky.request]" in summary
    assert "leaked-task" in summary  # the summary lists the first 10; the records have them all


def test_tasks_left_to_asyncio_run_are_reported(run: Callable[..., Any]) -> None:
    """Tasks still pending when asyncio.run()/uvloop.run() finishes (and cancels them) are leaks."""
    sink = MemorySink()

    async def main() -> None:
        asyncio.get_running_loop().create_task(sleeper(), name="abandoned")

    with make_session(sink):
        run(main())
    leaks = [r for r in sink.records if isinstance(r, Leak)]
    assert [(r.handle_kind, r.site) for r in leaks] == [("task", at("TASK-AWAIT", "sleeper"))]
    assert "abandoned" in leaks[0].description and "asyncio.run" in leaks[0].description


async def spawn_and_forget() -> None:
    async with asynclens.span("request"):
        asyncio.get_running_loop().create_task(sleeper(), name="forgotten")  # LEAK-TASK


def test_with_the_scheduler_a_leaked_task_names_the_line_and_span_that_created_it(run: Callable[..., Any]) -> None:
    """On every Python (3.10 and 3.11 cannot read a task's context): the scheduler probe saw it created."""
    sink = MemorySink()
    with make_session(sink, scheduler=True):
        run(spawn_and_forget())
    (leak,) = [r for r in sink.records if isinstance(r, Leak)]
    assert (leak.handle_kind, leak.site, leak.span_name) == ("task", at("LEAK-TASK", "spawn_and_forget"), "request")
    assert f"waiting at {at('TASK-AWAIT', 'sleeper')}" in leak.description


def test_asyncio_subprocess_leak(run: Callable[..., Any], cleanup: list[Any]) -> None:
    """A process started with asyncio's subprocess API and never waited for is a leak on both loops."""
    sink = MemorySink()

    async def main() -> None:
        async with make_session(sink):
            proc = await asyncio.create_subprocess_exec(*SLEEPER)  # ASYNC-PROC
        proc.kill()
        await proc.wait()

    run(main())
    leaks = [r for r in sink.records if isinstance(r, Leak) and r.handle_kind == "subprocess"]
    assert [r.site for r in leaks] == [at("ASYNC-PROC", "test_asyncio_subprocess_leak.<locals>.main")]


def test_own_tasks_threads_and_daemons_are_not_leaks(cleanup: list[Any]) -> None:
    """Tasks and threads named asynclens*, and daemon threads, are never reported."""
    sink = MemorySink()
    stop = threading.Event()
    cleanup.append(stop)

    async def main() -> None:
        async with make_session(sink):
            own = asyncio.get_running_loop().create_task(sleeper(), name="asynclens-lag")
            theirs = asyncio.get_running_loop().create_task(sleeper(), name="theirs")
            for name, daemon in (("asynclens-watchdog", False), ("daemon", True)):
                thread = threading.Thread(target=stop.wait, name=name, daemon=daemon)
                thread.start()
                cleanup.append(thread)
            await asyncio.sleep(0)
        own.cancel()
        theirs.cancel()

    asyncio.run(main())
    assert [r.description.split()[1] for r in sink.records if isinstance(r, Leak)] == ["'theirs'"]


# ---------------------------------------------------------------- GC-closed


@pytest.mark.parametrize("shown", [False, True])
def test_closed_by_gc_has_its_site_and_warning_visibility_is_unchanged(shown: bool) -> None:
    """A file the GC had to close is reported as "closed by GC" with the line that opened it;
    its ResourceWarning is shown exactly when the program's own filters say so."""
    sink = MemorySink()
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always" if shown else "ignore", ResourceWarning)
        with make_session(sink) as session:
            with asynclens.span("req"):
                f = open(__file__)  # GC-FILE
                del f
            gc.collect()
    gc_leaks = [r for r in sink.records if isinstance(r, Leak) and r.closed_by == "gc"]
    assert [(r.handle_kind, r.site, r.span_name) for r in gc_leaks] == [
        ("file", at("GC-FILE", "test_closed_by_gc_has_its_site_and_warning_visibility_is_unchanged"), "req")
    ]
    assert gc_leaks[0].close_ns is not None
    resource = [w for w in log if issubclass(w.category, ResourceWarning)]
    assert len(resource) == (1 if shown else 0)
    assert "closed by GC, never by the program" in session.summary()
    assert session.statistics().probes["handles"].closed_by_gc == 1


def test_closed_by_gc_inside_a_reference_cycle() -> None:
    """An object freed as cyclic garbage (weak refs cleared before its finaliser warns) is still matched."""
    sink = MemorySink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with make_session(sink):
            proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # GC-CYCLE
            pid = proc.pid
            proc.cycle = proc  # type: ignore[attr-defined]
            del proc
            gc.collect()
    os.kill(pid, signal.SIGKILL)
    subprocess._cleanup()  # type: ignore[attr-defined]  # reap it (Popen.__del__ queued it)
    gc_leaks = [r for r in sink.records if isinstance(r, Leak) and r.closed_by == "gc"]
    assert [(r.handle_kind, r.site) for r in gc_leaks] == [
        ("subprocess", at("GC-CYCLE", "test_closed_by_gc_inside_a_reference_cycle"))
    ]


# ---------------------------------------------------------------- snapshots


def test_open_handles_is_a_live_snapshot(tmp_path: Path) -> None:
    """open_handles() lists what is open now and forgets it once closed; nothing after the session."""
    with make_session() as session:
        with asynclens.span("snap"):
            f = open(tmp_path / "a.txt", "w")  # SNAP
        sock = socket.socket()
        now = session.open_handles()
        assert [(r.handle_kind, r.site, r.span_name) for r in now] == [
            ("file", at("SNAP", "test_open_handles_is_a_live_snapshot"), "snap"),
            ("socket", f"{HERE}:{line_of('SNAP') + 1} in test_open_handles_is_a_live_snapshot", None),
        ]
        assert all(isinstance(r, HandleRecord) and r.close_ns is None for r in now)
        assert "a.txt" in now[0].description and "'w'" in now[0].description
        assert "open now: 2" in session.summary()
        f.close()
        sock.close()
        assert session.open_handles() == []
        g = open(tmp_path / "b.txt", "w")
    assert session.open_handles() == []
    g.close()


def test_an_event_loops_self_pipe_is_not_tracked_but_a_programs_socketpair_is() -> None:
    """A selector loop's two self-pipe sockets are asyncio's own (closed with the loop):
    not tracked, so an open loop is no socket leak; a socketpair the program makes is."""
    with make_session() as session:
        loop = asyncio.new_event_loop()
        try:
            assert loop._ssock is not None  # type: ignore[attr-defined]  # the self-pipe exists
            assert session.open_handles() == []
            a, b = socket.socketpair()  # PAIR
            try:
                now = session.open_handles()
                assert [(r.handle_kind, r.site) for r in now] == [
                    ("socket", at("PAIR", "test_an_event_loops_self_pipe_is_not_tracked_but_a_programs_socketpair_is"))
                ] * 2
            finally:
                a.close()
                b.close()
        finally:
            loop.close()


def test_open_keys_name_the_open_handles_without_making_their_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_keys() is open_handles() as (kind, id) keys, made without records;
    open_handles(only=...) makes the records of those keys only."""

    async def main(session: asynclens.Session) -> None:
        task = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        f = open(tmp_path / "k.txt", "w")
        sock = socket.socket()
        try:
            probe = session.probe("handles")
            everything = probe.open_handles()
            assert sorted(r.handle_kind for r in everything) == ["file", "socket", "task"]
            keys = {(r.handle_kind, r.handle_id) for r in everything}
            with monkeypatch.context() as m:
                m.setattr(probe.registry, "record", lambda *a, **k: pytest.fail("a record was made"))
                m.setattr("asynclens.probes.handles.probe.task_leak", lambda *a, **k: pytest.fail("a task's record was made"))
                assert probe.open_keys() == keys
            socket_key = next(k for k in keys if k[0] == "socket")
            task_key = ("task", id(task))
            assert [(r.handle_kind, r.handle_id) for r in probe.open_handles(only={socket_key, task_key})] == [
                task_key,
                socket_key,
            ]
            assert probe.open_handles(only=set()) == []
        finally:
            f.close()
            sock.close()
            task.cancel()

    with make_session() as session:
        asyncio.run(main(session))
        assert session.probe("handles").open_keys() == set()
    assert session.probe("handles").open_keys() == set()


def test_asynclens_own_files_are_not_recorded(tmp_path: Path) -> None:
    """The JSON lines sink's file and files asynclens reads itself are not handles of the program."""
    trace = tmp_path / "run.jsonl"
    with make_session(JsonLinesSink(trace)) as session:
        session.flush()
        asynclens.read_jsonl(trace)
        assert session.open_handles() == []
    assert session.statistics().probes["handles"].opened["file"] == 0


def test_tracking_holds_weak_references_only() -> None:
    """A tracked file or socket is freed by reference counting exactly as without asynclens."""
    gc.disable()
    try:
        with make_session():
            f = open(__file__)
            sock = socket.socket()
            refs = [weakref.ref(f), weakref.ref(sock)]
            f.close()
            sock.close()
            del f, sock
            assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


# -------------------------------------------------------------- clean removal


def _patched_attributes() -> dict[str, Any]:
    found = {
        "socket.socket": socket.socket,
        "socket.socket.__init__": socket.socket.__dict__["__init__"],
        "builtins.open": builtins.open,
        "io.open": io.open,
        "os.fdopen": os.fdopen,
        "subprocess.Popen": subprocess.Popen,
        "subprocess.Popen.__init__": subprocess.Popen.__dict__["__init__"],
        "threading.Thread.start": threading.Thread.__dict__["start"],
        "asyncio.runners._cancel_all_tasks": runners._cancel_all_tasks,  # type: ignore[attr-defined]
        "warnings._showwarnmsg": warnings._showwarnmsg,  # type: ignore[attr-defined]
    }
    for name in ("_make_socket_transport", "_make_ssl_transport", "_make_datagram_transport"):
        found[name] = selector_events.BaseSelectorEventLoop.__dict__.get(name)
    for name in ("_make_read_pipe_transport", "_make_write_pipe_transport"):
        found[name] = unix_events._UnixSelectorEventLoop.__dict__.get(name)
    for name in (
        _handle_patches._UV_PAIR_METHODS + _handle_patches._UV_SERVER_METHODS + _handle_patches._UV_SUBPROCESS_METHODS
    ):
        found["uvloop." + name] = uvloop.Loop.__dict__.get(name)
    return found


def test_patches_are_removed_and_nothing_is_recorded_after_the_session(tmp_path: Path) -> None:
    """socket.socket, open, io.open, os.fdopen, Popen, Thread.start, the loops' transport
    factories, uvloop's methods and the warnings machinery are the originals again after the
    session, the warning filters are as before, and handles opened afterwards are not recorded."""
    before = _patched_attributes()
    filters = list(warnings.filters)
    sink = MemorySink()
    with make_session(sink) as session:
        during = _patched_attributes()
        changed = {k for k in before if during[k] is not before[k]}
        assert len(warnings.filters) == len(filters) + 1
    assert changed >= {
        "socket.socket.__init__",
        "builtins.open",
        "io.open",
        "subprocess.Popen.__init__",
        "threading.Thread.start",
        "_make_socket_transport",
        "asyncio.runners._cancel_all_tasks",
        "warnings._showwarnmsg",
        "uvloop.create_connection",
        "uvloop.create_server",
        "uvloop.subprocess_exec",
    }
    after = _patched_attributes()
    assert all(after[k] is before[k] for k in before), [k for k in before if after[k] is not before[k]]
    assert warnings.filters == filters
    assert _handle_patches._probe is None
    records = len(sink.records)
    stats = session.statistics().probes["handles"]
    with open(tmp_path / "late.txt", "w"), socket.socket():
        pass
    assert len(sink.records) == records
    assert session.statistics().probes["handles"] == stats


def test_handles_off_installs_nothing() -> None:
    """track_handles=False: no probe, no patch."""
    before = _patched_attributes()
    with make_session(track_handles=False) as session:
        assert _patched_attributes() == before
        assert session.open_handles() == []


def test_a_bug_in_the_registry_never_reaches_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """If tracking fails, open() and socket() still work and the error is counted."""
    with make_session() as session:
        probe = session.probe("handles")

        def broken(*args: Any) -> None:
            raise RuntimeError("registry bug")

        monkeypatch.setattr(probe.registry, "add", broken)
        with open(__file__) as f:
            assert f.readline()
        socket.socket().close()
    assert session.statistics().internal_errors == 2


def test_readiness_event_hooks_of_closed_loops_are_folded_not_kept() -> None:
    """A loop per test for thousands of tests: the probe keeps a hook per open loop only,
    and the events counted on the closed ones stay in the total."""

    async def tick() -> None:
        asyncio.get_running_loop().call_soon_threadsafe(lambda: None)  # a write to the self-pipe
        await asyncio.sleep(0.001)

    with make_session(MemorySink()) as session:
        probe = session.probe("handles")
        for _ in range(300):
            asyncio.run(tick())
        assert len(probe._event_hooks) <= 64
        events = probe.statistics().events
        assert events is not None and events >= 300  # a self-pipe wake-up per loop at least
        asyncio.run(tick())
        assert probe.statistics().events >= events


# ---------------------------------------------------------------------- I/O


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_io_bytes_per_transport_span_and_session(loop: str) -> None:
    """Bytes and operations are counted per transport, per span and per session, on both
    loops (TCP: from the kernel's counters); readiness events on the stdlib loop only."""
    sink = MemorySink()

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with asynclens.span("client"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        for _ in range(3):
            writer.write(b"123456789\n")
            assert await reader.readline() == b"123456789\n"
        await close_both(writer, server)

    with make_session(sink) as session:
        RUNNERS[loop](main())
        gc.collect()
    stats = session.statistics().probes["handles"]
    assert stats.opened["transport"] == 2
    transports = [r for r in sink.records if isinstance(r, HandleRecord) and r.handle_kind == "transport"]
    assert (stats.bytes_sent, stats.bytes_received) == (60, 60)
    if loop == "uvloop":
        assert stats.events is None
    else:
        assert stats.events is not None and stats.events >= 6
    assert sorted((r.span_name or "", r.bytes_sent, r.bytes_received, r.ops) for r in transports) == [
        ("", 30, 30, 6),
        ("client", 30, 30, 6),
    ]
    rates = [r for r in sink.records if isinstance(r, IoRates)]
    assert sum(r.bytes_sent for r in rates) == 60 and sum(r.ops for r in rates) == 12
    summary = session.summary()
    assert "I/O: sent 60 B" in summary and ("readiness events" in summary) == (loop == "asyncio")
    assert "client" in summary.split("I/O by span")[1]


def test_io_bytes_of_a_buffered_protocol() -> None:
    """A BufferedProtocol's receives are counted through buffer_updated (the stdlib loop)."""
    sink = MemorySink()

    class Collect(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buffer = bytearray(64)
            self.got = bytearray()
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buffer[:nbytes]
            if len(self.got) >= 12 and not self.done.done():
                self.done.set_result(bytes(self.got))

    async def main() -> None:
        protocols: list[Collect] = []

        def factory() -> Collect:
            protocols.append(Collect())
            return protocols[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"hello ")
        writer.write(b"world!")
        while not protocols:
            await asyncio.sleep(0)
        assert await protocols[0].done == b"hello world!"
        await close_both(writer, server)

    with make_session(sink) as session:
        asyncio.run(main())
    stats = session.statistics().probes["handles"]
    assert (stats.bytes_sent, stats.bytes_received) == (12, 12)


def test_io_window_uses_the_session_clock() -> None:
    """IoRates windows are stamped with the session clock and skip idle windows."""
    clock = asynclens.FakeClock()
    sink = MemorySink()
    with make_session(sink, clock=clock) as session:
        probe = session.probe("handles")
        clock.advance(2_000_000_000)
        assert probe.emit_io_window() is None  # nothing happened
        probe.totals[0] += 100
        probe.totals[2] += 1
        clock.advance(1_000_000_000)
        record = probe.emit_io_window()
    assert record is not None
    assert (record.end_ns - record.start_ns, record.bytes_sent, record.ops) == (1_000_000_000, 100, 1)


def test_tcp_reads_are_throttled_to_a_share_of_the_time() -> None:
    """Reading every open TCP connection's counters (in the rate windows) takes at most
    TCP_READ_SHARE of the time: a slow reading postpones the next one."""
    from asynclens.probes.handles.probe import TCP_READ_SHARE

    clock = asynclens.FakeClock()
    with make_session(clock=clock) as session:
        probe = session.probe("handles")
        reads = []

        def slow_read() -> None:  # 10 ms for all connections: next reading 2 s later
            reads.append(clock.now_ns())
            clock.advance(10_000_000)

        probe._tcp[0] = None  # one TCP connection is open
        probe._read_all_tcp = slow_read
        start = clock.now_ns()
        for _ in range(5):
            probe.emit_io_window()
            clock.advance(1_000_000_000)
        del probe._tcp[0]
    assert int(10_000_000 / TCP_READ_SHARE) == 2_000_000_000
    # windows at 0, 1.01, 2.01, 3.02, 4.02 s; each reading is due 2 s after the last one ended
    assert [t - start for t in reads] == [0, 2_010_000_000, 4_020_000_000]


@pytest.mark.skipif(not _tcp_counters.AVAILABLE, reason="no TCP_INFO on this platform")
def test_tcp_bytes_come_from_the_kernel_without_per_call_hooks(run: Callable[..., Any]) -> None:
    """On TCP, nothing is hooked per send or receive: only connection_lost (for a last
    reading), and not even that after the session. Large writes that the transport
    buffers and sends in pieces are counted exactly, on both loops."""
    big = 3_000_000
    hooked: list[tuple[bool, bool, bool]] = []
    got = []

    async def main() -> None:
        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(len(await reader.read()))
            writer.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        transport, protocol = writer.transport, writer.transport.get_protocol()
        own = getattr(transport, "__dict__", {}), vars(protocol)
        hooked.append(("write" in own[0], "data_received" in own[1], "connection_lost" in own[1]))
        writer.write(b"x" * big)
        await writer.drain()
        writer.write_eof()
        await reader.read()
        await close_both(writer, server)
        gone.append(vars(protocol).get("connection_lost"))

    gone: list[Any] = []
    with make_session() as session:
        run(main())
        stats = session.statistics().probes["handles"]
    assert got == [big]
    assert hooked == [(False, False, True)]
    assert gone == [None]  # the hook took itself off
    assert (stats.bytes_sent, stats.bytes_received) == (big, big)
    assert stats.ops >= 2 * 2  # data segments out and in (at least one per 64 kB here)


@pytest.mark.skipif(not _tcp_counters.AVAILABLE, reason="no TCP_INFO on this platform")
def test_tcp_hooks_are_removed_when_the_session_ends_first(run: Callable[..., Any]) -> None:
    """A connection still open when the session ends loses its connection_lost hook then,
    and its bytes up to the end are counted."""
    left: list[Any] = []

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with make_session() as session:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            protocol = writer.transport.get_protocol()
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
        left.append(("connection_lost" in vars(protocol), session.statistics().probes["handles"].bytes_sent))
        await close_both(writer, server)

    run(main())
    # the client's ping and, on the stdlib loop, the echo from the connection it accepted
    # (uvloop's server predates the session: its connections are not tracked)
    assert left == [(False, 10 if run is asyncio.run else 5)]


def test_a_leaked_connection_counts_its_bytes_for_its_span(run: Callable[..., Any]) -> None:
    """A connection still open at the end is a leak, and what it carried still shows in
    the I/O by span and among the busiest transports."""
    kept: list[Any] = []

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            kept.append(writer)
            writer.write(await reader.readline())

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with make_session() as session:
            async with asynclens.span("leaky"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
        kept.append(session.summary())
        kept[0].close()  # first: from 3.12 on, a server waits for its connections to close
        await close_both(writer, server)

    run(main())
    by_span, busiest = kept[-1].split("I/O by span")[1].split("busiest transports")
    leaky = [line.split() for line in by_span.splitlines() if "leaky" in line]
    assert leaky == [["leaky", "5", "B", "5", "B", "2"]] and "sent 5 B" in busiest


def test_tcp_counters_read_a_real_connection() -> None:
    """_tcp_counters.read: bytes written and received, and the FIN not counted as a byte."""
    if not _tcp_counters.AVAILABLE:
        assert _tcp_counters.read(socket.socket()) is None
        return
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            assert _tcp_counters.is_tcp(client) and not _tcp_counters.is_tcp(socket.socketpair()[0])
            client.sendall(b"x" * 1000)
            assert len(peer.recv(4096)) == 1000
            client.shutdown(socket.SHUT_WR)
            assert peer.recv(10) == b""  # the FIN arrived: CLOSE_WAIT
            written, received, segments = _tcp_counters.read(peer)
            assert (written, received) == (0, 1000) and segments >= 1
            written, received, _ = _tcp_counters.read(client)
            assert (written, received) == (1000, 0)


def test_unix_socket_transports_are_counted_by_hooks() -> None:
    """Where the kernel has no counters (a Unix socket), the stdlib transport's write and
    its protocol's data_received are hooked, and unhooked after the session."""
    sink = MemorySink()
    seen: list[tuple[bool, bool]] = []

    async def main(path: str) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(echo, path)
        reader, writer = await asyncio.open_unix_connection(path)
        seen.append(("write" in vars(writer.transport), "data_received" in vars(writer.transport.get_protocol())))
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        await close_both(writer, server)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with make_session(sink) as session:
            asyncio.run(main(os.path.join(tmp, "s")))
            stats = session.statistics().probes["handles"]
    assert seen == [(True, True)]
    assert (stats.bytes_sent, stats.bytes_received, stats.ops) == (12, 12, 4)


def test_accepted_connection_leak_names_the_server_line(run: Callable[..., Any]) -> None:
    """A server-side connection the handler never closed is reported where the server was
    started (and in the span that started it), on asyncio and uvloop."""
    sink = MemorySink()
    handled = []

    async def main() -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handled.append(writer)  # never closed

        async with make_session(sink):
            async with asynclens.span("serve"):
                server = await asyncio.start_server(on_client, "127.0.0.1", 0)  # SERVER
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            while not handled:
                await asyncio.sleep(0.01)
            writer.close()
            await writer.wait_closed()
            server.close()  # its wait_closed() would wait for the leaked connection (3.12+)
        handled[0].close()
        await server.wait_closed()

    run(main())
    site = at("SERVER", "test_accepted_connection_leak_names_the_server_line.<locals>.main")
    leaks = [(r.handle_kind, r.span_name) for r in sink.records if isinstance(r, Leak) and r.site == site]
    assert ("transport", "serve") in leaks


def test_record_closes_emits_a_handle_record_per_close() -> None:
    """With record_closes, every handle gets a HandleRecord when closed and collected, or at
    the end if it is closed but still referenced."""
    from asynclens.probes.handles.probe import HandleProbe

    sink = MemorySink()
    with asynclens.session([sink], probes=[HandleProbe(record_closes=True)]):
        open(__file__).close()  # CLOSED-1
        kept = open(__file__)  # CLOSED-2
        kept.close()
    closes = [r for r in sink.records if isinstance(r, HandleRecord)]
    assert [(r.handle_kind, r.closed_by, r.site) for r in closes] == [
        ("file", "program", at("CLOSED-1", "test_record_closes_emits_a_handle_record_per_close")),
        ("file", "program", at("CLOSED-2", "test_record_closes_emits_a_handle_record_per_close")),
    ]
    assert all(r.close_ns is not None and r.close_ns >= r.open_ns for r in closes)
    assert [r for r in sink.records if isinstance(r, Leak)] == []


def test_pending_tasks_is_all_tasks_as_a_list(run: Callable[..., Any]) -> None:
    """_tasks.pending_tasks(loop) lists what asyncio.all_tasks(loop) does: the loop's tasks
    not done (eager ones too, 3.12+), not those of another loop."""
    from asynclens.probes._tasks import pending_tasks

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sleepers = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        if hasattr(asyncio, "eager_task_factory") and isinstance(loop, asyncio.BaseEventLoop):
            seen = []  # (uvloop on 3.13 passes the factory an argument it does not take)

            async def eager_child() -> None:
                seen.append(set(pending_tasks(loop)) == asyncio.all_tasks(loop))
                await asyncio.sleep(0)

            loop.set_task_factory(asyncio.eager_task_factory)
            await asyncio.create_task(eager_child())
            loop.set_task_factory(None)
            assert seen == [True]
        other = asyncio.new_event_loop()
        try:
            assert pending_tasks(other) == []
        finally:
            other.close()
        listed = pending_tasks(loop)
        assert len(listed) == len(set(listed)) == 4 and set(listed) == asyncio.all_tasks(loop)
        assert done not in listed and set(sleepers) <= set(listed)
        for task in sleepers:
            task.cancel()

    run(main())


def test_io_rates_false_keeps_the_registry_but_counts_no_io() -> None:
    """session(io_rates=False): handles are still tracked, but no loop gets the
    readiness-event hook, no transport is counted and no IoRates record is made."""
    sink = MemorySink()
    hooked: list[bool] = []

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        loop = asyncio.get_running_loop()
        hooked.append("_process_events" in vars(loop))
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        await close_both(writer, server)

    with make_session(sink, io_rates=False) as session:
        asyncio.run(main())
        stats = session.statistics().probes["handles"]
    assert session.options["io_rates"] is False and hooked == [False]
    assert stats.opened["transport"] == 2
    assert (stats.bytes_sent, stats.ops, stats.events) == (0, 0, None)
    assert [r for r in sink.records if isinstance(r, IoRates)] == []
