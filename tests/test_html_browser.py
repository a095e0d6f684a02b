"""The HTML report opens in a real headless browser (Debian's chromium) without errors.

Skipped, with the reason, when no chromium is installed (scripts/test installs it
when it runs as root)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from asynclens.sinks.html import render_html

try:  # works whether or not tests/ is a package
    from ._render_data import full_run
except ImportError:
    from _render_data import full_run  # type: ignore[no-redef]

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (apt-get install chromium)")


def chromium(tmp_path: Any, page: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
        *extra,
        "file://" + os.path.abspath(page),
    ]
    try:
        return subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 120 s (machine overloaded?)")


def body_attrs(dom: str) -> str:
    match = re.search(r"<body([^>]*)>", dom)
    assert match, dom[:500]
    return match.group(1)


def test_report_renders_without_errors_and_escapes(tmp_path: Any) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(full_run()), encoding="utf-8")
    dom_run = chromium(tmp_path, str(page), "--dump-dom")
    attrs = body_attrs(dom_run.stdout)
    assert 'data-rendered="ok"' in attrs, attrs
    assert "data-error" not in attrs, attrs
    assert "Uncaught" not in dom_run.stderr, dom_run.stderr[-2000:]
    dom = dom_run.stdout
    # every section was built, the stall's culprit line is in the table, user markup stayed text
    for section in ("tl", "flame", "lag", "stalls", "leaks", "summary"):
        assert f'id="{section}"' in dom
    assert "app.py:41 in handle_search" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom
    shot = tmp_path / "shot.png"
    chromium(tmp_path, str(page), f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20_000  # a drawn page, not a blank one


def test_a_script_error_is_detected(tmp_path: Any) -> None:
    """The check above can fail: a broken report sets data-error instead of data-rendered."""
    page = tmp_path / "broken.html"
    page.write_text(
        render_html(full_run()).replace("header(); timeline();", "header(); noSuchFunction();"), encoding="utf-8"
    )
    attrs = body_attrs(chromium(tmp_path, str(page), "--dump-dom").stdout)
    assert "data-error" in attrs and 'data-rendered="ok"' not in attrs
