"""Reversible patches: plain wrappers for module functions and class methods, proxies otherwise."""

from __future__ import annotations

import inspect
import types
from typing import Any

import pytest
import wrapt

from asynclens.probes._patch import Patch


def record(calls: list[Any]) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        calls.append((instance, args, kwargs))
        return wrapped(*args, **kwargs)

    return wrapper


class Base:
    def greet(self, name: str, *, punct: str = "!") -> str:
        """Say hello."""
        return f"hello {name}{punct} from {type(self).__name__}"


class Child(Base):
    def greet(self, name: str, *, punct: str = "!") -> str:
        return super().greet(name, punct=punct).upper()


def test_a_method_patch_binds_like_the_original_and_is_removed() -> None:
    calls: list[Any] = []
    original = Base.__dict__["greet"]
    patch = Patch(Base, "greet", record(calls))
    patch.install()
    try:
        obj = Child()
        assert obj.greet("ann", punct="?") == "HELLO ANN? FROM CHILD"  # through super()
        assert Base.greet(obj, "bob") == "hello bob! from Child"  # called on the class
        assert calls == [(obj, ("ann",), {"punct": "?"}), (obj, ("bob",), {})]
        patched = Base.__dict__["greet"]
        assert isinstance(patched, types.FunctionType) and patched.__wrapped__ is original
        assert inspect.signature(Base.greet) == inspect.signature(original) and Base.greet.__doc__ == "Say hello."
    finally:
        patch.remove()
    assert Base.__dict__["greet"] is original


def test_an_inherited_method_patch_restores_inheritance() -> None:
    patch = Patch(Child, "__repr__", record([]))
    patch.install()
    assert "__repr__" in Child.__dict__ and repr(Child()).startswith("<")
    patch.remove()
    assert "__repr__" not in Child.__dict__


def test_a_module_function_patch_and_a_class_patch() -> None:
    module = types.ModuleType("fake")
    module.double = lambda x: 2 * x  # type: ignore[attr-defined]
    module.Base = Base  # type: ignore[attr-defined]
    calls: list[Any] = []
    patches = [Patch(module, "double", record(calls)), Patch(module, "Base", record(calls))]
    for patch in patches:
        patch.install()
    assert module.double(4) == 8 and calls == [(None, (4,), {})]
    assert isinstance(module.Base, wrapt.FunctionWrapper) and isinstance(module.Base(), Base)  # a class stays a class
    for patch in patches:
        patch.remove()
    assert module.Base is Base and module.double(1) == 2 and len(calls) == 2


def test_a_patch_over_ours_is_left_in_place() -> None:
    module = types.ModuleType("fake")
    module.f = len  # type: ignore[attr-defined]
    patch = Patch(module, "f", record([]))
    patch.install()
    theirs = lambda x: 0  # noqa: E731
    module.f = theirs  # type: ignore[attr-defined]
    patch.remove()
    assert module.f is theirs


@pytest.mark.parametrize("owner", [Base, Child])
def test_two_of_our_patches_removed_in_either_order_leave_nothing(owner: type) -> None:
    """An outer session's patch removed before the one installed over it (the pytest
    plugin's): once both are off, the class is as it was (inheritance included)."""
    before = dict(owner.__dict__)
    first, second = Patch(owner, "greet", record([])), Patch(owner, "greet", record([]))
    first.install()
    second.install()
    first.remove()
    assert Child().greet("a") == "HELLO A! FROM CHILD"  # the chain still works meanwhile
    second.remove()
    assert dict(owner.__dict__) == before


def test_a_wrapper_finds_the_frame_that_called_the_patched_function() -> None:
    import sys

    from asynclens.probes._patch import caller_of_patched

    seen: list[Any] = []

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append(caller_of_patched())
        return wrapped(*args, **kwargs)

    module = types.ModuleType("fake")
    module.double = lambda x: 2 * x  # type: ignore[attr-defined]
    module.Base = Base  # type: ignore[attr-defined]
    patches = [Patch(module, "double", wrapper), Patch(Base, "greet", wrapper), Patch(module, "Base", wrapper)]
    for patch in patches:
        patch.install()
    try:
        here = sys._getframe()
        module.double(1)  # a plain function wrapper
        Base().greet("x")  # a plain method wrapper
        module.Base()  # a wrapt proxy (a class)
    finally:
        for patch in patches:
            patch.remove()
    assert seen == [here, here, here]
