"""asynclens.testing: capture() and normalised dicts; FakeClock; reversible patches."""

from __future__ import annotations

import pytest

import asynclens
from asynclens.probes._patch import Patch
from asynclens.testing import FakeClock, capture


def test_capture_as_dicts_normalises_ids_and_times() -> None:
    clock = FakeClock(start_ns=10**9)
    with capture(clock=clock) as cap:
        with asynclens.span("a"):
            clock.advance(3)
            with asynclens.span("b", k="v"):
                clock.advance(2)
        with asynclens.span("c"):
            pass
    b, a, c = cap.as_dicts()
    assert (a["trace_id"], a["span_id"], a["parent_id"]) == ("t1", "s1", None)
    assert (b["trace_id"], b["span_id"], b["parent_id"], b["attrs"]) == ("t1", "s2", "s1", {"k": "v"})
    assert (c["trace_id"], c["span_id"]) == ("t2", "s3")
    assert (a["start_ns"], a["end_ns"], b["start_ns"], b["end_ns"]) == (0, 5, 3, 5)


def test_capture_sees_spans_before_the_block_ends() -> None:
    with capture() as cap:
        with asynclens.span("x"):
            pass
        assert [s.name for s in cap.spans] == ["x"]


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start_ns=0, wall_start_ns=100)
    assert clock.now_ns() == 0 and clock.wall_ns() == 100
    clock.spend_cpu(7)
    clock.advance(3)
    assert (clock.now_ns(), clock.cpu_ns(), clock.wall_ns()) == (10, 7, 110)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


class Target:
    def method(self, x: int) -> int:
        return x


class Child(Target):
    pass


def test_patch_restores_exactly_and_leaves_foreign_patches() -> None:
    original = Target.__dict__["method"]
    patch = Patch(Target, "method", lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs) + 1)
    patch.install()
    assert Target().method(1) == 2 and Child().method(1) == 2
    patch.remove()
    assert Target.__dict__["method"] is original

    inherited = Patch(Child, "method", lambda wrapped, instance, args, kwargs: 0)
    inherited.install()
    assert Child().method(5) == 0 and Target().method(5) == 5
    inherited.remove()
    assert "method" not in Child.__dict__

    patch.install()
    foreign = lambda self, x: -1  # noqa: E731 - someone else patches over us
    Target.method = foreign  # type: ignore[method-assign]
    patch.remove()
    assert Target.__dict__["method"] is foreign
    Target.method = original  # type: ignore[method-assign]
