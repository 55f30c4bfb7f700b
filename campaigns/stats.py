"""Interval estimates for campaign lift, as pure functions: no ORM, no clock, no settings.

``wilson`` is the Wilson score interval for one proportion; ``newcombe`` is Newcombe's hybrid score
interval for a difference of two independent proportions built from the two Wilson intervals
(method 10 in Newcombe, "Interval estimation for the difference between independent proportions",
Statistics in Medicine 17, 1998); ``mean_difference`` is a normal interval for a difference of two
means from the groups' sample variances (Welch's standard error). docs/attribution.md has the
formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


def z_for(confidence: float = CONFIDENCE) -> float:
    """The two-sided standard normal quantile: 1.959964 for 95%."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Difference:
    """An estimate of a difference (first group minus second) and its interval."""

    estimate: float
    low: float
    high: float


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """The Wilson score interval for ``successes / trials`` (no continuity correction)."""
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..{trials}, not {successes}")
    z = z_for(confidence)
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2.0 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / trials + z2 / (4.0 * trials * trials))
    # Clamp the rounding error at the ends (x = 0 or x = n give exactly 0 or 1).
    return Interval(low=max(0.0, centre - half), high=min(1.0, centre + half))


def newcombe(
    successes_1: int,
    trials_1: int,
    successes_2: int,
    trials_2: int,
    confidence: float = CONFIDENCE,
) -> Difference:
    """p1 - p2 with Newcombe's hybrid score interval (from the two Wilson intervals)."""
    p1 = successes_1 / trials_1 if trials_1 > 0 else 0.0
    p2 = successes_2 / trials_2 if trials_2 > 0 else 0.0
    w1 = wilson(successes_1, trials_1, confidence)
    w2 = wilson(successes_2, trials_2, confidence)
    d = p1 - p2
    return Difference(
        estimate=d,
        low=d - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2),
        high=d + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2),
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """Count, mean and sample variance (n - 1 denominator; None below two values)."""

    n: int
    mean: float | None
    variance: float | None


def sample(values: Sequence[int | float]) -> Sample:
    """Summarise ``values``; exact sums first, so integer minor units lose nothing."""
    n = len(values)
    if n == 0:
        return Sample(n=0, mean=None, variance=None)
    mean = math.fsum(values) / n
    if n == 1:
        return Sample(n=1, mean=mean, variance=None)
    return Sample(n=n, mean=mean, variance=math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def mean_difference(
    first: Sample, second: Sample, confidence: float = CONFIDENCE
) -> Difference | None:
    """mean(first) - mean(second) with a normal interval and Welch's standard error,
    sqrt(s1^2/n1 + s2^2/n2). None unless both groups have at least two values."""
    if (
        first.mean is None
        or second.mean is None
        or first.variance is None
        or second.variance is None
    ):
        return None
    d = first.mean - second.mean
    se = math.sqrt(first.variance / first.n + second.variance / second.n)
    z = z_for(confidence)
    return Difference(estimate=d, low=d - z * se, high=d + z * se)
