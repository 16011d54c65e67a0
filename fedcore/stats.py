"""Statistics over seeds: means with 95% Student-t intervals, and paired comparisons that decide rankings.

An interval is mean +- t(0.975, n-1) s / sqrt(n) over the n seeds (nan for one seed). A comparison of two
settings is paired: the difference on each common seed (same allocation, same initial model), then the
interval of the mean difference; the verdict says "higher" or "lower" only when that interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Student t quantiles t(0.975, df) for df = 1..30; beyond that the normal 1.96 is within 2%.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


CLOSE = 0.5  # a verdict is close where the interval's end nearest 0 lies within this many half-widths of 0


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"df must be >= 1; got {df}")
    return T975[df - 1] if df <= len(T975) else 1.96


def interval(values: Sequence[float]) -> float:
    """Half-width of the 95% Student-t interval of the mean (nan for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    return t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` seeds and the half-width of its 95% interval; ``diverged`` of the seeds diverged
    (they are inside the mean, at the value the caller gave them)."""

    mean: float
    half_width: float
    n: int
    diverged: int = 0

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def sd(self) -> float:
        """Standard deviation over the seeds (nan for one seed)."""
        return self.half_width * math.sqrt(self.n) / t975(self.n - 1) if self.n > 1 else math.nan

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. 100 for percent)."""
        return Estimate(self.mean * factor, self.half_width * abs(factor), self.n, self.diverged)

    def text(self, digits: int = 1) -> str:
        """'79.9 ± 1.8' (one seed: '79.9, one seed'); with diverged seeds ', 2 of 5 diverged' is added."""
        mean = f"{self.mean:.{digits}f}"
        body = f"{mean} ± {self.half_width:.{digits}f}" if self.n > 1 else f"{mean}, one seed"
        return body + (f", {self.diverged} of {self.n} diverged" if self.diverged else "")


def estimate(values: Sequence[float], diverged: int = 0) -> Estimate:
    """Mean and 95% interval of per-seed values."""
    if not values:
        raise ValueError("an estimate needs at least one value")
    return Estimate(statistics.fmean(values), interval(values), len(values), diverged)


@dataclass(frozen=True)
class Comparison:
    """The paired difference a - b over common seeds and what it lets one say."""

    difference: Estimate

    @property
    def verdict(self) -> str:
        """'higher' or 'lower' when the 95% interval of the difference excludes 0, else 'indistinguishable'
        (always so with one seed: one seed cannot rank two settings)."""
        d = self.difference
        if d.n > 1 and d.low > 0:
            return "higher"
        if d.n > 1 and d.high < 0:
            return "lower"
        return "indistinguishable"

    @property
    def close(self) -> bool:
        """Barely decided or barely undecided: the end of the interval nearest 0 lies within half a half-width of
        0, on either side (0.5 < |mean| / half-width < 1.5), so that another processor's rounding can move the
        interval across 0 either way. More seeds settle it. One seed is never close (it decides nothing)."""
        d = self.difference
        return d.n > 1 and abs(abs(d.mean) - d.half_width) < CLOSE * d.half_width

    def sentence(self, a: str, b: str, digits: int = 1, unit: str = " points") -> str:
        """The verdict in words with its numbers, e.g. 'FedAvgM is higher than FedAvg by 8.1 points (95%
        interval of the paired difference 6.0 to 10.2, 5 seeds)'."""
        d = self.difference
        numbers = (f"95% interval of the paired difference {d.low:.{digits}f} to {d.high:.{digits}f}, {d.n} seeds"
                   if d.n > 1 else "one seed")
        if self.verdict == "indistinguishable":
            return f"{a} and {b} cannot be told apart (difference {d.mean:+.{digits}f}{unit}; {numbers})"
        return f"{a} is {self.verdict} than {b} by {abs(d.mean):.{digits}f}{unit} ({numbers})"


def paired(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compare two settings on the same seeds: ``a[i]`` and ``b[i]`` come from seed i (the shorter list
    decides how many seeds are common)."""
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("a paired comparison needs at least one common seed")
    return Comparison(estimate([x - y for x, y in zip(a[:n], b[:n], strict=True)]))


def against_reading(est: Estimate, reading: float, tolerance: float) -> str:
    """Set an estimate beside a number read off a figure by eye to within +-``tolerance``: 'agrees' where its
    95% interval (the mean alone for one seed) overlaps reading +- tolerance, else 'higher' or 'lower'."""
    half = 0.0 if math.isnan(est.half_width) else est.half_width
    if est.mean - half > reading + tolerance:
        return "higher"
    if est.mean + half < reading - tolerance:
        return "lower"
    return "agrees"
