"""A log-linear histogram of non-negative integers (nanoseconds): fixed memory, mergeable.

Values below ``2 ** (sub_bits + 1)`` are counted exactly; above, each power of two
is split into ``2 ** sub_bits`` equal buckets, so any reported percentile is within
``1 / 2 ** (sub_bits + 1)`` (0.4 % at the default ``sub_bits=7``) of a recorded
value. Count, sum, min and max are exact; the standard deviation comes from exact
integer sums. Memory is bounded by the number of distinct buckets (at most
``64 * 2 ** sub_bits``, a few hundred in practice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._native import core

__all__ = ["Histogram"]

#: The compiled core's loop of :meth:`Histogram.record_many`, when it is there.
_fold_values = core.fold_values if core is not None else None

_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


class Histogram:
    """Log-linear histogram (HDR-style) of ints, as Node's ``monitorEventLoopDelay`` reports.

    .. versionadded:: 0.1
    """

    __slots__ = ("sub_bits", "_exact_below", "_counts", "count", "total", "_total_sq", "min", "max")

    def __init__(self, sub_bits: int = 7) -> None:
        if not 1 <= sub_bits <= 12:
            raise ValueError(f"Histogram(sub_bits={sub_bits}): must be between 1 and 12")
        self.sub_bits = sub_bits
        self._exact_below = 1 << (sub_bits + 1)
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self._total_sq = 0
        self.min = 0
        self.max = 0

    # ------------------------------------------------------------ recording

    def _index(self, value: int) -> int:
        if value < self._exact_below:
            return value
        shift = value.bit_length() - self.sub_bits - 1
        return (shift << self.sub_bits) + (value >> shift)

    def _bounds(self, index: int) -> tuple[int, int]:
        """The smallest and largest value that fall into bucket ``index``."""
        if index < self._exact_below:
            return index, index
        shift = (index >> self.sub_bits) - 1
        mantissa = index - (shift << self.sub_bits)
        return mantissa << shift, ((mantissa + 1) << shift) - 1

    def record(self, value: int, times: int = 1) -> None:
        """Count ``value`` (negative values count as 0) ``times`` times."""
        value = int(value)
        if value < 0:
            value = 0
        index = self._index(value)
        counts = self._counts
        counts[index] = counts.get(index, 0) + times
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += times
        self.total += value * times
        self._total_sq += value * value * times

    def record_many(self, values: Sequence[int]) -> None:
        """Count every value of ``values`` (negative ones as 0) once: what ``record``
        does per value, at a fraction of the per-call cost (hot paths collect values
        in a list and fold them in batches)."""
        if not values:
            return
        folded = None
        if _fold_values is not None and type(values) is list:
            folded = _fold_values(self._counts, values, self._exact_below, self.sub_bits)
        low, high, total, total_sq = folded if folded is not None else self._fold(values)
        if self.count == 0 or low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        self.count += len(values)
        self.total += total
        self._total_sq += total_sq

    def _fold(self, values: Sequence[int]) -> tuple[int, int, int, int]:
        """Count ``values`` into the buckets: their (min, max, sum, sum of squares), negatives as 0."""
        counts = self._counts
        get = counts.get
        exact = self._exact_below
        sub = self.sub_bits
        low = min(values)
        if low < 0:
            values = [v if v > 0 else 0 for v in values]
            low = 0
        total = 0
        total_sq = 0
        for value in values:
            if value < exact:
                index = value
            else:
                shift = value.bit_length() - sub - 1
                index = (shift << sub) + (value >> shift)
            counts[index] = get(index, 0) + 1
            total += value
            total_sq += value * value
        return low, max(values), total, total_sq

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this histogram (same ``sub_bits``); returns self."""
        if other.sub_bits != self.sub_bits:
            raise ValueError(f"cannot merge histograms with sub_bits {self.sub_bits} and {other.sub_bits}")
        if not other.count:
            return self
        counts = self._counts
        for index, n in list(other._counts.items()):
            counts[index] = counts.get(index, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        self._total_sq += other._total_sq
        return self

    def copy(self) -> Histogram:
        return Histogram(self.sub_bits).merge(self)

    def reset(self) -> None:
        self._counts = {}
        self.count = self.total = self._total_sq = self.min = self.max = 0

    # ------------------------------------------------------------ reading

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def stddev(self) -> float:
        """Population standard deviation, from exact integer sums."""
        if self.count < 2:
            return 0.0
        variance = (self._total_sq * self.count - self.total * self.total) / (self.count * self.count)
        return math.sqrt(max(variance, 0.0))

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0–100): the middle of the bucket holding
        that rank, clamped to the exact min/max."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {p}")
        if not self.count:
            return 0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                low, high = self._bounds(index)
                return max(self.min, min(self.max, (low + high) // 2))
        return self.max

    def count_at_most(self, value: int) -> int:
        """How many recorded values are ≤ ``value`` (exact at bucket bounds; for
        cumulative ``le`` buckets as Prometheus and OTLP want them)."""
        limit = self._index(max(int(value), 0))
        return sum(n for index, n in list(self._counts.items()) if index <= limit)

    def buckets(self) -> Iterable[tuple[int, int, int]]:
        """``(low, high, count)`` for each non-empty bucket, in value order."""
        for index in sorted(self._counts):
            low, high = self._bounds(index)
            yield low, high, self._counts[index]

    def summary(self) -> dict[str, Any]:
        """count, min, max, mean, stddev and p50/p90/p99/p999 (ns)."""
        out: dict[str, Any] = {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "stddev": self.stddev,
        }
        for key, p in _PERCENTILES:
            out[key] = self.percentile(p)
        return out

    @classmethod
    def from_values(cls, values: Iterable[int], sub_bits: int = 7) -> Histogram:
        hist = cls(sub_bits)
        for value in values:
            hist.record(value)
        return hist

    def to_dict(self) -> dict[str, Any]:
        """A lossless, JSON-ready form (``from_dict`` reverses it)."""
        return {
            "sub_bits": self.sub_bits,
            "count": self.count,
            "total": self.total,
            "total_sq": self._total_sq,
            "min": self.min,
            "max": self.max,
            "counts": {str(k): v for k, v in sorted(self._counts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        hist = cls(int(data["sub_bits"]))
        hist._counts = {int(k): int(v) for k, v in data["counts"].items()}
        hist.count = int(data["count"])
        hist.total = int(data["total"])
        hist._total_sq = int(data["total_sq"])
        hist.min = int(data["min"])
        hist.max = int(data["max"])
        return hist

    def __repr__(self) -> str:
        if not self.count:
            return "Histogram(empty)"
        return f"Histogram(count={self.count}, min={self.min}, p50={self.percentile(50)}, p99={self.percentile(99)}, max={self.max})"
