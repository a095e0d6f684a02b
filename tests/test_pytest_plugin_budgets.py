"""Decision logic of the pytest plugin, with duck-typed stand-in records (no probes needed)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from asynclens._durations import DurationError, parse_duration
from asynclens.pytest.budgets import (
    AllowRule,
    AllowRuleError,
    Policy,
    evaluate,
    findings_from,
    module_of,
    parse_frame,
    render_findings,
)

MS = 1_000_000


def stall(duration_ms: float = 120, start_ns: int = 1_000 * MS, **fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "kind": "stall",
        "loop_id": 1,
        "start_ns": start_ns,
        "end_ns": start_ns + int(duration_ms * MS),
        "file": "app/db.py",
        "line": 41,
        "function": "query",
        "stack": ("tests/test_app.py:20 in test_search", "app/search.py:7 in handle_search", "app/db.py:41 in query"),
        "task": "Task-3",
        "span_name": "db.query",
        "cause": "blocking",
    }
    base.update(fields)
    return SimpleNamespace(**base)


def leak(**fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "kind": "leak",
        "handle_id": 7,
        "handle_kind": "socket",
        "description": "<socket laddr=127.0.0.1:40000 raddr=127.0.0.1:5432>",
        "open_ns": 1_000 * MS,
        "close_ns": None,
        "closed_by": None,
        "site": "app/pool.py:12 in connect",
        "stack": ("tests/test_app.py:30 in test_pool", "app/pool.py:12 in connect"),
        "span_name": "pool.connect",
    }
    base.update(fields)
    return SimpleNamespace(**base)


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("50ms", 50 * MS),
        ("0.05s", 50 * MS),
        ("50", 50 * MS),
        (" 2.5 ms ", 2_500_000),
        ("500us", 500_000),
        ("500µs", 500_000),
        ("10ns", 10),
        ("1S", 1_000 * MS),
        ("0", 0),
        (50, 50 * MS),
        (0.5, 500_000),
        (timedelta(milliseconds=20), 20 * MS),
    ],
)
def test_durations_accept_units_bare_milliseconds_and_timedelta(value: object, ns: int) -> None:
    assert parse_duration(value, "--opt") == ns


@pytest.mark.parametrize("value", ["fast", "-5ms", "5 parsecs", "ms", "", True, None, float("nan"), -1, [50]])
def test_bad_durations_raise_one_line_error_naming_the_option(value: object) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value, "--asynclens-max-stall")
    message = str(info.value)
    assert message.startswith("--asynclens-max-stall: ")
    assert "\n" not in message


def test_unknown_unit_is_named() -> None:
    with pytest.raises(DurationError, match="unknown unit 'parsecs'"):
        parse_duration("5 parsecs", "max_stall")


# --------------------------------------------------------------------- frames


def test_parse_frame_splits_path_line_and_function() -> None:
    assert parse_frame("app/db.py:41 in query") == ("app/db.py", 41, "query")
    assert parse_frame("C:/x/app.py:3 in f") == ("C:/x/app.py", 3, "f")
    assert parse_frame("<frozen importlib>") == ("<frozen importlib>", None, "")


def test_module_of_uses_sys_path(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    monkeypatch.setattr(sys, "path", [root, *sys.path])
    module_of.cache_clear()
    assert module_of(os.path.join(root, "legacy", "db.py")) == "legacy.db"
    assert module_of(os.path.join(root, "legacy", "__init__.py")) == "legacy"
    assert module_of(os.path.join(root, "notes.txt")) is None
    module_of.cache_clear()


# ---------------------------------------------------------------- allow rules


def test_allow_rule_parses_kind_prefix() -> None:
    rule = AllowRule.parse("stall: legacy.db:connect", "ini")
    assert rule.kinds == {"stall"} and rule.pattern == "legacy.db:connect"
    assert AllowRule.parse("legacy.db", "ini").kinds == {"stall", "leak", "sched", "never_resumable", "busy_yield", "wait"}


@pytest.mark.parametrize("text", ["", "   ", "leak:", 3])
def test_malformed_allow_rules_are_rejected(text: object) -> None:
    with pytest.raises(AllowRuleError, match="^ini: allow rule"):
        AllowRule.parse(text, "ini")


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ("query", True),  # function name of the culprit frame
        ("handle_search", True),  # function of an outer frame
        ("q*", True),
        ("search", False),
        ("app/db.py", True),  # path
        ("db.py", True),  # path suffix
        ("app/db.py:41", True),  # path:line
        ("app/db.py:42", False),
        ("*/search.py", True),
        ("db.query", True),  # span name
        ("Task-3", True),  # task name
        ("leak:query", False),  # kind restriction
        ("stall:query", True),
    ],
)
def test_allow_rule_matching_for_stalls(rule: str, matches: bool) -> None:
    (finding,) = findings_from([stall()], end_ns=0)
    assert AllowRule.parse(rule, "test").matches(finding) is matches


def test_allow_rule_matches_modules_and_module_function(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    monkeypatch.setattr(sys, "path", [root, *sys.path])
    module_of.cache_clear()
    record = stall(file=os.path.join(root, "legacy", "db.py"), stack=(f"{root}/legacy/db.py:9 in connect",))
    (finding,) = findings_from([record], end_ns=0)
    for text, expected in [
        ("legacy", True),
        ("legacy.db", True),
        ("legacy.db:connect", True),
        ("legacy.db:other", False),
        ("leg", False),
    ]:
        assert AllowRule.parse(text, "t").matches(finding) is expected, text
    module_of.cache_clear()


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ("*127.0.0.1:5432*", True),  # description
        ("leak:socket", True),  # handle kind
        ("thread", False),
        ("connect", True),  # function of the opening site
        ("app/pool.py:12", True),
        ("stall:*5432*", False),
    ],
)
def test_allow_rule_matching_for_leaks(rule: str, matches: bool) -> None:
    (finding,) = findings_from([leak()], end_ns=2_000 * MS)
    assert AllowRule.parse(rule, "test").matches(finding) is matches


# ------------------------------------------------------------------- verdicts


def test_stall_over_the_limit_fails_under_it_does_not() -> None:
    findings = findings_from([stall(120), stall(30, start_ns=5_000 * MS)], end_ns=0)
    verdict = evaluate(findings, Policy(max_stall_ns=50 * MS))
    assert [f.duration_ns for f in verdict.failures] == [120 * MS]
    assert len(verdict.findings) == 2


def test_without_a_limit_stalls_are_reported_not_failed() -> None:
    verdict = evaluate(findings_from([stall(900)], end_ns=0), Policy())
    assert verdict.failures == [] and len(verdict.findings) == 1


@pytest.mark.parametrize(("mode", "failures", "warnings"), [("fail", 1, 0), ("warn", 0, 1), ("ignore", 0, 0)])
def test_leak_modes(mode: str, failures: int, warnings: int) -> None:
    verdict = evaluate(findings_from([leak()], end_ns=2_000 * MS), Policy(leaks=mode))
    assert (len(verdict.failures), len(verdict.warnings)) == (failures, warnings)


def test_allowed_findings_never_fail_and_count_rule_hits() -> None:
    used = AllowRule.parse("stall:app/db.py", "ini")
    unused = AllowRule.parse("leak:*:6379*", "ini")
    findings = findings_from([stall(120), stall(200), leak()], end_ns=2_000 * MS)
    verdict = evaluate(findings, Policy(max_stall_ns=50 * MS, leaks="fail", allow=(used, unused)))
    assert verdict.rule_hits[used] == 2 and verdict.rule_hits[unused] == 0
    assert [f.kind for f in verdict.failures] == ["leak"]
    assert len(verdict.allowed) == 2


def test_findings_inside_excluded_intervals_are_not_the_tests() -> None:
    findings = findings_from([stall(120, start_ns=100), leak(open_ns=150), stall(120, start_ns=1_000)], end_ns=2_000)
    verdict = evaluate(findings, Policy(max_stall_ns=0, leaks="fail"), excluded=[(50, 200)])
    assert [f.start_ns for f in verdict.failures] == [1_000]


def test_leak_duration_runs_to_close_or_session_end() -> None:
    open_leak, gc_leak = findings_from(
        [leak(open_ns=100), leak(open_ns=100, close_ns=400, closed_by="gc")], end_ns=1_100
    )
    assert (open_leak.duration_ns, gc_leak.duration_ns) == (1_000, 300)
    assert "garbage collector" in gc_leak.what


def test_sched_delay_from_task_records_names_task_and_span() -> None:
    span = SimpleNamespace(kind="span", span_id=99, name="handle_request")
    task = SimpleNamespace(kind="task", name="worker-1", max_sched_wait_ns=34 * MS, span_id=99, created_ns=0)
    snapshot = SimpleNamespace(kind="sched", start_ns=0, ready_delay={"max": 50 * MS})
    findings = findings_from([span, task, snapshot], end_ns=0)
    assert len(findings) == 1  # the per-task view wins over the loop-wide snapshot
    verdict = evaluate(findings, Policy(max_sched_delay_ns=20 * MS))
    message = verdict.failure_message()
    assert "worker-1" in message and "handle_request" in message and "34.0 ms" in message and "20.0 ms" in message


def test_sched_delay_falls_back_to_snapshots() -> None:
    snapshot = SimpleNamespace(kind="sched", start_ns=0, ready_delay={"max": 50 * MS, "p99": 1})
    (finding,) = findings_from([snapshot, SimpleNamespace(kind="sched", start_ns=0, ready_delay={})], end_ns=0)
    assert finding.duration_ns == 50 * MS


def test_failure_message_names_line_span_duration_and_limit() -> None:
    verdict = evaluate(findings_from([stall(120)], end_ns=0), Policy(max_stall_ns=50 * MS))
    message = verdict.failure_message()
    assert message.splitlines()[0] == "asynclens: 1 event-loop stall over the 50.0 ms limit (max_stall):"
    assert "event loop blocked (blocking) for 120.0 ms at app/db.py:41 in query" in message
    assert "span 'db.query', task 'Task-3'" in message
    assert message.rstrip().endswith("app/db.py:41 in query")


def test_failure_message_for_leaks_names_site_span_and_open_time() -> None:
    verdict = evaluate(findings_from([leak(open_ns=0)], end_ns=12 * MS), Policy(leaks="fail"))
    message = verdict.failure_message()
    assert "leaked socket <socket laddr=127.0.0.1:40000 raddr=127.0.0.1:5432>, open for 12.0 ms" in message
    assert "at app/pool.py:12 in connect" in message and "span 'pool.connect'" in message


def test_long_stacks_are_cut_to_the_innermost_frames() -> None:
    frames = tuple(f"app/m.py:{i} in f{i}" for i in range(20))
    message = render_findings(findings_from([stall(stack=frames)], end_ns=0), Policy())
    assert "(12 frames of pytest, asyncio or outer calls not shown)" in message
    assert "app/m.py:19 in f19" in message and "app/m.py:11 in f11" not in message


def test_records_missing_optional_fields_still_render() -> None:
    bare = SimpleNamespace(kind="stall", start_ns=0, end_ns=60 * MS)
    message = render_findings(findings_from([bare, SimpleNamespace(kind="leak")], end_ns=0), Policy(max_stall_ns=1))
    assert "event loop blocked for 60.0 ms" in message and "no span" in message and "leaked handle" in message


def test_pytest_and_asyncio_frames_are_left_out_of_messages() -> None:
    frames = (
        "/venv/lib/python3.11/site-packages/pluggy/_execution.py:147 in _multicall",
        "/venv/lib/python3.11/site-packages/_pytest/python.py:187 in pytest_pyfunc_call",
        "/usr/lib/python3.11/asyncio/base_events.py:1922 in _run_once",
        "tests/test_app.py:8 in test_leaky",
    )
    message = render_findings(findings_from([stall(stack=frames)], end_ns=0), Policy())
    assert "tests/test_app.py:8 in test_leaky" in message
    assert "pluggy" not in message and "_pytest" not in message and "base_events" not in message
    assert "(3 frames of pytest, asyncio or outer calls not shown)" in message


def test_unsampled_stalls_say_the_line_is_unknown() -> None:
    bare = SimpleNamespace(kind="stall", start_ns=0, end_ns=60 * MS, sampled=False)
    message = render_findings(findings_from([bare], end_ns=0), Policy())
    assert "event loop blocked for 60.0 ms (no stack could be sampled while it was blocked" in message


def test_leak_descriptions_that_name_their_kind_are_not_repeated() -> None:
    record = leak(handle_kind="task", description="task 'orphan' (forever) pending")
    (finding,) = findings_from([record], end_ns=2_000 * MS)
    assert finding.what.startswith("leaked task 'orphan' (forever) pending, open for")


def test_paths_below_the_working_directory_are_shown_relative() -> None:
    here = os.path.join(os.getcwd(), "app", "db.py")
    record = stall(file=here, stack=(f"{here}:41 in query", "/elsewhere/lib.py:3 in call"))
    message = render_findings(findings_from([record], end_ns=0), Policy())
    assert f"at {os.path.join('app', 'db.py')}:41 in query" in message
    assert "      /elsewhere/lib.py:3 in call" in message and here not in message
