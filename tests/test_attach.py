"""``python -m asynclens attach PID``: a running server with a planted stall and leak is
attached to twice; the stall is found at its line, the leak is reported, the server keeps
answering, and after each detach it is as it was (no patch, thread or object of
asynclens left). Every way attaching can fail is one line, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

APP = Path(__file__).parent / "attach_apps" / "stall_server.py"
STALL_LINE = next(i for i, line in enumerate(APP.read_text().splitlines(), 1) if "# STALL" in line and "sleep" in line)
NEEDS_314 = pytest.mark.skipif(sys.version_info < (3, 14), reason="attach needs sys.remote_exec (Python 3.14+)")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="attach reads /proc (Linux)")


def _ptrace_allowed() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() == "0"
    except OSError:
        return True


NEEDS_PTRACE = pytest.mark.skipif(
    not _ptrace_allowed(), reason="ptrace of a sibling process is not permitted here (root or ptrace_scope=0 needed)"
)
#: The target runs the base interpreter isolated (-I): it never imported asynclens and cannot
#: without the path the attacher gives it.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


class Server:
    """The target: the stall server, and a client that keeps it busy and times its answers."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.port = int(line.split()[1])
        self.answers = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ping, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _ping(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock, sock.makefile("rw") as f:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    f.write("ping\n")
                    f.flush()
                    if f.readline().strip() != "ok ping":
                        return
                except OSError:  # the server was stopped
                    return
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.answers += 1
                time.sleep(0.01)

    def ask(self, line: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock, sock.makefile("rw") as f:
            f.write(line + "\n")
            f.flush()
            return f.readline().strip()

    def check(self) -> dict[str, Any]:
        return dict(json.loads(self.ask("check")))

    def answers_within(self, seconds: float) -> int:
        before = self.answers
        time.sleep(seconds)
        return self.answers - before

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def start_server() -> Iterator[Any]:
    servers: list[Server] = []

    def start(*extra: str, python: str = BASE_PYTHON, flags: tuple[str, ...] = ("-I",), env: Any = None) -> Server:
        server = Server([python, *flags, str(APP), *extra], env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _attach_cmd(pid: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "asynclens", "attach", str(pid), *args]


def _run_attach(pid: int, *args: str, timeout: float = 120, env: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_attach_cmd(pid, *args), capture_output=True, text=True, timeout=timeout, env=env)


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("asynclens: error: "), line
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in line, line
    return line


def _same_as_before(after: dict[str, Any], before: dict[str, Any]) -> None:
    """Every patched place is back; the import system keeps only the imported packages' folders
    (``sys.path_importer_cache``), not the import path the attacher lent the target."""
    from asynclens.attach.attacher import import_paths

    cache_after = set(after.pop("path_importer_cache"))
    cache_before = set(before.pop("path_importer_cache"))
    assert after == before
    lent = {p for paths in import_paths() for p in paths}
    for folder in cache_after - cache_before:
        assert folder not in lent
        assert os.path.exists(os.path.join(folder, "__init__.py")), folder


def _session_end(path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["kind"] == "session"
    assert records[0]["options"]["attached"]["at_wall_ns"] > 0
    end = [r for r in records if r["kind"] == "session_end"]
    assert end, "the attached run did not finish"
    return dict(end[-1])


def _attach_with_incidents(server: Server, tmp_path: Path, label: str, tmpdir: Path) -> tuple[str, dict[str, Any]]:
    """Attach for a few seconds; plant a stall and a leak while attached; return stderr and
    what the data path looked like while attached."""
    out = tmp_path / f"{label}.jsonl"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(
        _attach_cmd(server.pid, "--duration", "3", "-o", str(out), "-o", str(tmp_path / f"{label}.txt")),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "attached to PID" in first, first + proc.stderr.read()
    folders = [p for p in tmpdir.iterdir() if p.name.startswith("asynclens-attach-")]
    path_seen = {
        "folders": [(stat.S_IMODE(p.stat().st_mode), sorted((c.name, stat.S_IMODE(c.stat().st_mode)) for c in p.iterdir())) for p in folders]
    }
    assert server.ask("stall") == "ok stall"
    assert server.ask("leak") == "ok leak"
    path_seen["answers_during"] = server.answers_within(0.5)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, first + rest
    proc.stderr.close()
    assert not list(tmpdir.iterdir()), "the private folder was left behind"
    path_seen["end"] = _session_end(out)
    path_seen["text"] = (tmp_path / f"{label}.txt").read_text()
    return first + rest, path_seen


@NEEDS_314
@NEEDS_PTRACE
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_attach_twice_finds_the_stall_and_leak_and_leaves_the_server_as_it_was(
    start_server: Any, tmp_path: Path, loop_kind: str
) -> None:
    """Attach, detach, attach again: each run finds the planted stall at its line and the
    socket left open; the server answers before, during and after; each detach leaves no
    patch, thread, path entry or asynclens object (beyond the imported modules)."""
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
        # the venv's interpreter (uvloop lives there); the program still never imports asynclens
        server = start_server("--uvloop", "--thread", python=sys.executable, flags=())
    else:
        server = start_server("--thread")
    assert server.answers_within(0.5) > 0
    baseline = server.check()
    assert baseline["modules"] == 0 and baseline["threads"] == []
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    for label in ("first", "second"):
        stderr, seen = _attach_with_incidents(server, tmp_path, label, tmpdir)
        # the data path: one private folder (0700) holding a 0600 script and the socket
        [(mode, children)] = seen["folders"]
        assert mode == 0o700
        names = dict(children)
        assert names["attach.py"] == 0o600 and "s" in names
        assert seen["answers_during"] > 0
        # the report: attached, when, the stall at its line, the leak, both loops
        assert f"Attached to PID {server.pid}" in stderr
        assert f"stall_server.py:{STALL_LINE}" in stderr, stderr
        assert "Left open" in stderr and "socket" in stderr
        assert "detached from PID" in stderr
        assert f"stall_server.py:{STALL_LINE}" in seen["text"]
        assert seen["end"]["statistics"]["loops_seen"] >= 2
        # detached: the server is as it was
        after = server.check()
        assert after["threads"] == []
        assert after["objects"] == []
        _same_as_before(after["fingerprint"], dict(baseline["fingerprint"]))
        assert server.answers_within(0.5) > 0
    assert server.slowest < 10  # generous: the planted stall is 0.3 s


@NEEDS_314
@NEEDS_PTRACE
def test_ctrl_c_detaches_and_writes_the_outputs(start_server: Any, tmp_path: Path) -> None:
    """Without --duration the attach records until Ctrl-C, then detaches and writes."""
    server = start_server()
    out = tmp_path / "run.jsonl"
    proc = subprocess.Popen(_attach_cmd(server.pid, "-o", str(out)), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert "until Ctrl-C" in proc.stderr.readline()
    server.ask("stall")
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    proc.stderr.close()
    assert "detached from PID" in rest
    _session_end(out)
    assert server.check()["threads"] == []


@NEEDS_314
@NEEDS_PTRACE
def test_a_target_that_exits_while_attached_is_one_error_and_keeps_what_was_recorded(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server()
    out = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        _attach_cmd(server.pid, "--duration", "30", "-o", str(out), "--no-summary"), stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    assert "attached to PID" in proc.stderr.readline()
    server.ask("stall")
    time.sleep(0.5)
    server.proc.terminate()
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    proc.stderr.close()
    assert f"PID {server.pid} exited while attached" in rest
    assert out.read_text().startswith('{"kind":"session"')


# ------------------------------------------------------------------ errors


@NEEDS_314
def test_a_dead_pid_is_one_line() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _one_line_error(_run_attach(proc.pid), "no process with PID", str(proc.pid))


@NEEDS_314
def test_a_pid_that_is_not_python_is_one_line() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        _one_line_error(_run_attach(proc.pid), "is not a Python process", "sleep")
    finally:
        proc.kill()
        proc.wait()


@NEEDS_314
def test_bad_pid_is_a_usage_error() -> None:
    result = _run_attach(0)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a process id" in result.stderr


@NEEDS_314
@NEEDS_PTRACE
@pytest.mark.parametrize("how", ["-X", "env"])
def test_remote_debugging_disabled_is_one_line(start_server: Any, how: str) -> None:
    if how == "-X":
        server = start_server(flags=("-I", "-X", "disable_remote_debug"))
    else:
        server = start_server(env={**os.environ, "PYTHON_DISABLE_REMOTE_DEBUG": "1"})
    _one_line_error(_run_attach(server.pid, "--duration", "1"), "remote debugging disabled")
    assert server.check()["modules"] == 0


def _other_minor() -> str | None:
    for minor in (15, 14, 16):
        if minor != sys.version_info[1] and os.path.exists(f"/usr/bin/python3.{minor}"):
            return f"/usr/bin/python3.{minor}"
    return None


@NEEDS_314
@NEEDS_PTRACE
def test_a_different_minor_version_is_one_line(start_server: Any) -> None:
    other = _other_minor()
    if other is None:
        pytest.skip("no other Python 3.14+ on this machine")
    server = start_server(python=other)
    _one_line_error(_run_attach(server.pid, "--duration", "1"), "runs Python 3.", "attach with python3.")


@NEEDS_314
def test_an_older_python_target_is_one_line(tmp_path: Path) -> None:
    """The version is read from the executable's name: a copy named python3.13."""
    old = tmp_path / "python3.13"
    old.symlink_to(os.path.realpath(BASE_PYTHON))
    # a symlink resolves to the real name: use a hard copy instead
    old.unlink()
    old.write_bytes(Path(os.path.realpath(BASE_PYTHON)).read_bytes())
    old.chmod(0o755)
    proc = subprocess.Popen([str(old), "-I", "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        _one_line_error(_run_attach(proc.pid), "runs Python 3.13", "3.14 or later")
    finally:
        proc.kill()
        proc.wait()


@NEEDS_314
@NEEDS_PTRACE
def test_asynclens_not_importable_in_the_target_is_one_line_and_leaves_nothing(
    start_server: Any, tmp_path: Path
) -> None:
    """An isolated target (-I, the base interpreter) given an import path without asynclens."""
    server = start_server()
    assert server.answers_within(0.3) > 0
    baseline = server.check()
    empty = tmp_path / "no-asynclens-here"
    empty.mkdir()
    line = _one_line_error(_run_attach(server.pid, "--path", str(empty)), "not importable in the target", str(empty))
    assert "No module named 'asynclens'" in line
    after = server.check()
    assert after["modules"] == 0
    assert after["fingerprint"] == baseline["fingerprint"]  # the import caches too: nothing was imported


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="checks the error of Pythons without sys.remote_exec")
def test_attach_on_a_python_older_than_3_14_is_one_line() -> None:
    result = subprocess.run(_attach_cmd(os.getpid()), capture_output=True, text=True, timeout=60)
    _one_line_error(result, "needs Python 3.14 or later")


def test_not_permitted_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.remote_exec's PermissionError (ptrace refused) becomes one line naming the fix."""
    from asynclens.attach import attacher

    def refuse(pid: int, script: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sys, "remote_exec", refuse, raising=False)
    with pytest.raises(attacher.AttachError) as info:
        attacher._remote_exec(os.getpid(), "/nonexistent")
    assert "not permitted to attach" in str(info.value) and "ptrace" in str(info.value)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ top


@NEEDS_314
@NEEDS_PTRACE
def test_top_without_a_terminal_prints_the_live_view_every_second_and_detaches(start_server: Any) -> None:
    """``top PID`` with stdout not a terminal: a plain summary every second, the stall at
    its line as it happens, the live tasks; then the server is as it was."""
    server = start_server()
    assert server.answers_within(0.3) > 0
    baseline = server.check()
    proc = subprocess.Popen(
        _attach_cmd(server.pid, "--duration", "3.5")[:3] + ["top", str(server.pid), "--duration", "3.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    server.ask("stall")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.count("--- asynclens top live ") >= 2, out
    assert f"stall_server.py:{STALL_LINE} in handle" in out
    for section in ("LOOP", "STALLS 1", "TASKS by CPU", "SPANS by CPU", "HANDLES", "EXECUTORS"):
        assert section in out
    assert "* " in out  # live tasks from the target's snapshots
    assert "\x1b" not in out
    after = server.check()
    assert after["threads"] == [] and after["objects"] == []
    _same_as_before(after["fingerprint"], dict(baseline["fingerprint"]))


@NEEDS_314
@NEEDS_PTRACE
def test_a_target_that_already_records_is_one_line_and_keeps_its_session(start_server: Any) -> None:
    """A program running under ``asynclens run`` has its own session: attaching says so, and
    leaves that session (and its threads) as they were."""
    server = start_server(python=sys.executable, flags=("-m", "asynclens", "run", "--no-summary", "-q"))
    assert server.answers_within(0.3) > 0
    before = server.check()["threads"]
    assert before  # its own session's flusher and watchdog
    _one_line_error(_run_attach(server.pid, "--duration", "1"), "did not start in the target", "already active")
    assert server.check()["threads"] == before
    assert server.answers_within(0.3) > 0
