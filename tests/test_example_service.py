"""The README's main job: run the example service under asynclens and get a report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = os.path.join(ROOT, "examples", "service.py")


def test_example_service_runs_under_asynclens(tmp_path: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "asynclens", "run", "-o", "report.html", "-o", "run.jsonl", SERVICE],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert re.match(r"served 35 requests on port \d+; 2 upstream connections left open", r.stdout)
    assert "Slowest spans" in r.stderr and "handler.user" in r.stderr
    report = (tmp_path / "report.html").read_text()
    data = re.search(r'<script type="application/json" id="asynclens-data">(.*?)</script>', report, re.DOTALL)
    assert data
    payload = json.loads(data.group(1))
    names = set(payload["strings"])
    assert {
        "GET /user/",
        "handler.user",
        "db.query",
        "handler.search",
        "score_documents",
        "render_report",
        "audit",
    } <= names
    assert payload["timeline"]["shown"] == payload["timeline"]["total"] > 90


def test_example_service_runs_without_asynclens(tmp_path: Any) -> None:
    r = subprocess.run(
        [sys.executable, SERVICE],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("served 35 requests")


def test_demo_command(tmp_path: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "asynclens", "demo", "-q", "-o", "demo.html"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo.html").read_text().startswith("<!DOCTYPE html>")
