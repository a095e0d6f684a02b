"""The reports' loose ends: the session's summary handed to the HTML and text sinks, the
converted report's blind spots first, a connection left open counted once, --full-stacks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import asynclens
from asynclens.cli import main
from asynclens.records import SessionEnd, SessionInfo, StackSample, Stall
from asynclens.sinks.html import HtmlSink, build_payload
from asynclens.sinks.text import TextSink

MS = 1_000_000
T0 = 10_000 * MS
LIBRARY = "/usr/lib/python3.11/json/decoder.py:353 in raw_decode"
BLIND = "Not measured: the scheduler on loop <MyLoop> (patching the class failed)"


def write_run(path: Any) -> None:
    """A recorded run: one stall inside a library call, and a blind spot in its statistics."""
    header = SessionInfo("s1", 1, 4242, ("app.py",), "3.11.7", T0, 1_700_000_000 * 10**9)
    stall = Stall(
        loop_id=1,
        start_ns=T0 + 10 * MS,
        end_ns=T0 + 210 * MS,
        file="app.py",
        line=12,
        function="handler",
        stack=("app.py:3 in main", "app.py:12 in handler", LIBRARY),
        samples=(StackSample(("app.py:3 in main", "app.py:12 in handler", LIBRARY), 4),),
        cause="cpu",
    )
    end = SessionEnd(end_ns=T0 + 300 * MS, statistics={"blind_spots": [BLIND]})
    path.write_text("".join(json.dumps(r.to_dict(compact=True)) + "\n" for r in (header, stall, end)))


def test_the_html_and_text_sinks_get_the_summary_the_session_prints(tmp_path: Any) -> None:
    html_path, text_path = tmp_path / "r.html", tmp_path / "r.txt"

    async def work() -> None:
        async with asynclens.span("request"):
            await asyncio.sleep(0.001)

    with asynclens.session(sinks=[HtmlSink(html_path), TextSink(text_path)], lag=False, track_handles=False) as s:
        asyncio.run(work())
    printed = s.summary()
    # the live scheduler probe's lines are in it: what the records alone would not say
    assert "coverage: " in printed
    assert text_path.read_text() == printed + "\n"
    page = html_path.read_text()
    data = json.loads(page.split('id="asynclens-data">', 1)[1].split("</script>", 1)[0])
    assert data["summary"] == printed


def test_a_converted_report_names_its_blind_spots_first(tmp_path: Any, capsys: Any) -> None:
    run = tmp_path / "run.jsonl"
    write_run(run)
    assert main(["report", "-q", "--color", "never", str(run)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == BLIND
    assert text.splitlines()[1].startswith("asynclens: 0 spans in 300.0 ms")
    from asynclens.cli import load

    assert build_payload(load([str(run)]))["summary"].splitlines()[0] == BLIND


def test_report_full_stacks_keeps_the_libraries_frames(tmp_path: Any) -> None:
    run = tmp_path / "run.jsonl"
    write_run(run)
    for extra in ([], ["--full-stacks"]):
        out = tmp_path / f"out{len(extra)}.folded"
        assert main(["report", "-q", str(run), "-o", str(out), *extra]) == 0
        stalls = [line for line in out.read_text().splitlines() if line.startswith("[event loop stall]")]
        assert stalls, out.read_text()
        assert any("json/decoder.py" in line for line in stalls) == bool(extra), stalls
        scope = tmp_path / f"out{len(extra)}.speedscope.json"
        assert main(["report", "-q", str(run), "-o", str(scope), *extra]) == 0
        files = {f.get("file", "") for f in json.loads(scope.read_text())["shared"]["frames"]}
        assert any(f.endswith("json/decoder.py") for f in files) == bool(extra), files


def test_run_full_stacks_reaches_the_folded_sink(tmp_path: Any) -> None:
    (tmp_path / "block.py").write_text(
        textwrap.dedent(
            """
            import asyncio, subprocess, sys

            async def main():
                subprocess.run([sys.executable, "-c", "import time; time.sleep(0.4)"], check=True)

            asyncio.run(main())
            """
        )
    )
    seen = {}
    for extra in ([], ["--full-stacks"]):
        out = f"out{len(extra)}.folded"
        r = subprocess.run(
            [sys.executable, "-m", "asynclens", "run", "-q", "--no-summary", "-o", out, *extra, "block.py"],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
        stalls = [line for line in (tmp_path / out).read_text().splitlines() if line.startswith("[event loop stall]")]
        assert stalls, (tmp_path / out).read_text()
        seen[bool(extra)] = any("subprocess.py" in line for line in stalls)
    assert seen == {False: False, True: True}


def test_a_connection_left_open_counts_once_in_the_handles_line() -> None:
    """As in the summary's "Left open": a connection is one thing, not its socket and its transport."""

    async def main() -> tuple[asynclens.Session, Any, Any]:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with asynclens.session(lag=False, scheduler=False) as session:
            _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.close()
        await asyncio.sleep(0.05)
        server.close()
        return session, server, writer

    session, _, _ = asyncio.run(main())
    leaks = session.probe("handles").leaks
    # both ends of the connection (each a socket and its transport) and the server's handler task
    assert sorted(leak.handle_kind for leak in leaks) == ["socket", "socket", "task", "transport", "transport"]
    line = next(line for line in session.probe("handles").summary_lines() if line.startswith("Handles: "))
    assert line.endswith(", 3 left open or closed by GC at the end"), line
