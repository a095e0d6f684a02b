"""The pytest plugin, driven through pytester on real inner test files.

Stalls and leaks are planted as stand-in records written to the test's memory
sink (the probes' records have the same fields), so every behaviour of the
plugin is exercised whether or not the probes are installed; the tests at the
end use the real probes and skip while those are missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.metadata import entry_points

import pytest

import asynclens

pytest_plugins = ["pytester"]

PLANTING = '''
"""Plant stand-in records into the running test's asynclens session."""
import types
import asynclens

MS = 1_000_000

def _sink():
    session = asynclens.current_session()
    assert session is not None, "no asynclens session is active"
    return session, session.sinks[0]

def stall(ms, file="app/db.py", line=41, function="query", span="db.query", task="Task-1", began_ms_ago=0):
    session, sink = _sink()
    start = session.now() - int(began_ms_ago * MS)
    sink.write([types.SimpleNamespace(
        kind="stall", loop_id=1, start_ns=start, end_ns=start + int(ms * MS), file=file, line=line,
        function=function, stack=(f"{file}:{line} in {function}",), task=task, span_name=span, cause="blocking",
    )])

def waited(ms, task="worker-1", span_name="handle_request"):
    session, sink = _sink()
    span_id = 4242
    sink.write([
        types.SimpleNamespace(kind="span", span_id=span_id, name=span_name, start_ns=0, end_ns=0),
        types.SimpleNamespace(
            kind="task", task_id=1, name=task, loop_id=1, created_ns=session.now(), done_ns=session.now(),
            steps=3, cpu_ns=0, sched_wait_ns=int(ms * MS), max_sched_wait_ns=int(ms * MS), span_id=span_id,
        ),
    ])

def leak(description="<socket raddr=127.0.0.1:5432>", site="app/pool.py:12 in connect", kind="socket"):
    session, sink = _sink()
    sink.write([types.SimpleNamespace(
        kind="leak", handle_id=1, handle_kind=kind, description=description, open_ns=session.now(),
        close_ns=None, closed_by=None, site=site, stack=(site,), span_name="pool.connect",
    )])
'''

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this suite may itself run under xdist
    pytester.makepyfile(planting=PLANTING)
    pytester.makeini(INI.format(extra=""))
    return pytester


def ini(pytester: pytest.Pytester, extra: str) -> None:
    pytester.makeini(INI.format(extra=extra))


def _default_session_has(probe: str) -> bool:
    return asynclens.Session().probe(probe) is not None


# ----------------------------------------------------------------- registration


def test_registered_through_the_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("asynclens") == "asynclens.pytest.plugin"


def test_only_the_plugin_module_imports_pytest() -> None:
    import pathlib

    package = pathlib.Path(asynclens.__file__).parent
    importers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(
            line.startswith(("import pytest", "from pytest", "from _pytest")) for line in path.read_text().splitlines()
        )
    )
    assert importers == [os.path.join("pytest", "plugin.py")]


def test_options_appear_in_help(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--help")
    for option in (
        "--asynclens ",
        "--asynclens-max-stall",
        "--asynclens-leaks",
        "--asynclens-trace-dir",
        "--asynclens-allow",
    ):
        assert option in result.stdout.str()


# --------------------------------------------------------------- quiet by default


CLEAN = """
import asyncio, pytest, asynclens

@asynclens.trace
async def work():
    await asyncio.sleep(0)

@pytest.mark.asyncio
async def test_async():
    await work()

def test_sync():
    asyncio.run(work())
"""


def test_plugin_is_silent_when_not_asked_for(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_clean=CLEAN)
    result = inner.runpytest()
    result.assert_outcomes(passed=2)
    assert "asynclens" not in result.stdout.str()


def test_a_clean_suite_under_asynclens_prints_one_summary_line(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_clean=CLEAN)
    plain = inner.runpytest()
    result = inner.runpytest("--asynclens")
    result.assert_outcomes(passed=2)
    added = [line for line in result.stdout.lines if line not in plain.stdout.lines and " passed in " not in line]
    assert added == ["asynclens: 2 tests recorded: no stalls, leaks or scheduling delays"]


def test_ini_turns_on_every_test(inner: pytest.Pytester) -> None:
    ini(inner, "asynclens = true")
    inner.makepyfile(test_clean=CLEAN)
    result = inner.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["asynclens: 2 tests recorded: no stalls*", "Slowest spans:", "*work*test_clean.py::test_*"]
    )


# -------------------------------------------------------------- the lens fixture


def test_lens_fixture_gives_spans_and_statistics(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio, pytest, asynclens

        @pytest.mark.asyncio
        async def test_spans(lens):
            async with asynclens.span("outer"):
                async with asynclens.span("inner"):
                    await asyncio.sleep(0)
            assert [s.name for s in lens.spans] == ["inner", "outer"]
            assert lens.statistics().spans_recorded == 2
            assert lens.session is asynclens.current_session()
            assert lens.stalls == [] and lens.lag == [] or lens.session.probe("lag") is not None

        def test_sync_asyncio_run(lens):
            async def main():
                async with asynclens.span("in-run"):
                    await asyncio.sleep(0)
            asyncio.run(main())
            assert [s.name for s in lens.spans] == ["in-run"]

        def test_each_test_has_its_own_session(lens):
            assert lens.spans == []
        """
    )
    result = inner.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert asynclens.current_session() is None
    result = inner.runpytest("-p", "no:randomly", "--asynclens")  # one session for the run, a window per test
    result.assert_outcomes(passed=3)
    assert asynclens.current_session() is None


def test_a_test_opening_its_own_session_is_told_how_to_coexist(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asynclens.testing

        def test_captures():
            with asynclens.testing.capture():
                pass
        """
    )
    result = inner.runpytest("--asynclens")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*SessionError: another asynclens session is already active*",
            "*mark it @pytest.mark.asynclens(enabled=False)*",
        ]
    )


def test_asynclens_records_the_run_in_one_session_closed_around_disabled_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asynclens, pytest

        seen = []

        def test_first():
            seen.append(asynclens.current_session())

        def test_second():
            seen.append(asynclens.current_session())
            assert seen[0] is seen[1] and seen[0].state == "active"

        @pytest.mark.asynclens(enabled=False)
        def test_own_session():
            assert asynclens.current_session() is None
            with asynclens.session(name="mine") as mine:
                pass
            assert seen[0].state == "closed"

        def test_after():
            session = asynclens.current_session()
            assert session is not None and session is not seen[0]
        """
    )
    result = inner.runpytest("--asynclens", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["asynclens: 3 tests recorded: no stalls, leaks or scheduling delays"])
    assert asynclens.current_session() is None


def test_a_finished_tests_window_and_records_are_released(inner: pytest.Pytester) -> None:
    """pytest keeps every item until the run ends: a test's records must not stay with it."""
    inner.makepyfile(
        """
        import gc, weakref, asynclens

        refs = []

        def test_records(lens):
            with asynclens.span("kept-until-teardown"):
                pass
            assert [s.name for s in lens.spans] == ["kept-until-teardown"]
            refs.append(weakref.ref(lens))

        def test_later():
            gc.collect()
            assert refs[0]() is None
        """
    )
    inner.runpytest("--asynclens", "-p", "no:randomly").assert_outcomes(passed=2)


def test_lens_asserts_name_the_culprit(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest, planting

        def test_stalls(lens):
            if lens.session.probe("lag") is None:
                pytest.skip("lag probe missing")
            planting.stall(80, file="app/slow.py", line=9, function="crunch", span="report.build")
            lens.assert_no_stalls(longer_than="100ms")
            lens.assert_no_stalls(longer_than="50ms")

        def test_sched(lens):
            if lens.session.probe("scheduler") is None:
                pytest.skip("scheduler probe missing")
            lens.assert_max_sched_delay("1s")

        def test_bad_kind(lens):
            with pytest.raises(ValueError, match="unknown kind 'sockets'"):
                lens.assert_no_leaks(kinds=["sockets"])
        """
    )
    result = inner.runpytest()
    if _default_session_has("lag"):
        result.stdout.fnmatch_lines(
            [
                "*asynclens: 1 event-loop stall over the 50.0 ms limit*",
                "*event loop blocked (blocking) for 80.0 ms at app/slow.py:9 in crunch",
                "*in span 'report.build', task 'Task-1'",
            ]
        )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 + _default_session_has("scheduler")  # test_bad_kind, test_sched
    assert outcomes.get("failed", 0) == (1 if _default_session_has("lag") else 0)


def test_lens_assertions_without_probes_fail_clearly(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        def test_no_probes(lens, monkeypatch):
            monkeypatch.setattr(lens._run, "_probes", {})  # as in a session with every probe off
            for check in (lens.assert_no_leaks, lens.assert_no_stalls, lambda: lens.assert_max_sched_delay("5ms")):
                with pytest.raises(AssertionError, match="asynclens: cannot check"):
                    check()
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_lens_with_enabled_false_fails_with_a_reason(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.asynclens(enabled=False)
        def test_off(lens):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the lens fixture has no asynclens session: asynclens is disabled for this test*"])


def test_a_session_already_active_is_left_alone(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asynclens, pytest

        def test_instrumented_suite_skips_it():
            assert asynclens.current_session().name == "whole run"

        def test_lens_explains(lens):
            pass
        """
    )
    inner.makeconftest(  # like `python -m asynclens run -m pytest`: a session around the whole run
        """
        import asynclens

        def pytest_sessionstart(session):
            session.config._outer = asynclens.session(name="whole run").start()

        def pytest_sessionfinish(session):
            session.config._outer.close()
        """
    )
    result = inner.runpytest("--asynclens")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*lens fixture has no asynclens session: another asynclens session is already active*"]
    )


# ------------------------------------------------------------------------ stalls


STALLING = """
import asyncio, pytest, planting

@pytest.mark.asyncio
async def test_blocks():
    await asyncio.sleep(0)
    planting.stall(120)

@pytest.mark.asyncio
async def test_short():
    planting.stall(20, file="app/cache.py", line=3, function="warm", span="cache.warm")
"""


def test_stall_over_max_stall_option_fails_the_test_naming_line_span_and_duration(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_stalling=STALLING)
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=50ms")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_blocks _*",
            "asynclens: 1 event-loop stall over the 50.0 ms limit (max_stall):",
            "  event loop blocked (blocking) for 120.0 ms at app/db.py:41 in query",
            "    in span 'db.query', task 'Task-1'",
            "*= asynclens =*",
            "asynclens: 2 tests recorded: 2 stalls, 0 leaks, 1 test over budget",
            "Worst stalls:",
            "*120.0 ms  app/db.py:41 in query [[]span 'db.query', task 'Task-1'[]]  (test_stalling.py::test_blocks)",
            "*20.0 ms  app/cache.py:3 in warm*(test_stalling.py::test_short)",
            "Per test:",
            "*1 *120.0 ms *0 *test_stalling.py::test_blocks  FAILED (asynclens)",
        ]
    )


def test_stalls_without_a_limit_are_reported_not_failed(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_stalling=STALLING)
    result = inner.runpytest("--asynclens")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["asynclens: 2 tests recorded: 2 stalls, 0 leaks", "Worst stalls:"])


def test_ini_max_stall_and_marker_override(inner: pytest.Pytester) -> None:
    ini(inner, "asynclens = true\nasynclens_max_stall = 0.01s")
    inner.makepyfile(
        test_stalling=STALLING
        + """
@pytest.mark.asynclens(max_stall=200)
@pytest.mark.asyncio
async def test_lenient():
    planting.stall(120)

@pytest.mark.asynclens(max_stall=None)
class TestNoLimit:
    def test_any(self):
        planting.stall(500)
"""
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["FAILED test_stalling.py::test_blocks*", "FAILED test_stalling.py::test_short*"])
    assert "10.0 ms limit" in result.stdout.str()


def test_marker_alone_instruments_a_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asynclens, pytest, planting

        @pytest.mark.asynclens(max_stall="50ms")
        def test_marked():
            planting.stall(60)

        def test_unmarked():
            assert asynclens.current_session() is None
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["asynclens: 1 test recorded: 1 stall, 0 leaks, 1 test over budget"])


def test_a_test_that_failed_anyway_gets_the_findings_as_a_section(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest, planting

        @pytest.mark.asynclens(max_stall="50ms")
        def test_both():
            planting.stall(70)
            assert 1 == 2
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E       assert 1 == 2", "*- asynclens -*", "asynclens: 1 event-loop stall over*"])


def test_stalls_while_a_module_fixture_is_set_up_are_not_the_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest, planting

        @pytest.fixture(scope="module")
        def slow_server():
            planting.stall(300, file="conftest.py", line=1, function="slow_server", span=None)
            yield

        @pytest.fixture
        def slow_client():
            planting.stall(300, file="conftest.py", line=9, function="slow_client", span=None)
            yield

        def test_module_fixture(slow_server):
            pass

        def test_function_fixture(slow_client):
            pass
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=50")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED *test_function_fixture*"])
    assert "slow_server" not in result.stdout.str()


def test_scheduling_delay_over_the_limit_fails_naming_task_and_span(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest, planting

        def test_starved():
            planting.waited(45)

        @pytest.mark.asynclens(max_sched_delay="100ms")
        def test_lenient():
            planting.waited(45, task="other")
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-sched-delay=20ms", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_starved _*",
            "asynclens: scheduling delay over the 20.0 ms limit (max_sched_delay):",
            "  task 'worker-1' waited (ready, not running) for 45.0 ms",
            "    in span 'handle_request', task 'worker-1'",
            "asynclens: 2 tests recorded: 0 stalls, 0 leaks, max scheduling delay 45.0 ms, 1 test over budget",
        ]
    )


def test_a_stall_noticed_late_that_began_before_the_test_is_not_the_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import planting

        def test_previous_tests_stall():
            planting.stall(300, began_ms_ago=60_000)  # e.g. a shared loop noticing it on its next run
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=50ms")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["asynclens: 1 test recorded: no stalls, leaks or scheduling delays"])


def test_a_stall_noticed_in_the_next_test_is_summarised_for_the_test_it_happened_in(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_late="""
        import asynclens, planting

        seen = {}

        def test_blocks_at_its_end():
            seen["t"] = asynclens.current_session().now()

        def test_next():
            now = asynclens.current_session().now()
            planting.stall(120, began_ms_ago=(now - seen["t"]) / planting.MS)
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=50ms", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "asynclens: 2 tests recorded: 1 stall, 0 leaks",
            "*120.0 ms  app/db.py:41 in query (noticed during test_late.py::test_next)*(test_late.py::test_blocks_at_its_end)",
        ]
    )


# ------------------------------------------------------------------------- leaks


LEAKING = """
import pytest, planting

def test_leaks():
    planting.leak()

def test_clean():
    pass
"""


def test_leak_fails_at_teardown_naming_site_span_and_duration(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_leaking=LEAKING)
    result = inner.runpytest("--asynclens", "--asynclens-leaks=fail")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "asynclens: 1 leaked handle (leaks='fail'):",
            "  leaked socket <socket raddr=127.0.0.1:5432>, open for * at app/pool.py:12 in connect",
            "    in span 'pool.connect'",
            "*= asynclens =*",
            "asynclens: 2 tests recorded: 0 stalls, 1 leak, 1 test over budget",
            "Leaks:",
            "  socket <socket raddr=127.0.0.1:5432>, opened at app/pool.py:12 in connect [[]span 'pool.connect'[]]*",
        ]
    )


def test_leaks_warn_by_default(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_leaking=LEAKING)
    result = inner.runpytest("--asynclens")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*AsyncLensWarning: asynclens: 1 leaked handle (leaks='warn')*"])


def test_leaks_ignored_by_marker(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest, planting

        @pytest.mark.asynclens(leaks="ignore")
        def test_leaks():
            planting.leak()
        """
    )
    result = inner.runpytest("--asynclens-leaks=fail")
    result.assert_outcomes(passed=1)
    assert "Warning" not in result.stdout.str()


# ------------------------------------------------------------------- allow-lists


def test_allow_rules_let_known_findings_pass_and_unused_rules_warn(inner: pytest.Pytester) -> None:
    ini(inner, "asynclens_allow =\n    stall:app/db.py\n    leak:*:6379*")
    inner.makepyfile(
        test_allow=STALLING
        + """
@pytest.mark.asynclens(allow=["leak:*:5432*", "never_called"])
def test_known_leak():
    planting.leak()
"""
    )
    result = inner.runpytest(
        "--asynclens", "--asynclens-max-stall=10ms", "--asynclens-leaks=fail", "--asynclens-allow=warm"
    )
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines_random(
        [
            "*allow rule 'leak:*:6379*' (asynclens_allow (ini file)) matched nothing in this run; remove it?",
            "*allow rule 'never_called' (@pytest.mark.asynclens(allow=...) on test_allow.py::test_known_leak) matched nothing*",
            "asynclens: 3 tests recorded: no stalls, leaks or scheduling delays, 3 allowed findings",
        ]
    )
    assert "stall:app/db.py' (" not in result.stdout.str() and "'warm' (" not in result.stdout.str()


# -------------------------------------------------------------------- trace dir


def test_trace_dir_gets_a_recording_of_each_failing_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio, pytest, asynclens, planting

        @pytest.mark.asyncio
        async def test_fails():
            async with asynclens.span("doomed"):
                await asyncio.sleep(0)
            assert False

        def test_leaks():
            planting.leak()

        def test_passes():
            pass
        """
    )
    traces = inner.path / "traces"
    result = inner.runpytest("--asynclens", "--asynclens-leaks=fail", f"--asynclens-trace-dir={traces}")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    fails = traces / "test_trace_dir_gets_a_recording_of_each_failing_test.py_test_fails.jsonl"
    leaks = traces / "test_trace_dir_gets_a_recording_of_each_failing_test.py_test_leaks.jsonl"
    assert sorted(p.name for p in traces.glob("*.jsonl")) == sorted([fails.name, leaks.name])
    result.stdout.fnmatch_lines_random(
        [f"trace of this test: {fails}", f"asynclens trace: {leaks}", "Traces of failing tests:"]
    )
    recorded = asynclens.read_jsonl(fails)
    assert [r.name for r in recorded.records if isinstance(r, asynclens.Span)] == ["doomed"]
    richer = [suffix for suffix in (".html", ".perfetto.json") if _sink_known(suffix)]
    for suffix in richer:  # the HTML report and the Perfetto trace, once their sinks exist
        for base in (fails, leaks):
            written = base.with_name(base.name.replace(".jsonl", suffix))
            assert written.stat().st_size > 0
            result.stdout.fnmatch_lines_random([f"  {written}"])
    assert len(list(traces.iterdir())) == 2 * (1 + len(richer))


def _sink_known(suffix: str) -> bool:
    from asynclens.sinks import sink_for

    try:
        sink_for("x" + suffix)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--asynclens-max-stall=fast"], "--asynclens-max-stall: 'fast' is not a duration*"),
        (["--asynclens-max-sched-delay=-3ms"], "--asynclens-max-sched-delay: '-3ms' is not a duration*"),
        (["--asynclens-leaks=maybe"], "--asynclens-leaks: 'maybe' is not one of fail, warn, ignore"),
        (["--asynclens-allow=leak:"], "--asynclens-allow: allow rule 'leak:' has no pattern"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(
    inner: pytest.Pytester, args: list[str], message: str
) -> None:
    inner.makepyfile("def test_x(): pass")
    result = inner.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_bad_ini_value_is_a_usage_error_naming_the_key(inner: pytest.Pytester) -> None:
    ini(inner, "asynclens_max_stall = 50 parsecs")
    inner.makepyfile("def test_x(): pass")
    result = inner.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: asynclens_max_stall (ini file): '50 parsecs' has an unknown unit 'parsecs'*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("max_stall='soon'", "*on test_bad.py::test_x: max_stall=: 'soon' is not a duration*"),
        ("leaks='loud'", "*on test_bad.py::test_x: leaks='loud' is not one of fail, warn, ignore"),
        ("max_stal='5ms'", "*on test_bad.py::test_x: unknown argument max_stal= *"),
        ("allow=[3]", "*on test_bad.py::test_x: allow=[[]3[]]: *must be a string*"),
    ],
)
def test_bad_marker_arguments_are_usage_errors_naming_the_test(
    inner: pytest.Pytester, marker: str, message: str
) -> None:
    inner.makepyfile(test_bad=f"import pytest\n\n@pytest.mark.asynclens({marker})\ndef test_x(): pass\n")
    result = inner.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: @pytest.mark.asynclens{message}"])


# ------------------------------------------------------- asyncio modes and loops


LOOPS = """
import asyncio, pytest, pytest_asyncio, asynclens, planting

@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_resource():
    await asyncio.sleep(0)
    yield "ok"

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_1(lens, module_resource):
    async with asynclens.span("m1"):
        await asyncio.sleep(0)
    assert [s.name for s in lens.spans] == ["m1"]

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_2(lens, module_resource):
    async with asynclens.span("m2"):
        await asyncio.sleep(0)
    assert [s.name for s in lens.spans] == ["m2"]

@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(lens):
    async with asynclens.span("s"):
        await asyncio.sleep(0.001)
    assert [s.name for s in lens.spans] == ["s"]

@pytest.mark.asyncio
async def test_function_loop(lens):
    await asyncio.create_task(asyncio.sleep(0))

def test_plain_asyncio_run(lens):
    asyncio.run(asyncio.sleep(0))

@pytest.mark.asynclens(max_stall="50ms")
@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_stall():
    planting.stall(90)
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_modes_and_loop_scopes(inner: pytest.Pytester, mode: str) -> None:
    inner.makepyfile(test_loops=LOOPS)
    result = inner.runpytest("--asynclens", f"--asyncio-mode={mode}", "-p", "no:randomly")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_loops.py::test_module_loop_stall - asynclens: 1 event-loop stall*"])
    assert asynclens.current_session() is None


def test_auto_mode_unmarked_async_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio, asynclens

        async def test_auto(lens):
            async with asynclens.span("auto"):
                await asyncio.sleep(0)
            assert [s.name for s in lens.spans] == ["auto"]
        """
    )
    inner.runpytest("--asyncio-mode=auto", "--asynclens").assert_outcomes(passed=1)


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_uvloop(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio, pytest, uvloop, asynclens

        async def main():
            async with asynclens.span("on-uvloop"):
                await asyncio.sleep(0)
            return type(asyncio.get_running_loop()).__module__

        def test_uvloop_run(lens):
            assert uvloop.run(main()).startswith("uvloop")
            assert [s.name for s in lens.spans] == ["on-uvloop"]

        @pytest.fixture
        def event_loop_policy():
            return uvloop.EventLoopPolicy()

        @pytest.mark.asyncio
        async def test_uvloop_policy(lens):
            assert (await main()).startswith("uvloop")
            assert [s.name for s in lens.spans] == ["on-uvloop"]
        """
    )
    result = inner.runpytest("--asynclens", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=2)


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed")
def test_xdist_workers_report_to_the_controller(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_stalling=STALLING, test_leaking=LEAKING)
    traces = inner.path / "traces"
    result = inner.runpytest_subprocess(
        "-n", "2", "--asynclens", "--asynclens-max-stall=50ms", f"--asynclens-trace-dir={traces}", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=3, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "asynclens: 4 tests recorded: 2 stalls, 1 leak, 1 test over budget",
            "*120.0 ms  app/db.py:41 in query*(test_stalling.py::test_blocks)",
        ]
    )
    (trace,) = traces.glob("*.jsonl")
    assert trace.name.startswith("gw") and trace.name.endswith("test_stalling.py_test_blocks.jsonl")


# ------------------------------------------------------------- with real probes


needs_lag = pytest.mark.skipif(
    not _default_session_has("lag"), reason="the lag/stall probe (asynclens.lag) has not landed"
)
needs_handles = pytest.mark.skipif(
    not _default_session_has("handles"), reason="the handle registry (asynclens.handles) has not landed"
)
needs_scheduler = pytest.mark.skipif(
    not _default_session_has("scheduler"), reason="the scheduler probe (asynclens.scheduler) has not landed"
)


@needs_lag
def test_real_blocking_call_fails_naming_the_blocking_line(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_blocking="""
        import asyncio, time, pytest, asynclens

        @asynclens.trace(name="handler")
        async def handler():
            await asyncio.sleep(0.02)
            time.sleep(0.3)  # the culprit
            await asyncio.sleep(0.02)

        @pytest.mark.asynclens(max_stall="100ms")
        @pytest.mark.asyncio
        async def test_blocking():
            await handler()

        @pytest.mark.asyncio
        async def test_clean(lens):
            await asyncio.sleep(0.05)
            lens.assert_no_stalls()

        @pytest.mark.asyncio
        async def test_lens_sees_it(lens):
            await asyncio.sleep(0.02)
            time.sleep(0.15)  # a planted stall
            await asyncio.sleep(0)
            with pytest.raises(AssertionError, match="blocked .*for 1[0-9][0-9].[0-9] ms at .*test_lens_sees_it"):
                lens.assert_no_stalls(longer_than="50ms")
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "asynclens: 1 event-loop stall over the 100.0 ms limit (max_stall):",
            "*for * ms at *test_blocking.py:6 in handler",
            "*span 'handler'*",
        ]
    )


@needs_handles
def test_real_leaked_socket_fails_naming_where_it_was_opened(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_sockets="""
        import socket, pytest, asynclens

        KEEP = []

        @pytest.mark.asynclens(leaks="fail")
        def test_leaky():
            with asynclens.span("connect"):
                KEEP.append(socket.socket())

        @pytest.mark.asynclens(leaks="fail")
        def test_tidy(lens):
            s = socket.socket()
            s.close()
            lens.assert_no_leaks(kinds=["socket"])
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaky*", "*leaked socket*test_sockets.py:8 in test_leaky", "*span 'connect'*"]
    )
    for sock in sys.modules.get("test_sockets", type("m", (), {"KEEP": []})).KEEP:  # type: ignore[attr-defined]
        sock.close()


@needs_scheduler
def test_real_sched_delay_fails_naming_the_task(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_sched="""
        import asyncio, time, pytest

        async def hog():
            time.sleep(0.1)  # a planted stall

        @pytest.mark.asynclens(max_sched_delay="30ms", max_stall=None)
        @pytest.mark.asyncio
        async def test_delayed():
            waiter = asyncio.create_task(asyncio.sleep(0), name="starved")
            await asyncio.gather(hog(), waiter)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["asynclens: scheduling delay over the 30.0 ms limit (max_sched_delay):", "*starved*"])


# ------------------------------------------- leaks through a stand-in handle registry

FAKE_HANDLES = '''
import importlib
import itertools
import types
import pytest

session_module = importlib.import_module("asynclens.session")  # (asynclens.session is also a function)

class FakeHandles:
    """Stands in for the handle registry: a live view of open handles, leaks at stop()."""

    name = "handles"
    current = None

    def start(self, session):
        self.session = session
        self.open = {}
        FakeHandles.current = self

    def attach_loop(self, loop):
        pass

    def stop(self):
        leaks = [types.SimpleNamespace(**{**vars(h), "kind": "leak"}) for h in self.open.values()]
        self.session.sinks[0].write(leaks)

    def statistics(self):
        return {"open": len(self.open)}

    def summary_lines(self):
        return []

    def open_handles(self):
        if BROKEN:
            raise RuntimeError("the registry is broken")
        return list(self.open.values())


BROKEN = False


IDS = itertools.count(1000)


def opened(name, kind="socket", handle_id=None):
    registry = FakeHandles.current
    handle = types.SimpleNamespace(
        kind="handle", handle_id=handle_id or next(IDS), handle_kind=kind, description=f"<{kind} {name}>",
        open_ns=registry.session.now(), close_ns=None, closed_by=None, site=f"app/io.py:5 in open_{name}",
        stack=(), span_name=None,
    )
    registry.open[name] = handle

def closed(name):
    del FakeHandles.current.open[name]

def pytest_configure(config):
    original = session_module._default_probes
    session_module._default_probes = lambda options: [
        *(p for p in original(options) if p.name != "handles"), FakeHandles()
    ]
    config._restore_probes = original

def pytest_unconfigure(config):
    session_module._default_probes = config._restore_probes
'''

LEAKS_BY_PHASE = """
import asyncio, pytest, pytest_asyncio
from conftest import opened, closed

@pytest.fixture(scope="module")
def server():
    opened("server")      # lives across tests: the module fixture's, not the test's
    yield

@pytest.fixture
def client():
    opened("client")
    yield
    closed("client")

@pytest.fixture
def reaper():
    yield
    closed("worker")      # like the loop's shutdown cancelling a task the test left pending

@pytest_asyncio.fixture
async def background():
    task = asyncio.create_task(asyncio.sleep(3600))  # a fixture's task, pending while the test runs
    opened("bg", kind="task", handle_id=id(task))
    yield
    task.cancel()
    closed("bg")

def test_clean(server, client):
    opened("tmp")
    closed("tmp")

@pytest.mark.asyncio
async def test_with_a_background_task(background):
    pass

def test_leaks_a_socket(server):
    opened("conn")

@pytest.mark.asyncio
async def test_leaves_a_task_pending(reaper):
    task = asyncio.create_task(asyncio.sleep(3600), name="worker")
    opened("worker", kind="task", handle_id=id(task))

def test_opened_last(lens):
    opened("late", kind="file")
    assert [h.description for h in lens.leaks] == ["<file late>"]
    with pytest.raises(AssertionError, match="leaked file <file late>"):
        lens.assert_no_leaks(kinds="file")
    lens.assert_no_leaks(kinds=["socket"])
    closed("late")
    lens.assert_no_leaks()
"""


@pytest.mark.parametrize("every_test", [True, False], ids=["--asynclens", "marker"])
def test_leaks_are_the_tests_own_handles_still_open_after_teardown(inner: pytest.Pytester, every_test: bool) -> None:
    inner.makeconftest(FAKE_HANDLES)
    source = LEAKS_BY_PHASE if every_test else "import pytest\npytestmark = pytest.mark.asynclens\n" + LEAKS_BY_PHASE
    inner.makepyfile(test_phases=source)
    args = ["--asynclens"] if every_test else []
    result = inner.runpytest("-p", "no:randomly", "--asynclens-leaks=fail", *args)
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_socket*",
            "asynclens: 1 leaked handle (leaks='fail'):",
            "  leaked socket <socket conn>, open for * at app/io.py:5 in open_conn",
            "*ERROR at teardown of test_leaves_a_task_pending*",
            # the task itself (not the registry's stand-in) names the line that created it
            "  leaked task 'worker' (sleep) pending, open for * at test_phases.py:* in test_leaves_a_task_pending",
        ]
    )
    assert "<socket client>" not in result.stdout.str()
    if every_test:  # the module fixture's socket is no test's, but the session's end still reports it
        result.stdout.fnmatch_lines(
            [
                "Still open when the run's session closed (the handle registry's end report; no test's):",
                "  socket <socket server>, opened at app/io.py:5 in open_server",
            ]
        )
        assert "<socket conn>, opened" not in result.stdout.str().split("Still open when")[1]
    else:
        assert "<socket server>" not in result.stdout.str()


def test_real_handles_open_across_tests_are_no_tests_leak(inner: pytest.Pytester) -> None:
    """With the real registry (windows compare keys, records only for what a test left
    open): a module fixture's socket stays open across tests without being anyone's
    leak; the test that leaves a socket and a task open is named, with the socket's line."""
    inner.makepyfile(
        test_real_handles="""
        import asyncio, socket, pytest, pytest_asyncio

        KEEP = []

        @pytest_asyncio.fixture(loop_scope="module", scope="module")
        async def shared():
            sock = socket.socket()
            yield
            sock.close()

        @pytest.mark.asyncio(loop_scope="module")
        async def test_first(shared):
            await asyncio.sleep(0)

        @pytest.mark.asyncio(loop_scope="module")
        async def test_leaky(shared):
            KEEP.append(socket.socket())  # LEAKED-SOCKET
            KEEP.append(asyncio.create_task(asyncio.sleep(3600)))  # LEAKED-TASK

        @pytest.mark.asyncio(loop_scope="module")
        async def test_after(shared):
            await asyncio.sleep(0)

        def test_cleanup():
            KEEP.pop(0).close()
            KEEP.pop(0).cancel()
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-leaks=fail", "-p", "no:randomly")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaky*",
            "asynclens: 2 leaked handles (leaks='fail'):",
        ]
    )
    errors = result.stdout.str().split("ERROR at teardown of test_leaky")[1].split("= asynclens =")[0]
    assert "leaked socket fd=" in errors and "test_real_handles.py:17 in test_leaky" in errors  # LEAKED-SOCKET
    assert "leaked task " in errors
    assert "test_first" not in errors and "test_after" not in errors


@needs_lag
def test_real_stall_in_a_tests_last_step_is_that_tests_own(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_last_step="""
        import asyncio, time, pytest

        @pytest.mark.asyncio
        async def test_blocks_last():
            await asyncio.sleep(0.02)
            time.sleep(0.2)  # a planted stall

        @pytest.mark.asyncio
        async def test_next():
            await asyncio.sleep(0.02)
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=100ms", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_last_step.py::test_blocks_last - asynclens: 1 event-loop stall*"])


@needs_lag
def test_the_runs_one_watchdog_attributes_stalls_in_later_tests_to_their_own_lines(inner: pytest.Pytester) -> None:
    """One session (and one watchdog thread) records the whole run: it still samples
    the stalls of loops attached long after it started, each in its own test."""
    inner.makepyfile(
        test_later="""
        import asyncio, time, pytest

        @pytest.mark.asyncio
        async def test_first_clean():
            await asyncio.sleep(0.02)

        @pytest.mark.asyncio
        async def test_second_blocks():
            await asyncio.sleep(0.02)
            time.sleep(0.2)  # second culprit
            await asyncio.sleep(0)

        @pytest.mark.asyncio
        async def test_third_clean():
            await asyncio.sleep(0.02)

        @pytest.mark.asyncio
        async def test_fourth_blocks():
            await asyncio.sleep(0.02)
            time.sleep(0.2)  # fourth culprit
            await asyncio.sleep(0)
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-max-stall=100ms", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_second_blocks _*",
            "*event loop blocked * for * ms at test_later.py:10 in test_second_blocks",
            "*_ test_fourth_blocks _*",
            "*event loop blocked * for * ms at test_later.py:20 in test_fourth_blocks",
        ]
    )
    assert asynclens.current_session() is None


def test_settle_waits_for_stalls_a_loop_timed_until_the_watchdog_recorded_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import collections
    import threading
    import time
    from types import SimpleNamespace

    from asynclens.pytest.budgets import Policy
    from asynclens.pytest.window import Window

    monitor = SimpleNamespace(gaps=collections.deque([(1, 2, 3, 4)]))
    watchdog = SimpleNamespace(polls=0)
    probe = SimpleNamespace(monitors=[monitor], watchdog=watchdog)
    run = Window("t", Policy())
    run._probes = {"lag": probe}
    waited = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the watchdog polls while settle() waits
        waited.set()
        watchdog.polls += 1
        monitor.gaps.clear()
        real_sleep(0)

    monkeypatch.setattr(time, "sleep", sleep)
    run.settle()
    assert waited.is_set() and not monitor.gaps and watchdog.polls >= 2
    waited.clear()
    run.settle()  # nothing pending: no waiting at all
    assert not waited.is_set()


def test_settle_waits_while_the_watchdog_is_still_turning_a_taken_gap_into_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog pops a gap before it emits the stall: an empty deque alone is not done."""
    import time
    from types import SimpleNamespace

    from asynclens.pytest.budgets import Policy
    from asynclens.pytest.window import Window

    watchdog = SimpleNamespace(polls=0, draining=1)
    run = Window("t", Policy())
    run._probes = {"lag": SimpleNamespace(monitors=[SimpleNamespace(gaps=())], watchdog=watchdog)}
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        watchdog.polls += 1
        if len(waits) == 3:
            watchdog.draining = 0

    monkeypatch.setattr(time, "sleep", sleep)
    run.settle()
    assert len(waits) == 3 and watchdog.draining == 0


DOCS_EXAMPLE = """
import asyncio, time, pytest, asynclens

@asynclens.trace
async def search(q):
    time.sleep(0.2)                     # a blocking call in async code
    await asyncio.sleep(0)

@pytest.mark.asynclens(max_stall="50ms", leaks="fail")
@pytest.mark.asyncio
async def test_search():
    await search("cats")
"""


@needs_lag
def test_the_docs_example_fails_naming_line_span_and_duration(inner: pytest.Pytester) -> None:
    """docs/pytest.md's first example, as written there."""
    inner.makepyfile(test_search=DOCS_EXAMPLE)
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "asynclens: 1 event-loop stall over the 50.0 ms limit (max_stall):",
            "  event loop blocked * for 2*.* ms at test_search.py:5 in search",
            "    in span 'search', task '*'",
        ]
    )


def test_a_failing_probe_never_fails_a_test_and_is_reported(inner: pytest.Pytester) -> None:
    inner.makeconftest(FAKE_HANDLES.replace("BROKEN = False", "BROKEN = True"))
    inner.makepyfile(
        test_broken="""
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_async(lens):
            await asyncio.sleep(0)
            assert lens.leaks == []

        def test_sync():
            pass
        """
    )
    result = inner.runpytest("--asynclens", "--asynclens-leaks=fail")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["Recording problems: 0 records dropped, * internal errors"])


SCOPED_FIXTURE_TASK = """
import asyncio, pytest, pytest_asyncio

@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="module-worker")
    yield task
    task.cancel()

@pytest.mark.asynclens(leaks="fail")
@pytest.mark.asyncio(loop_scope="module")
async def test_one(worker):
    await asyncio.sleep(0)

@pytest.mark.asynclens(leaks="fail")
@pytest.mark.asyncio(loop_scope="module")
async def test_two(worker):
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="test-two-leak")
"""


@pytest.mark.parametrize("how", [["--asynclens"], []])
def test_a_task_a_scoped_fixture_started_is_the_fixtures_not_a_tests_leak(inner: pytest.Pytester, how: list[str]) -> None:
    """The first test that uses a module fixture sets it up; the task the fixture starts
    lives on across tests and is not that test's leak. A test's own task still is."""
    inner.makepyfile(test_scoped_task=SCOPED_FIXTURE_TASK)
    result = inner.runpytest(*how, "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_two*", "*leaked task 'test-two-leak'*"])
    result.stdout.no_fnmatch_line("*module-worker*pending*")
