"""The public API surface: pinned, sorted, typed."""

from __future__ import annotations

from pathlib import Path

import asynclens


def test_all_is_sorted_and_complete() -> None:
    assert asynclens.__all__ == sorted(asynclens.__all__)
    for name in asynclens.__all__:
        assert hasattr(asynclens, name), name


def test_py_typed_ships() -> None:
    assert (Path(asynclens.__file__).parent / "py.typed").exists()


def test_public_callables_have_docstrings() -> None:
    for name in asynclens.__all__:
        obj = getattr(asynclens, name)
        if callable(obj):
            assert obj.__doc__, name
