"""The pytest plugin: a ``lens`` fixture, the ``asynclens`` marker, ``--asynclens`` options.

Registered through the ``pytest11`` entry point; it does nothing (and prints
nothing) until a test asks for it: ``--asynclens`` (or ``asynclens = true`` in
the ini file) records every test, ``@pytest.mark.asynclens(...)`` and the
``lens`` fixture record one.

Only one asynclens session can be active in a process, so all three share it:
with ``--asynclens`` one session records the whole run and each test takes its
window of it; otherwise each recorded test gets a session of its own (see
:mod:`asynclens._testrun`). A window runs from before the test's first fixture
is set up until after its last is torn down. Stalls and scheduling delays over
the test's limits fail the test itself; leaks are judged after teardown
(``leaks="fail"`` reports an error at teardown, ``"warn"`` a warning).
Whatever a module- or session-scoped fixture opened or blocked while being set
up belongs to that fixture, not to the test that happened to set it up.

This is the only asynclens module that imports pytest.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .._durations import DurationError, parse_duration
from ..records import Record
from ..session import SessionError
from ..sinks import sink_for
from .budgets import LEAK_MODES, AllowRule, AllowRuleError, Policy, evaluate, findings_from
from .lens import Lens
from .origins import Origins
from .recorder import Recorder, session_options
from .suite_summary import render_suite, unused_rules
from .window import Window

__all__ = ["AsyncLensWarning", "Lens"]

_MARKER = "asynclens"
_MARKER_KEYS = (
    "max_stall", "leaks", "max_sched_delay", "max_lock_wait", "allow", "enabled", "never_resumable", "busy_yield"
)  # fmt: skip
#: the lints (docs/lints.md): option/ini/marker name -> default mode
_LINT_DEFAULTS = {"never_resumable": "fail", "busy_yield": "ignore"}
_TOP = 10
_OWN_SESSION_HINT = (
    "this test opened an asynclens session while the plugin's was recording it: mark it "
    "@pytest.mark.asynclens(enabled=False) to record it yourself, or use the lens fixture"
)


class AsyncLensWarning(pytest.PytestWarning):
    """A leak under ``leaks="warn"``, or an allow rule that matched nothing."""


# --------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asynclens", "asynclens: event-loop stalls, leaked handles, scheduling delay")
    group.addoption(
        "--asynclens",
        action="store_true",
        default=False,
        help="record every test in an asynclens session (ini: asynclens = true)",
    )
    group.addoption(
        "--asynclens-max-stall",
        metavar="DURATION",
        default=None,
        help="fail a test whose event loop was blocked longer than this: 50ms, 0.05s, 50 (ms) "
        "(ini: asynclens_max_stall; default: report stalls, do not fail)",
    )
    group.addoption(
        "--asynclens-leaks",
        metavar="fail|warn|ignore",
        default=None,
        help="what a handle (socket, file, task, thread, ...) left open by a test does (ini: asynclens_leaks; default warn)",
    )
    group.addoption(
        "--asynclens-max-sched-delay",
        metavar="DURATION",
        default=None,
        help="fail a test in which a ready task waited longer than this to run (ini: asynclens_max_sched_delay)",
    )
    group.addoption(
        "--asynclens-never-resumable",
        metavar="fail|warn|ignore",
        default=None,
        help="what a task left that can never be resumed does (ini: asynclens_never_resumable; default fail)",
    )
    group.addoption(
        "--asynclens-busy-yield",
        metavar="fail|warn|ignore",
        default=None,
        help="what a task that mostly woke itself (sleep(0) loops) does; fail or warn turn the scheduler probe on "
        "(ini: asynclens_busy_yield; default ignore)",
    )
    group.addoption(
        "--asynclens-max-lock-wait",
        metavar="DURATION",
        default=None,
        help="fail a test in which a task waited longer than this on an asyncio Lock, Semaphore, "
        "Condition, Event, Queue or Barrier (ini: asynclens_max_lock_wait)",
    )
    group.addoption(
        "--asynclens-allow",
        metavar="RULE",
        action="append",
        default=None,
        help="a known stall/leak not to fail on: [stall:|leak:|sched:|wait:|never_resumable:|busy_yield:]pattern, "
        "pattern a module, "
        "module:function, path or handle description (repeatable; ini: asynclens_allow, one per line)",
    )
    group.addoption(
        "--asynclens-trace-dir",
        metavar="DIR",
        default=None,
        help="write the recording of every failing test to DIR and print its path (ini: asynclens_trace_dir)",
    )
    parser.addini("asynclens", "record every test in an asynclens session", type="bool", default=False)
    parser.addini("asynclens_max_stall", "fail tests whose event loop was blocked longer than this", default="")
    parser.addini("asynclens_leaks", "fail|warn|ignore handles left open by a test", default="")
    parser.addini("asynclens_max_sched_delay", "fail tests in which a ready task waited longer than this", default="")
    parser.addini("asynclens_never_resumable", "fail|warn|ignore tasks that can never be resumed", default="")
    parser.addini("asynclens_busy_yield", "fail|warn|ignore tasks that mostly woke themselves", default="")
    parser.addini("asynclens_max_lock_wait", "fail tests in which a task waited longer than this on a lock, queue, ...", default="")
    parser.addini(
        "asynclens_allow", "known stalls/leaks not to fail on, one rule per line", type="linelist", default=[]
    )
    parser.addini("asynclens_trace_dir", "write the recording of every failing test here", default="")


@dataclass(frozen=True)
class Settings:
    """The suite-wide configuration, resolved from options over ini over defaults."""

    every_test: bool = False
    defaults: Policy = field(default_factory=Policy)
    trace_dir: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        def pick(option: str, ini: str) -> tuple[Any, str]:
            value = config.getoption(option)
            if value is not None:
                return value, "--" + option.replace("_", "-")
            value = config.getini(ini)
            return (value if value not in ("", None) else None), f"{ini} (ini file)"

        try:
            max_stall, where = pick("asynclens_max_stall", "asynclens_max_stall")
            max_stall_ns = None if max_stall is None else parse_duration(max_stall, where)
            delay, where = pick("asynclens_max_sched_delay", "asynclens_max_sched_delay")
            delay_ns = None if delay is None else parse_duration(delay, where)
            lock_wait, where = pick("asynclens_max_lock_wait", "asynclens_max_lock_wait")
            lock_wait_ns = None if lock_wait is None else parse_duration(lock_wait, where)
            leaks, where = pick("asynclens_leaks", "asynclens_leaks")
            leaks = "warn" if leaks is None else str(leaks).strip().lower()
            if leaks not in LEAK_MODES:
                raise ValueError(f"{where}: {leaks!r} is not one of fail, warn, ignore")
            lint_modes = {}
            for lint, default in _LINT_DEFAULTS.items():
                mode, where = pick(f"asynclens_{lint}", f"asynclens_{lint}")
                mode = default if mode is None else str(mode).strip().lower()
                if mode not in LEAK_MODES:
                    raise ValueError(f"{where}: {mode!r} is not one of fail, warn, ignore")
                lint_modes[lint] = mode
            rules = [AllowRule.parse(r, "asynclens_allow (ini file)") for r in config.getini("asynclens_allow")]
            rules += [AllowRule.parse(r, "--asynclens-allow") for r in config.getoption("asynclens_allow") or ()]
        except (DurationError, AllowRuleError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None
        trace_dir, _ = pick("asynclens_trace_dir", "asynclens_trace_dir")
        return cls(
            every_test=bool(config.getoption("asynclens") or config.getini("asynclens")),
            defaults=Policy(
                max_stall_ns=max_stall_ns,
                leaks=leaks,
                max_sched_delay_ns=delay_ns,
                max_lock_wait_ns=lock_wait_ns,
                allow=tuple(rules),
                never_resumable=lint_modes["never_resumable"],
                busy_yield=lint_modes["busy_yield"],
            ),
            trace_dir=os.path.abspath(str(trace_dir)) if trace_dir else None,
        )


def policy_for(item: pytest.Item, defaults: Policy) -> tuple[Policy, bool]:
    """The test's policy (its closest ``asynclens`` marker wins per keyword) and
    whether it carries the marker at all. Bad marker arguments raise UsageError."""
    markers = list(item.iter_markers(_MARKER))
    if not markers:
        return defaults, False
    values: dict[str, Any] = {}
    rules: list[AllowRule] = []
    where = f"@pytest.mark.asynclens on {item.nodeid}"
    for marker in markers:  # closest first
        if marker.args:
            raise pytest.UsageError(
                f"{where}: takes keyword arguments only ({', '.join(_MARKER_KEYS)}), got {marker.args!r}"
            )
        for key, value in marker.kwargs.items():
            if key not in _MARKER_KEYS:
                raise pytest.UsageError(f"{where}: unknown argument {key}= (known: {', '.join(_MARKER_KEYS)})")
            if key == "allow":
                items = [value] if isinstance(value, str) else value
                try:
                    rules.extend(AllowRule.parse(rule, "@pytest.mark.asynclens(allow=...)") for rule in items)
                except (AllowRuleError, TypeError) as exc:
                    raise pytest.UsageError(f"{where}: allow={value!r}: {exc}") from None
            else:
                values.setdefault(key, value)
    try:
        policy = Policy(
            max_stall_ns=_limit(values, "max_stall", defaults.max_stall_ns, where),
            leaks=str(values.get("leaks", defaults.leaks)).lower(),
            max_sched_delay_ns=_limit(values, "max_sched_delay", defaults.max_sched_delay_ns, where),
            max_lock_wait_ns=_limit(values, "max_lock_wait", defaults.max_lock_wait_ns, where),
            allow=defaults.allow + tuple(rules),
            enabled=bool(values.get("enabled", True)),
            never_resumable=str(values.get("never_resumable", defaults.never_resumable)).lower(),
            busy_yield=str(values.get("busy_yield", defaults.busy_yield)).lower(),
        )
    except DurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    for key in ("leaks", *_LINT_DEFAULTS):
        if getattr(policy, key) not in LEAK_MODES:
            raise pytest.UsageError(f"{where}: {key}={getattr(policy, key)!r} is not one of fail, warn, ignore")
    return policy, True


def _limit(values: dict[str, Any], key: str, default: int | None, where: str) -> int | None:
    if key not in values:
        return default
    value = values[key]
    return None if value is None else parse_duration(value, f"{where}: {key}=")


def _is_async_fixture(func: Any) -> bool:
    """An ``async def`` fixture, also once pytest-asyncio has wrapped it."""
    func = getattr(func, "__func__", func)
    return (
        inspect.iscoroutinefunction(func)
        or inspect.isasyncgenfunction(func)
        or bool(getattr(func, "_force_asyncio_fixture", False))
    )


@pytest.fixture
def lens(request: pytest.FixtureRequest) -> Lens:
    """This test's asynclens session: ``spans``, ``stalls``, ``leaks``, ``lag``,
    ``statistics()``, ``assert_no_leaks()``, ``assert_no_stalls()``, ``assert_max_sched_delay()``."""
    run: Window | None = request.node.stash.get(_RUN_KEY, None)
    if run is None or run.session is None:
        reason = run.note if run is not None and run.note else "asynclens is disabled for this test (enabled=False)"
        pytest.fail(f"the lens fixture has no asynclens session: {reason}", pytrace=False)
    return Lens(run)  # made here, not kept by the window: no reference cycle for the collector


_RUN_KEY = pytest.StashKey[Window]()
_POLICY_KEY = pytest.StashKey[tuple[Policy, bool]]()


# -------------------------------------------------------------- the plugin


class AsyncLensPlugin:
    """The hooks; one instance per pytest run (and per xdist worker)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.current: Window | None = None
        self.reports: list[dict[str, Any]] = []
        self.is_worker = hasattr(config, "workerinput")
        self.recorder = Recorder(long_lived=settings.every_test)
        self.origins = Origins()
        self.last_problems = (0, 0)  # seen after the last test's report (not under xdist)
        self._async_fixtures: dict[int, bool] = {}  # by id of the fixture function (they live all run)

    # -- which tests, with which policy

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        policies = []
        for item in items:
            policy = item.stash[_POLICY_KEY] = policy_for(item, self.settings.defaults)
            if policy[0].enabled:
                policies.append((policy[0], "lens" in getattr(item, "fixturenames", ())))
        self.recorder.options = session_options(policies)

    def _policy(self, item: pytest.Item) -> tuple[Policy, bool]:
        found = item.stash.get(_POLICY_KEY, None)
        return found if found is not None else policy_for(item, self.settings.defaults)

    # -- the session around setup, call and teardown

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, None]:
        policy, marked = self._policy(item)
        uses_lens = "lens" in getattr(item, "fixturenames", ())
        if not policy.enabled:
            self.recorder.close()  # the test may record in a session of its own
        elif self.settings.every_test or marked or uses_lens:
            run = Window(item.nodeid, policy)
            item.stash[_RUN_KEY] = run
            options = self.recorder.options if self.recorder.long_lived else session_options([(policy, uses_lens)])
            try:
                self.origins.install()
                run.begin(self.recorder, options)
            except Exception as exc:  # noqa: BLE001 - asynclens must not break the test run
                run.note = f"asynclens could not start a session: {type(exc).__name__}: {exc}"
            self.current = run if run.session is not None else None
            self.origins.on_abandoned = run.note_abandoned if run.session is not None else None
        yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        run = item.stash.get(_RUN_KEY, None)
        if run is None or run.session is None:
            yield
            return
        # only an async test body can leave tasks pending on its loop
        is_async = inspect.iscoroutinefunction(getattr(item, "obj", None))
        uses_lens = "lens" in getattr(item, "fixturenames", ())
        if is_async or uses_lens:
            try:
                run.call_started(is_async, uses_lens)
            except Exception as exc:  # noqa: BLE001 - a bug here must not fail the user's test
                run.note = f"asynclens failed while noting the open handles: {type(exc).__name__}: {exc}"
        yield
        if is_async:
            try:
                run.call_ended()
            except Exception as exc:  # noqa: BLE001 - a bug here must not fail the user's test
                run.note = f"asynclens failed while looking for pending tasks: {type(exc).__name__}: {exc}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, None]:
        run = self.current
        if run is None or run.session is None:
            yield
            return
        if not run.async_setup:
            func = getattr(fixturedef, "func", None)
            is_async = self._async_fixtures.get(id(func))
            if is_async is None:
                is_async = self._async_fixtures[id(func)] = _is_async_fixture(func)
            run.async_setup = is_async
        if getattr(fixturedef, "scope", "function") == "function":
            yield
            return
        start = run.session.now()
        fixture_done = run.scoped_fixture_setup()
        yield
        fixture_done()
        run.excluded.append((start, run.session.now()))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, Any, None]:
        yield
        run = item.stash.get(_RUN_KEY, None)
        if run is None:
            return
        self.current = None
        self.origins.on_abandoned = None
        try:
            run.end(self.recorder)
            if run.session is not None:
                run.teardown_verdict = run.judge_new()
                self.recorder.reported.update(
                    getattr(f.record, "handle_id", None) for f in run.teardown_verdict.findings if f.kind == "leak"
                )
                self.recorder.reported.update(run.tasks_seen)
                if run.teardown_verdict.warnings:
                    warnings.warn(AsyncLensWarning(run.teardown_verdict.warning_message()), stacklevel=1)
                if run.teardown_verdict.failures and self.settings.trace_dir and run.trace_base is None:
                    run.trace_base = self._trace_base(item)
                if run.trace_base is not None:
                    self._write_traces(run)
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the user's test
            run.note = f"asynclens failed while judging this test: {type(exc).__name__}: {exc}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        run = item.stash.get(_RUN_KEY, None)
        if run is None:
            return
        report: pytest.TestReport = outcome.get_result()
        if call.excinfo is not None and call.excinfo.errisinstance(SessionError) and run.session is not None:
            report.sections.append(("asynclens", _OWN_SESSION_HINT))
        try:
            self._judge_report(item, run, report, call.when)
        except Exception as exc:  # noqa: BLE001 - a bug in asynclens must not turn into the user's failure
            report.sections.append(("asynclens", f"asynclens failed while judging: {type(exc).__name__}: {exc}"))
        if call.when == "teardown":
            # the item outlives its test until the run ends; its window's records need not
            del item.stash[_RUN_KEY]
            run.release()

    def _judge_report(self, item: pytest.Item, run: Window, report: pytest.TestReport, when: str) -> None:
        if when == "call" and run.session is not None:
            run.settle()
            found = run.judge_new(("stall", "sched", "wait"))  # leaks are judged after teardown
            if found.failures:
                self._fail(report, found.failure_message())
        if when in ("setup", "call") and report.failed and self.settings.trace_dir and run.session is not None:
            if run.trace_base is None:
                run.trace_base = self._trace_base(item)
            report.sections.append(("asynclens", f"trace of this test: {run.trace_base}.jsonl"))
        if when == "teardown":
            verdict = run.teardown_verdict
            if verdict is not None and verdict.failures:
                message = verdict.failure_message()
                if run.traces:
                    message += "\n" + "\n".join(f"asynclens trace: {path}" for path in run.traces)
                self._fail(report, message)
            if run.note:
                report.sections.append(("asynclens", run.note))
            report.asynclens = run.summary()  # type: ignore[attr-defined]  # travels with the report (xdist)

    @staticmethod
    def _fail(report: pytest.TestReport, message: str) -> None:
        if report.passed and not hasattr(report, "wasxfail"):
            report.outcome = "failed"
            report.longrepr = message
        else:
            report.sections.append(("asynclens", message))

    # -- traces of failing tests

    def _trace_base(self, item: pytest.Item) -> str:
        assert self.settings.trace_dir is not None
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")[:150]
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            name = f"{worker}-{name}"
        return os.path.join(self.settings.trace_dir, name)

    def _write_traces(self, run: Window) -> None:
        assert run.trace_base is not None and run.session is not None and run.session.info is not None
        os.makedirs(os.path.dirname(run.trace_base), exist_ok=True)
        records = [r for r in run.collected if isinstance(r, Record)]
        info = dataclasses.replace(run.session.info, name=run.nodeid)
        for path in _trace_paths(run.trace_base):
            try:
                sink = sink_for(path)
                sink.open(info)
                try:
                    sink.write(records)
                finally:
                    sink.close()
            except Exception as exc:  # noqa: BLE001 - any sink may fail; the others still get written
                warnings.warn(
                    AsyncLensWarning(f"asynclens: could not write {path}: {type(exc).__name__}: {exc}"), stacklevel=1
                )
                continue
            run.traces.append(path)

    # -- the suite's summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "asynclens", None)
        if isinstance(data, dict):
            self.reports.append(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        reports = [r for r in self.reports if r.get("instrumented")]
        if not reports:
            return
        closing = evaluate(findings_from(self.recorder.closing_leaks, 0), Policy(allow=self.settings.defaults.allow))
        for text in unused_rules(reports, self.settings.defaults.allow, closing.rule_hits):
            warnings.warn(AsyncLensWarning(text), stacklevel=1)
        lines = render_suite(reports, verbose=self.config.getoption("verbose") > 0, problems=self.last_problems)
        if closing.warnings:
            if len(lines) == 1:
                lines.insert(0, "")
                lines[1] = lines[1].replace(
                    ": no stalls, leaks or scheduling delays", ": no stalls, leaks or delays in tests"
                )
            lines.append("Still open when the run's session closed (the handle registry's end report; no test's):")
            for finding in closing.warnings[:_TOP]:
                lines.append(
                    f"  {finding.what.removeprefix('leaked ').split(', open for')[0]}, opened at {finding.where or '?'}"
                )
        if len(lines) > 1:
            terminalreporter.write_sep("=", "asynclens")
        for line in lines:
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self) -> None:
        self.current = None
        if self.recorder.session is not None:
            self.last_problems = self.recorder.new_problems(force=True)
        self.recorder.close()

    def pytest_unconfigure(self) -> None:
        self.current = None
        self.recorder.close()
        self.origins.remove()


def _trace_paths(base: str) -> list[str]:
    """The trace files to write: JSON lines always, plus every richer format known."""
    paths = [base + ".jsonl"]
    for suffixes in ((".html",), (".perfetto.json", ".trace.json", ".chrome.json", ".json")):
        for suffix in suffixes:
            try:
                sink_for(base + suffix)
            except (ValueError, TypeError):
                continue
            paths.append(base + suffix)
            break
    return paths


# ---------------------------------------------------------------- registration


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "asynclens(max_stall=None, leaks=None, max_sched_delay=None, max_lock_wait=None, allow=(), enabled=True, "
        "never_resumable='fail', busy_yield='ignore'): "
        "record this test in an asynclens session and fail it on stalls, leaks, scheduling delay, waits on "
        "asyncio resources and the lints",
    )
    config.pluginmanager.register(AsyncLensPlugin(config, Settings.from_config(config)), "asynclens-plugin")
