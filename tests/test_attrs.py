"""Instance-attribute hooks found and removed without reading ``__dict__``."""

from __future__ import annotations

import asyncio

from asynclens.probes._attrs import instance_attr, remove_instance_attr


class Thing:
    kind = "class attribute"

    def method(self) -> str:
        return "class"


def test_instance_attr_sees_only_what_the_instance_shadows() -> None:
    thing = Thing()
    assert instance_attr(thing, "method") is None
    assert instance_attr(thing, "kind") is None
    assert instance_attr(thing, "missing") is None

    def hook() -> str:
        return "hook"

    thing.method = hook  # type: ignore[method-assign]
    thing.kind = "mine"
    assert instance_attr(thing, "method") is hook
    assert instance_attr(thing, "kind") == "mine"


def test_remove_instance_attr_removes_only_the_expected_hook() -> None:
    thing = Thing()

    def hook() -> str:
        return "hook"

    def other() -> str:
        return "other"

    thing.method = hook  # type: ignore[method-assign]
    assert not remove_instance_attr(thing, "method", other)  # someone else's: left alone
    assert thing.method() == "hook"
    assert remove_instance_attr(thing, "method", hook)
    assert thing.method() == "class"
    assert not remove_instance_attr(thing, "method", hook)  # nothing left to remove


def test_works_on_event_loops() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert instance_attr(loop, "call_soon") is None

        def call_soon(*args: object, **kwargs: object) -> None:
            return None

        loop.call_soon = call_soon  # type: ignore[method-assign]
        assert instance_attr(loop, "call_soon") is call_soon
        assert remove_instance_attr(loop, "call_soon", call_soon)
        assert instance_attr(loop, "call_soon") is None
    finally:
        loop.close()
