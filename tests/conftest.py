from __future__ import annotations

from collections.abc import Iterator

import pytest

from asynclens._state import context as _context


@pytest.fixture(autouse=True)
def no_session_leaks_between_tests() -> Iterator[None]:
    """Every test starts and ends with no active session and no current span."""
    assert _context.active is None, f"a session leaked into this test: {_context.active!r}"
    yield
    leaked = _context.active
    if leaked is not None:
        leaked.close()
    assert leaked is None, f"the test left a session active: {leaked!r}"
    assert _context.current_span.get() is None
