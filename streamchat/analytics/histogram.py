"""`LogHistogram`: a mergeable histogram with logarithmic buckets and a stated relative error.

Bucket `i` holds the values in ``(γ^(i-1), γ^i]`` with ``γ = (1 + α) / (1 - α)``; a
quantile is answered with the bucket's midpoint ``2·γ^i / (γ + 1)``, which is within
``α`` (`RELATIVE_ERROR`, 2 %) of every value in the bucket. This is DDSketch's mapping
(Masson, Rim, Lee, VLDB 2019) with a plain dict of counts: the state is a few integers
per occupied bucket, merging two histograms adds their counts (so windows and, later,
processes combine by addition: a Redis hash with ``HINCRBY`` per bucket), and the
number of buckets is bounded by the range of the values, not by how many were added
(values from 1 µs to 10⁸ ms fit in fewer than 700).

The `ddsketch` package implements the same mapping; it is not used because it exposes
its buckets only through private attributes (the dashboard's histogram and the
cross-process merge need them) and costs about 2 µs per value in pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RELATIVE_ERROR", "LogHistogram"]

RELATIVE_ERROR = 0.02
"""Quantiles are within 2 % of a value of the data (relative to that value)."""
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE = 1e-3
"""Values at or below this (1 µs when the unit is ms) count in the zero bucket and read back as 0."""


def bucket_of(value: float) -> int:
    """The index of the bucket holding `value` (> `MIN_VALUE`)."""
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value a quantile falling in bucket `index` is answered with."""
    return 2 * GAMMA**index / (GAMMA + 1)


class LogHistogram:
    """Counts of values in logarithmic buckets, plus their exact count, sum, minimum and maximum.

    Example:
        >>> h = LogHistogram()
        >>> for ms in range(1, 101):
        ...     h.add(ms)
        >>> abs(h.quantile(0.5) - 50) <= 50 * RELATIVE_ERROR
        True
    """

    __slots__ = ("buckets", "count", "max", "min", "sum", "zeros")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        """Count per bucket index (only the occupied ones)."""
        self.zeros = 0
        """Values at or below `MIN_VALUE`."""
        self.count = 0
        """How many values were added."""
        self.sum = 0.0
        """Their exact sum."""
        self.max = 0.0
        """The largest value added (exact)."""
        self.min = math.inf
        """The smallest value above `MIN_VALUE` added (exact; inf when none)."""

    def add(self, value: float) -> None:
        """Count one value (values at or below `MIN_VALUE`, negative ones too, count as 0)."""
        self.count += 1
        if value <= MIN_VALUE:
            self.zeros += 1
            return
        self.sum += value
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1

    def merge(self, other: LogHistogram) -> None:
        """Add `other`'s counts to this histogram."""
        self.count += other.count
        self.zeros += other.zeros
        self.sum += other.sum
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)
        buckets = self.buckets
        for index, count in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + count

    @property
    def mean(self) -> float | None:
        """The exact mean, or None when empty."""
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The `q`-quantile (0 ≤ q ≤ 1) within `RELATIVE_ERROR`, or None when empty.

        Nearest rank: the value at rank ``⌈q · count⌉`` (1-based), so the p50 of 1, 2 … 100
        is 50 and the p95 of five values is the largest.
        """
        if not self.count:
            return None
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, not {q}")
        rank = max(math.ceil(q * self.count) - 1, 0)  # 0-based
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return max(min(bucket_value(index), self.max), self.min)  # the exact extremes bound it
        return self.max  # unreachable while the counts add up

    def __iter__(self) -> Iterator[tuple[float, int]]:
        """(representative value, count) per occupied bucket, smallest first; the zero bucket as 0.0."""
        if self.zeros:
            yield 0.0, self.zeros
        for index in sorted(self.buckets):
            yield bucket_value(index), self.buckets[index]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able state that `from_dict` reads back (and that merges by adding fields)."""
        return {
            "buckets": {str(i): c for i, c in self.buckets.items()},
            "zeros": self.zeros,
            "count": self.count,
            "sum": self.sum,
            "max": self.max,
            "min": self.min if self.min != math.inf else None,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> LogHistogram:
        """The histogram `to_dict` described."""
        histogram = cls()
        histogram.buckets = {int(i): int(c) for i, c in state["buckets"].items()}
        histogram.zeros = int(state["zeros"])
        histogram.count = int(state["count"])
        histogram.sum = float(state["sum"])
        histogram.max = float(state["max"])
        histogram.min = math.inf if state["min"] is None else float(state["min"])
        return histogram
