"""The log-linear histogram: exact small values, bounded error, merge, serialisation."""

from __future__ import annotations

import math
import random

import pytest

from asynclens.stats import Histogram


def test_small_values_are_exact() -> None:
    h = Histogram.from_values([1, 2, 2, 3, 100])
    assert (h.count, h.min, h.max, h.total) == (5, 1, 100, 108)
    assert h.percentile(50) == 2 and h.percentile(100) == 100 and h.percentile(0) == 1


def test_percentiles_within_relative_error_bound() -> None:
    rng = random.Random(7)
    values = sorted(rng.randint(0, 5 * 10**9) for _ in range(20_000))
    h = Histogram.from_values(values)
    bound = 1 / 2 ** (h.sub_bits + 1)
    for p in (50, 90, 99, 99.9):
        exact = values[max(0, math.ceil(p / 100 * len(values)) - 1)]
        assert abs(h.percentile(p) - exact) <= exact * bound + 1, p


def test_mean_and_stddev_are_exact() -> None:
    values = [10, 20, 30, 40]
    h = Histogram.from_values(values)
    assert h.mean == 25
    assert h.stddev == pytest.approx(math.sqrt(sum((v - 25) ** 2 for v in values) / 4))


def test_merge_equals_recording_everything() -> None:
    a, b = Histogram.from_values(range(0, 5000, 7)), Histogram.from_values(range(3, 90000, 11))
    both = Histogram.from_values([*range(0, 5000, 7), *range(3, 90000, 11)])
    merged = a.copy().merge(b)
    assert merged.summary() == both.summary()
    assert list(merged.buckets()) == list(both.buckets())
    with pytest.raises(ValueError, match="sub_bits"):
        a.merge(Histogram(sub_bits=3))


def test_negative_values_count_as_zero_and_memory_is_bounded() -> None:
    h = Histogram()
    h.record(-5)
    for v in range(0, 10**12, 10**12 // 100_000):
        h.record(v)
    assert h.min == 0
    assert len(list(h.buckets())) < 64 * 2**h.sub_bits


def test_count_at_most_and_round_trip() -> None:
    h = Histogram.from_values([1, 5, 5, 1000, 10**6])
    assert h.count_at_most(5) == 3 and h.count_at_most(10**7) == 5 and h.count_at_most(0) == 0
    again = Histogram.from_dict(h.to_dict())
    assert again.summary() == h.summary()


def test_empty_histogram_and_bad_arguments() -> None:
    h = Histogram()
    assert h.summary()["p99"] == 0 and h.mean == 0 and repr(h) == "Histogram(empty)"
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(ValueError, match="sub_bits"):
        Histogram(sub_bits=0)


def test_record_many_equals_recording_each_value() -> None:
    rng = random.Random(7)
    values = [rng.randrange(0, 10**10) for _ in range(500)] + [-3, 0, 1, 255, 256, 257]
    one, many = Histogram(), Histogram()
    one.record(42)
    many.record(42)
    for value in values:
        one.record(value)
    many.record_many(values)
    many.record_many([])
    assert many.to_dict() == one.to_dict()
    assert many.min == 0 and many.count == len(values) + 1


@pytest.mark.parametrize(
    "values",
    [
        [random.Random(7).randint(-5, 10**9) for _ in range(5000)] + [0, 1, 255, 256, 257, 2**39],
        [2**45, 3, -1],  # past the compiled loop's limit: the Python loop counts them
        [7],
    ],
    ids=["many", "huge", "one"],
)
def test_record_many_counts_the_same_in_c_and_in_python(values: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled core's fold of a batch (when it is there) and the Python loop give the
    same buckets, count, sums (exact, past 64 bits) and extremes."""
    import asynclens.stats as stats

    def fill() -> tuple[object, ...]:
        h = Histogram()
        h.record_many(values)
        h.record_many(tuple(values[:3]))  # not a list: always the Python loop
        h.record(5)
        return h._counts, h.count, h.total, h._total_sq, h.min, h.max

    either = fill()
    monkeypatch.setattr(stats, "_fold_values", None)
    assert fill() == either
    assert either[1] == len(values) + min(3, len(values)) + 1
