"""The pytest plugin's max_lock_wait budget (resources probe), through pytester on real waits."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""

TESTS = '''
import asyncio
import pytest

async def contend(hold_s):
    lock = asyncio.Lock()
    async def holder():
        async with lock:
            await asyncio.sleep(hold_s)
    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    async with lock:  # waits about hold_s
        pass
    await task

def test_waits_long():
    asyncio.run(contend(0.3))

@pytest.mark.asynclens(max_lock_wait="10s")
def test_lenient():
    asyncio.run(contend(0.3))

def test_no_wait():
    async def alone():
        lock = asyncio.Lock()
        for _ in range(10):
            async with lock:
                pass
    asyncio.run(alone())
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_waits=TESTS)
    return pytester


def test_a_wait_over_the_ini_limit_fails_naming_the_line(inner: pytest.Pytester) -> None:
    inner.makeini(INI.format(extra="asynclens_max_lock_wait = 20ms"))
    result = inner.runpytest("--asynclens", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_waits_long _*",
            "asynclens: 1 wait on asyncio resources over the 20.0 ms limit (max_lock_wait):",
            "  waited on Lock (created at test_waits.py:*) for * at test_waits.py:* in contend",
        ]
    )


def test_the_command_line_option_and_an_allow_rule(inner: pytest.Pytester) -> None:
    inner.makeini(INI.format(extra=""))
    result = inner.runpytest("--asynclens", "--asynclens-max-lock-wait=20ms", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    allowed = inner.runpytest(
        "--asynclens", "--asynclens-max-lock-wait=20ms", "--asynclens-allow=wait:test_waits:contend", "-p", "no:randomly"
    )
    allowed.assert_outcomes(passed=3)


def test_without_a_limit_waits_do_not_fail(inner: pytest.Pytester) -> None:
    inner.makeini(INI.format(extra=""))
    result = inner.runpytest("--asynclens", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_a_bad_limit_is_a_one_line_error(inner: pytest.Pytester) -> None:
    inner.makeini(INI.format(extra="asynclens_max_lock_wait = soon"))
    result = inner.runpytest("--asynclens", "-p", "no:randomly")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*asynclens_max_lock_wait*"])
