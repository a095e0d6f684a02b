"""The live view (``run --live``, ``top PID``): its screen fits 80×24 in plain text with
every section, its keys sort, pause and quit, it prints a plain summary every second when
the output is not a terminal, and a tmux pane shows it and quits cleanly on ``q``."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from asynclens.live.model import NAMES_KEPT, LiveModel
from asynclens.live.screen import render_screen
from asynclens.live.terminal import LiveView

APP = Path(__file__).parent / "live_apps" / "busy_app.py"
STALL_LINE = next(i for i, line in enumerate(APP.read_text().splitlines(), 1) if "# STALL" in line and "sleep" in line)
MS = 1_000_000


def _model() -> LiveModel:
    m = LiveModel()
    m.feed({"kind": "session", "pid": 42, "python": "3.14.0", "anchor_mono_ns": 0})
    m.feed({"kind": "lag", "loop_id": 7, "start_ns": 0, "end_ns": 1000 * MS, "p50_ns": MS, "p90_ns": 2 * MS,
            "p99_ns": 9 * MS, "p999_ns": 30 * MS, "max_ns": 40 * MS, "elu": 0.25, "stalls": 1})
    m.feed({"kind": "stall", "loop_id": 7, "start_ns": 100 * MS, "end_ns": 400 * MS, "file": "/srv/app/handlers.py",
            "line": 92, "function": "handle", "task": "Task-4", "span_name": "GET /", "cause": "blocking"})
    for i in range(30):
        m.feed({"kind": "task", "task_id": i, "name": f"task-{i}", "loop_id": 7, "created_ns": 0,
                "done_ns": (i + 1) * MS, "run_ns": i * MS, "sched_wait_ns": (30 - i) * MS})
        m.feed({"kind": "span", "name": f"span-{i % 5}", "start_ns": 0, "end_ns": (i + 1) * MS, "cpu_ns": i * MS,
                "sched_wait_ns": MS})
    m.feed({"kind": "executor_job", "submit_ns": 500 * MS, "start_ns": 510 * MS, "end_ns": 900 * MS,
            "function": "f", "executor_id": 1, "max_workers": 4})
    m.set_snapshot({"now_ns": 1000 * MS, "handles": {"socket": 3, "file": 1},
                    "tasks": [{"name": "serve", "created_ns": 0, "cpu_ns": 500 * MS, "sched_ns": 0}]})
    return m


def test_the_screen_fits_80_by_24_in_plain_text_with_every_section() -> None:
    lines = render_screen(_model(), width=80, height=24)
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    assert all(line.isprintable() for line in lines)  # no colour, no terminal codes
    text = "\n".join(lines)
    for section in ("LOOP", "STALLS 1", "TASKS by CPU", "SPANS by CPU", "HANDLES socket 3  file 1", "EXECUTORS #1"):
        assert section in text, text
    assert "handlers.py:92 in handle" in text and "300.0ms" in text and "[GET /]" in text
    assert "25%" in text  # ELU
    assert "9.0ms" in text  # p99
    assert "* serve" in text  # a live task, marked


def test_the_sort_key_orders_the_tables() -> None:
    model = _model()
    by_cpu = render_screen(model, sort="cpu", height=60)
    by_sched = render_screen(model, sort="sched", height=60)
    first_task = lambda lines: next(l for l in lines[lines.index(next(l for l in lines if l.startswith("TASKS"))) + 1 :])  # noqa: E731
    assert "serve" in first_task(by_cpu)  # 500 ms of CPU
    assert "task-0 " in first_task(by_sched)  # 30 ms of delay
    assert "TASKS by scheduling delay" in "\n".join(by_sched)


def test_a_small_terminal_still_gets_every_section() -> None:
    lines = render_screen(_model(), width=60, height=16)
    assert len(lines) <= 16 and all(len(line) <= 60 for line in lines)
    text = "\n".join(lines)
    for section in ("LOOP", "STALLS", "TASKS", "SPANS", "HANDLES", "EXECUTORS"):
        assert section in text


def test_the_model_is_bounded() -> None:
    m = LiveModel()
    for i in range(NAMES_KEPT + 10):
        m.feed({"kind": "task", "task_id": i, "name": f"t{i}", "loop_id": 1, "created_ns": 0})
        m.feed({"kind": "stall", "loop_id": 1, "start_ns": 0, "end_ns": 1})
    assert len(m.tasks) == NAMES_KEPT and m.names_dropped == 10
    assert len(m.stalls) < 100 and m.stall_count == NAMES_KEPT + 10


def test_keys_sort_pause_and_quit() -> None:
    out = io.StringIO()
    quits = []
    view = LiveView(_model(), out, on_quit=lambda: quits.append(1))
    view.start()
    assert out.getvalue().startswith("--- asynclens live ")  # not a terminal: plain text, headed by the time
    view.press("s")
    assert view.sort == "sched"
    view.press("s")
    view.press("s")
    assert view.sort == "cpu"
    view.press("p")
    assert view.paused
    view.press("x")  # other keys do nothing
    view.press("q")
    view.press("q")
    assert view.quit.is_set() and quits == [1]
    view.stop()


def test_run_live_without_a_terminal_prints_a_summary_every_second(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asynclens", "run", "--live", "--no-summary", str(APP), "2.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    frames = result.stdout.count("--- asynclens run live ")
    assert frames >= 2, result.stdout
    assert f"busy_app.py:{STALL_LINE} in request" in result.stdout
    for section in ("LOOP", "STALLS", "TASKS by CPU", "SPANS by CPU", "HANDLES", "EXECUTORS"):
        assert section in result.stdout
    assert "\x1b" not in result.stdout


# ------------------------------------------------------------------ tmux


TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/test installs it where it can)")
def test_run_live_in_an_80x24_tmux_pane(tmp_path: Path) -> None:
    """The screen in a real terminal: sections drawn within 80×24, s sorts, p pauses, q quits
    cleanly (exit status 0, the terminal given back, the summary printed)."""
    assert TMUX is not None
    server = f"asynclens-test-{uuid.uuid4().hex[:8]}"  # a tmux server of our own
    status = tmp_path / "status"
    log = tmp_path / "stderr"
    command = (
        f"{sys.executable} -m asynclens run --live {APP} 2> {log}; echo $? > {status}; sleep 60"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env["TERM"] = "xterm"
    env.pop("NO_COLOR", None)

    def tmux(*args: str) -> str:
        return subprocess.run([TMUX, "-L", server, "-f", "/dev/null", *args], capture_output=True, text=True, env=env,
                              timeout=30).stdout

    def screen_with(*words: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = tmux("capture-pane", "-p", "-t", "live").splitlines()
            text = "\n".join(lines)
            if all(w in text for w in words):
                return lines
            time.sleep(0.3)
        raise AssertionError(f"{words} not on the screen:\n" + "\n".join(lines))

    tmux("new-session", "-d", "-s", "live", "-x", "80", "-y", "24", command)
    try:
        lines = screen_with("LOOP", "STALLS", f"busy_app.py:{STALL_LINE}", "TASKS by CPU", "HANDLES", "EXECUTORS")
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "keys: s sort  p pause  q quit" in "\n".join(lines)
        tmux("send-keys", "-t", "live", "s")
        screen_with("sort: scheduling delay", "TASKS by scheduling delay")
        tmux("send-keys", "-t", "live", "p")
        screen_with("[PAUSED]")
        tmux("send-keys", "-t", "live", "p")
        tmux("send-keys", "-t", "live", "q")
        deadline = time.monotonic() + 60
        while not (status.exists() and status.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.read_text().strip() == "0", log.read_text()
        assert "Traceback" not in log.read_text()
        assert "asynclens:" in log.read_text()  # the summary, after the view gave the terminal back
        after = "\n".join(tmux("capture-pane", "-p", "-t", "live").splitlines())
        assert "keys: s sort" not in after  # the alternate screen is gone
    finally:
        tmux("kill-server")
