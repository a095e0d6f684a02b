"""Event-loop factories the real-loop tests run on: asyncio, and uvloop when installed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest


def loop_factories() -> list[Any]:
    """``pytest.param``s of ``new_event_loop`` callables, ids ``asyncio`` and ``uvloop``."""
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        factories.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip(reason="uvloop not installed")))
    else:
        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


def run(factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` to completion on a new loop from ``factory``, then close the loop."""
    loop = factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
