"""python -m asynclens, driven as a user would: subprocesses, exit codes, argv, stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, asynclens

    @asynclens.trace
    async def work():
        await asyncio.sleep(0.001)

    asyncio.run(work())
    print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0]}))
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "exit":
        sys.exit(7)
    if mode == "message":
        sys.exit("goodbye from the program")
    if mode == "raise":
        def inner():
            raise ValueError("boom")
        inner()
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "wait":
        async def forever():
            print("ready", flush=True)
            await asyncio.sleep(60)
        asyncio.run(forever())
    """
)


def cli(*args: str, cwd: Any, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asynclens", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )


@pytest.fixture
def program(tmp_path: Any) -> str:
    (tmp_path / "prog.py").write_text(PROGRAM)
    return "prog.py"


def test_run_keeps_argv_stdout_and_writes_outputs(tmp_path: Any, program: str) -> None:
    r = cli("run", "-o", "out.html", "-o", "out.json", "--no-lag", program, "plain", "--flag", "-o", "x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)  # the program's stdout is only the program's
    assert seen["argv"] == ["prog.py", "plain", "--flag", "-o", "x"]
    assert seen["name"] == "__main__" and seen["path0"] == str(tmp_path)
    assert r.stderr.startswith("asynclens: 1 spans in ")  # the summary goes to stderr
    assert "asynclens: wrote out.html" in r.stderr and "asynclens: wrote out.json" in r.stderr
    assert json.loads((tmp_path / "out.json").read_text())["traceEvents"]
    assert "\x1b[" not in r.stderr  # not a terminal: no colour


@pytest.mark.parametrize(
    ("mode", "code", "message"), [("exit", 7, None), ("message", 1, "goodbye from the program"), ("", 0, None)]
)
def test_exit_status_is_the_programs(tmp_path: Any, program: str, mode: str, code: int, message: str | None) -> None:
    r = cli("run", "-q", "--no-summary", program, *([mode] if mode else []), cwd=tmp_path)
    assert r.returncode == code
    assert r.stderr.strip() == (message or "")


def test_uncaught_exception_prints_the_programs_traceback(tmp_path: Any, program: str) -> None:
    r = cli("run", "-o", "out.jsonl", program, "raise", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'File "prog.py"' in lines[1]
    assert "ValueError: boom" in lines
    assert "runpy" not in r.stderr and "asynclens/cli.py" not in r.stderr
    assert (tmp_path / "out.jsonl").read_text().count('"kind":"span"') == 1  # outputs still written


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_keyboard_interrupt_ends_by_sigint_after_writing(tmp_path: Any, program: str) -> None:
    r = cli("run", "-q", "-o", "out.jsonl", program, "interrupt", cwd=tmp_path)
    assert r.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in r.stderr
    assert (tmp_path / "out.jsonl").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_ends_by_sigterm_after_writing(tmp_path: Any, program: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynclens", "run", "-q", "-o", "out.jsonl", program, "wait"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the argv line
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM
    assert '"kind":"session_end"' in (tmp_path / "out.jsonl").read_text()


def test_run_module(tmp_path: Any) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(PROGRAM)
    r = cli("run", "-q", "--no-summary", "-m", "pkg.tool", "plain", "-x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["argv"][0].endswith(os.path.join("pkg", "tool.py")) and seen["argv"][1:] == ["plain", "-x"]
    assert seen["name"] == "__main__"


def _record(tmp_path: Any, program: str, out: str) -> None:
    r = cli("run", "-q", "--no-summary", "-o", out, program, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_report_merges_processes_into_one_timeline(tmp_path: Any, program: str) -> None:
    _record(tmp_path, program, "a.jsonl")
    _record(tmp_path, program, "b.jsonl")  # starts after a's process has exited
    r = cli("report", "a.jsonl", "b.jsonl", "--format", "chrome", "-o", "merged.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "asynclens: read a.jsonl: " in r.stderr and "asynclens: wrote merged.json (chrome" in r.stderr
    events = json.loads((tmp_path / "merged.json").read_text())["traceEvents"]
    processes = [e for e in events if e["ph"] == "M" and e["name"] == "process_name"]
    assert len(processes) == 2
    works = sorted((e["ts"], e["pid"]) for e in events if e["ph"] == "X" and e["name"] == "work")
    assert len({pid for _, pid in works}) == 2 and works[1][0] > works[0][0]  # b ran after a
    text = cli("report", "a.jsonl", "b.jsonl", cwd=tmp_path)
    assert text.stdout.startswith("asynclens: 2 spans in ")
    for fmt, check in [("html", "<!DOCTYPE html>"), ("speedscope", '"$schema"'), ("folded", "work ")]:
        out = cli("report", "-q", "a.jsonl", "--format", fmt, cwd=tmp_path)
        assert out.returncode == 0 and check in out.stdout and out.stderr == ""


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["report", "missing.jsonl"], 1, "asynclens: error: missing.jsonl: cannot open: No such file or directory"),
        (["report", "bad.jsonl"], 1, "asynclens: error: bad.jsonl:2: not valid JSON"),
        (["report", "bad.jsonl", "--format", "pdf"], 2, "asynclens: error: argument --format: invalid choice: 'pdf'"),
        (["report", "good.jsonl", "-o", "out.pdf"], 2, "asynclens: error: cannot tell the format of 'out.pdf'"),
        (["run"], 2, "asynclens: error: run: give a script"),
        (["run", "nope.py"], 2, "asynclens: error: run: no such script 'nope.py'"),
        (["run", "-o", "x.docx", "prog.py"], 2, "asynclens: error: cannot tell the format of 'x.docx'"),
        (
            ["run", "-o", "no/such/dir/x.html", "prog.py"],
            2,
            "asynclens: error: cannot write 'no/such/dir/x.html': no such directory",
        ),
        (["frobnicate"], 2, "asynclens: error: argument {run,report,attach,top,demo}: invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    tmp_path: Any, program: str, args: list[str], code: int, message: str
) -> None:
    from asynclens.report.fileformat import encode_record

    try:
        from ._render_data import info
    except ImportError:
        from _render_data import info  # type: ignore[no-redef]
    (tmp_path / "bad.jsonl").write_text(encode_record(info()) + "\n{not json\n")
    (tmp_path / "good.jsonl").write_text(encode_record(info()) + "\n")
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == code
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(message), r.stderr
    assert "Traceback" not in r.stderr


def test_report_skips_kinds_from_newer_versions(tmp_path: Any) -> None:
    from asynclens.report.fileformat import encode_record

    try:
        from ._render_data import info
    except ImportError:
        from _render_data import info  # type: ignore[no-redef]
    (tmp_path / "new.jsonl").write_text(encode_record(info()) + '\n{"kind":"hologram","x":1}\n{"kind":"hologram"}\n')
    r = cli("report", "new.jsonl", cwd=tmp_path)
    assert r.returncode == 0
    assert "skipped records of kinds this version does not know: hologram ×2" in r.stderr


def test_colour_can_be_forced(tmp_path: Any, program: str) -> None:
    r = cli("run", "-q", "--color", "always", program, cwd=tmp_path)
    assert "\x1b[1masynclens: 1 spans" in r.stderr


def test_report_writes_every_output(tmp_path: Any, program: str) -> None:
    _record(tmp_path, program, "run.jsonl")
    r = cli("report", "run.jsonl", "-o", "a.html", "-o", "b.txt", "-o", "c.folded", "-o", "d.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("a.html", "b.txt", "c.folded", "d.html"):
        assert f"asynclens: wrote {name} (" in r.stderr
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "d.html").read_text() == (tmp_path / "a.html").read_text()
    assert (tmp_path / "b.txt").read_text().startswith("asynclens: 1 spans in ")
    assert (tmp_path / "c.folded").read_text().startswith("work ")
    assert r.stdout == ""


def test_report_checks_every_output_before_reading(tmp_path: Any, program: str) -> None:
    _record(tmp_path, program, "run.jsonl")
    r = cli("report", "run.jsonl", "-o", "ok.html", "-o", "no/such/x.txt", cwd=tmp_path)
    assert r.returncode == 2
    assert (
        r.stderr
        == "asynclens: error: cannot write 'no/such/x.txt': no such directory "
        + repr(str(tmp_path / "no" / "such"))
        + "\n"
    )
    assert not (tmp_path / "ok.html").exists()


def test_version(tmp_path: Any) -> None:
    import asynclens

    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"asynclens {asynclens.__version__}\n"


def test_a_missing_module_did_not_start(tmp_path: Any) -> None:
    r = cli("run", "-o", "out.jsonl", "-m", "nosuchmod_for_asynclens", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == "asynclens: error: run: no module named 'nosuchmod_for_asynclens': the program did not start\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_a_missing_submodule_or_a_syntax_error_did_not_start(tmp_path: Any) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "broken.py").write_text("x = (\n")
    for target in (["-m", "pkg.nosuch"], ["broken.py"]):
        r = cli("run", *target, cwd=tmp_path)
        assert r.returncode == 1
        lines = r.stderr.splitlines()
        assert lines[-1] == "asynclens: error: the program did not start (nothing was recorded)"
        assert "spans in" not in r.stderr  # no empty summary
        assert "Traceback" not in r.stderr and "runpy" not in r.stderr
    assert "SyntaxError" in r.stderr


def test_an_import_error_of_the_program_itself_is_its_own(tmp_path: Any) -> None:
    (tmp_path / "app.py").write_text("import nosuchdependency_for_asynclens\n")
    r = cli("run", "app.py", cwd=tmp_path)
    assert r.returncode == 1
    assert 'File "app.py", line 1' in r.stderr and "did not start" not in r.stderr
    assert "asynclens: 0 spans in " in r.stderr  # it started: the summary is printed


def test_demo_runs_outside_a_source_checkout(tmp_path: Any) -> None:
    import shutil

    import asynclens

    site = tmp_path / "site"
    shutil.copytree(
        os.path.dirname(asynclens.__file__), site / "asynclens", ignore=shutil.ignore_patterns("__pycache__")
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = cli("demo", "-o", "demo.html", cwd=work, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "not found" not in r.stderr
    assert "asynclens: wrote demo.html" in r.stderr
    html = (work / "demo.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    # run from a copy outside the package: its frames are the program's, not asynclens's own
    assert "service.py:" in html and "handle_report" in html
    assert str(site / "asynclens" / "_demo") not in html
