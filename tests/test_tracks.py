"""Lanes keep every row of a timeline properly nested."""

from __future__ import annotations

import random
from types import SimpleNamespace

from asynclens.report.tracks import assign_lanes, track_of


def test_lanes_are_nested_or_disjoint() -> None:
    rng = random.Random(7)
    items = []
    for _ in range(400):
        start = rng.randrange(1000)
        items.append(SimpleNamespace(start_ns=start, end_ns=start + rng.randrange(1, 200)))
    lanes = assign_lanes(items)
    for lane in set(lanes):
        members = [it for it, ln in zip(items, lanes) if ln == lane]
        for a in members:
            for b in members:
                if a is b:
                    continue
                disjoint = a.end_ns <= b.start_ns or b.end_ns <= a.start_ns
                nested = (a.start_ns <= b.start_ns and b.end_ns <= a.end_ns) or (
                    b.start_ns <= a.start_ns and a.end_ns <= b.end_ns
                )
                assert disjoint or nested


def test_properly_nested_spans_stay_in_one_lane() -> None:
    items = [SimpleNamespace(start_ns=s, end_ns=e) for s, e in [(0, 100), (10, 50), (20, 30), (60, 90), (100, 120)]]
    assert assign_lanes(items) == [0, 0, 0, 0, 0]
    assert assign_lanes([*items, SimpleNamespace(start_ns=40, end_ns=70)])[-1] == 1


def test_track_names() -> None:
    assert track_of(SimpleNamespace(task="Task-3", thread_id=1)) == "Task-3"
    assert track_of(SimpleNamespace(task=None, thread_id=42)) == "thread 42"
