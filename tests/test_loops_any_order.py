"""Every loop is watched, whatever the import order and however it was started.

Each start style runs in a fresh interpreter (this one imported uvloop long ago), two
ways: under ``python -m asynclens run`` (the CLI starts the session before the
program imports uvloop) and with a session the program starts in code before it
imports uvloop. Each run must show, for the loop the program ran on: a lag snapshot,
the planted stall at its line, the leaked socket, and tasks the scheduler followed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from asynclens.fileformat import read_jsonl
from asynclens.records import LagSnapshot, Leak, Stall

pytest.importorskip("uvloop")

ROOT = Path(__file__).resolve().parent.parent

# The code the program runs on its loop: a 120 ms blocking call (the stall), a leaked
# socket and a leaked task, as a coroutine, an ASGI app and an aiohttp handler.
APPCODE = '''
import asyncio, json, os, socket, sys, time

LEAKS = []


async def work():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.02)
    time.sleep(0.12)  # THE STALL
    LEAKS.append(socket.socket())
    LEAKS.append(loop.create_task(asyncio.sleep(3600), name="leaked-task"))
    await asyncio.sleep(0.02)
    with open(os.environ["LOOP_INFO"], "w") as f:
        json.dump({"loop_id": id(loop), "loop_type": type(loop).__module__ + "." + type(loop).__qualname__}, f)


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await work()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def aiohttp_handler(request):
    from aiohttp import web

    await work()
    return web.Response(text="ok")


def request_then(port, then):
    """From a thread: GET / once the server answers, then ``then()``."""
    import threading, urllib.request

    def client():
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    assert r.read() == b"ok"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        then()

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    return thread


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
'''

PROG = '''
import sys, warnings

MODE, STYLE = sys.argv[1], sys.argv[2]
assert "uvloop" not in sys.modules, "uvloop must not be imported before the session"
if MODE == "code":
    import asynclens

    session = asynclens.session(sys.argv[3])
    session.start()
else:
    from asynclens._state import context

    assert context.active is not None  # the CLI's session

warnings.simplefilter("ignore", DeprecationWarning)  # uvloop.install() on 3.12+
import asyncio, signal, os, threading
import uvloop
import appcode


def main():
    if STYLE == "asyncio_run":
        asyncio.run(appcode.work())
    elif STYLE == "runner":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(appcode.work())
    elif STYLE == "uvloop_run":
        uvloop.run(appcode.work())
    elif STYLE == "install":
        uvloop.install()
        asyncio.run(appcode.work())
    elif STYLE == "thread":
        loop = uvloop.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="loop-thread")
        thread.start()
        asyncio.run_coroutine_threadsafe(appcode.work(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
    elif STYLE == "aiohttp":
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", appcode.aiohttp_handler)
        port = appcode.free_port()
        loop = uvloop.new_event_loop()

        def stop():
            def graceful_exit():
                raise web.GracefulExit()

            loop.call_soon_threadsafe(graceful_exit)

        appcode.request_then(port, stop)
        web.run_app(app, host="127.0.0.1", port=port, loop=loop, print=None, handle_signals=False)
    elif STYLE == "hypercorn":
        from hypercorn.asyncio.run import uvloop_worker
        from hypercorn.config import Config

        config = Config()
        config.application_path = "appcode:asgi"
        port = appcode.free_port()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = config.errorlog = None
        shutdown = threading.Event()
        appcode.request_then(port, shutdown.set)
        uvloop_worker(config, sockets=config.create_sockets(), shutdown_event=shutdown)
    elif STYLE == "uvicorn":
        import uvicorn

        port = appcode.free_port()
        appcode.request_then(port, lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C
        try:
            uvicorn.run(appcode.asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        except KeyboardInterrupt:
            pass
    else:
        raise SystemExit(f"unknown style {STYLE}")


try:
    main()
finally:
    if MODE == "code":
        session.close()
'''

STYLES = [
    "asyncio_run",
    pytest.param("runner", marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")),
    "uvloop_run",
    "install",
    "thread",
    "aiohttp",
    "hypercorn",
    "uvicorn",
]
STALL_LINE = next(i for i, line in enumerate(APPCODE.splitlines(), 1) if "# THE STALL" in line)


def _run(tmp_path: Path, mode: str, style: str) -> tuple[subprocess.CompletedProcess[str], Any, dict[str, Any]]:
    if style == "hypercorn":
        pytest.importorskip("hypercorn")
    if style == "uvicorn":
        pytest.importorskip("uvicorn")
    if style == "aiohttp":
        pytest.importorskip("aiohttp")
    (tmp_path / "appcode.py").write_text(APPCODE)
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROG))
    out = tmp_path / "run.jsonl"
    info = tmp_path / "loop.json"
    env = {**os.environ, "LOOP_INFO": str(info), "PYTHONPATH": str(ROOT)}
    if mode == "cli":
        argv = [sys.executable, "-m", "asynclens", "run", "-q", "-o", str(out), "prog.py", "cli", style]
    else:
        argv = [sys.executable, "prog.py", "code", style, str(out)]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, read_jsonl(out), json.loads(info.read_text())


def _check(run: Any, loop: dict[str, Any], style: str) -> None:
    records = run.records
    snapshots = [r for r in records if isinstance(r, LagSnapshot) and r.loop_id == loop["loop_id"]]
    assert snapshots, f"the lag probe did not watch the {loop['loop_type']} loop"
    stalls = [r for r in records if isinstance(r, Stall) and r.loop_id == loop["loop_id"]]
    assert any(s.file and s.file.endswith("appcode.py") and s.line == STALL_LINE for s in stalls), stalls
    leaks = [r for r in records if isinstance(r, Leak)]
    assert any(leak.handle_kind == "socket" and "appcode.py" in str(leak.site) for leak in leaks), leaks
    # aiohttp's run_app, and uvicorn and hypercorn before 3.11, cancel what is left with their own
    # helpers (not hooked)
    if style != "aiohttp" and not (style in ("uvicorn", "hypercorn") and sys.version_info < (3, 11)):
        assert any(leak.handle_kind == "task" and "leaked-task" in str(leak.description) for leak in leaks), leaks
    assert run.end is not None
    stats = run.end.statistics
    scheduler = stats["probes"]["scheduler"]
    assert scheduler["tasks_tracked"] > 0, scheduler
    # hypercorn on 3.10 makes its serving task before its loop is seen: counted (and reported) as not covered
    if not (style == "hypercorn" and sys.version_info < (3, 11)):
        assert scheduler["tasks_not_covered"] == 0, scheduler
    assert stats["blind_spots"] == [], stats["blind_spots"]
    if style != "asyncio_run":
        assert loop["loop_type"] == "uvloop.Loop"


@pytest.mark.parametrize("style", STYLES)
def test_under_the_cli_with_uvloop_imported_by_the_program(tmp_path: Path, style: str) -> None:
    proc, run, loop = _run(tmp_path, "cli", style)
    _check(run, loop, style)
    summary = " ".join(proc.stderr.split())  # unwrapped
    assert f"appcode.py:{STALL_LINE} in work" in summary
    assert "Not measured" not in summary and "no stalls" not in summary


@pytest.mark.parametrize("style", STYLES)
def test_session_in_code_with_uvloop_imported_after_it_starts(tmp_path: Path, style: str) -> None:
    _proc, run, loop = _run(tmp_path, "code", style)
    _check(run, loop, style)
