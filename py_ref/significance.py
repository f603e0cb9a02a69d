"""Paired comparison of two classifiers on the same images: McNemar's test and Newcombe's interval.

An operating point of VELCRO is judged against the uncompressed model *on the same held-out
images*, so the two accuracies are paired: only the discordant images matter, ``b`` (the
uncompressed model right, the compressed one wrong: lost) and ``c`` (gained).  Under the null
hypothesis (equal accuracy) each discordant image is lost or gained with probability 1/2.

* :func:`mcnemar_p`: two-sided p-value; exact binomial (``scipy.stats.binomtest`` at p = 1/2,
  i.e. ``2 * P(X <= min(b, c))``, X ~ Binomial(b + c, 1/2), capped at 1) when
  ``b + c < EXACT_BELOW``, otherwise the chi-square statistic with continuity correction,
  (|b - c| - 1)^2 / (b + c), on 1 degree of freedom (``scipy.stats.chi2.sf``). scipy has no
  McNemar function of its own (statsmodels has one; not a dependency for two lines).
* :func:`wilson`: Wilson score interval of one proportion
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).
* :func:`newcombe_paired`: Newcombe's (1998, method 10) interval for the difference of two
  paired proportions, built from the two Wilson intervals and the phi correlation of the
  2x2 table: scipy lacks it, so it stays here.

tests/test_velcro_metrics.py checks every scipy-backed function against the closed-form
formulas on known tables (and Newcombe's 1998 worked example).
* :func:`compare`: all of it for two per-image correctness vectors; ``lossless`` means "not
  significantly worse at level ``alpha``" (the compressed model lost more images than it
  gained *and* p < alpha would be "worse").  That is a statement about evidence, not a proof
  of equality: the interval says how large a loss the images still allow.

Nothing here knows about VELCRO; inputs are counts or bool sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from scipy import stats

__all__ = ["EXACT_BELOW", "ALPHA", "Z95", "mcnemar_p", "binom_two_sided", "wilson",
           "newcombe_paired", "Paired", "compare"]

#: Below this many discordant images the exact binomial test is used (the usual rule of thumb
#: for the chi-square approximation is b + c >= 25).
EXACT_BELOW = 25
#: The stated significance level of "lossless" (two-sided McNemar).
ALPHA = 0.05
#: The standard normal quantile of a two-sided 95 % interval (``stats.norm.ppf(0.975)``).
Z95 = 1.959963984540054


def _count(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise TypeError(f"{what} must be an integer, not {v!r}")
    v = int(v)
    if v < 0:
        raise ValueError(f"{what} must be >= 0, not {v}")
    return v


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials at p = 1/2: 2 P(X <= min(k, n-k)), capped at 1."""
    k, n = _count(k, "k"), _count(n, "n")
    if k > n:
        raise ValueError(f"k must be <= n, not {k} > {n}")
    if n == 0:
        return 1.0
    # at p = 1/2 scipy's two-sided p (outcomes no more likely than k) is 2 P(X <= min(k, n - k))
    return min(1.0, float(stats.binomtest(k, n, 0.5).pvalue))


def mcnemar_p(b: int, c: int, *, exact: bool | None = None) -> float:
    """Two-sided McNemar p-value of ``b`` lost and ``c`` gained images (see the module doc).

    ``exact`` None: exact binomial when b + c < :data:`EXACT_BELOW`, else chi-square with
    continuity correction; True / False forces one."""
    b, c = _count(b, "b"), _count(c, "c")
    n = b + c
    if n == 0:
        return 1.0
    if exact is None:
        exact = n < EXACT_BELOW
    if exact:
        return binom_two_sided(min(b, c), n)
    stat = max(abs(b - c) - 1, 0) ** 2 / n
    return float(stats.chi2.sf(stat, df=1))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n."""
    k, n = _count(k, "k"), _count(n, "n")
    if n == 0 or k > n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, not k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * stats.norm.sf(z),
                                             method="wilson")
    # at k = 0 or k = n the bound is exactly 0 or 1 (scipy returns them so)
    return (0.0 if k == 0 else max(0.0, float(ci.low))), (1.0 if k == n else min(1.0, float(ci.high)))


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's method-10 interval of p2 - p1 for a paired 2x2 table.

    ``a`` both right, ``b`` first right only, ``c`` second right only, ``d`` both wrong;
    p1 = (a + b) / n (the first classifier's accuracy), p2 = (a + c) / n."""
    a, b, c, d = (_count(v, w) for v, w in zip((a, b, c, d), "abcd"))
    n = a + b + c + d
    if n == 0:
        raise ValueError("the table is empty")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(den) if den else 0.0
    diff = p2 - p1
    lo = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    hi = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, diff - lo), min(1.0, diff + hi)


@dataclasses.dataclass(frozen=True)
class Paired:
    """The comparison of a compressed model (second) with the uncompressed one (first)."""

    images: int
    base: float          # accuracy of the first (uncompressed) classifier
    other: float         # accuracy of the second (compressed)
    lost: int            # b: first right, second wrong
    gained: int          # c: first wrong, second right
    p: float             # two-sided McNemar p-value
    exact: bool          # exact binomial (True) or chi-square with continuity correction
    ci: tuple[float, float]   # 95 % Newcombe interval of other - base
    alpha: float

    @property
    def diff(self) -> float:
        return self.other - self.base

    @property
    def worse(self) -> bool:
        """Significantly worse at level ``alpha``."""
        return self.lost > self.gained and self.p < self.alpha

    @property
    def better(self) -> bool:
        return self.gained > self.lost and self.p < self.alpha

    @property
    def lossless(self) -> bool:
        """Not significantly worse at level ``alpha`` (two-sided McNemar)."""
        return not self.worse

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ci"] = list(self.ci)
        d.update(diff=self.diff, lossless=self.lossless, worse=self.worse, better=self.better)
        return d


def compare(first: Sequence[bool], second: Sequence[bool], *, alpha: float = ALPHA,
            z: float = Z95) -> Paired:
    """Paired comparison of two per-image correctness vectors (same images, same order)."""
    first, second = [bool(v) for v in first], [bool(v) for v in second]
    if len(first) != len(second):
        raise ValueError(f"the two classifiers were scored on {len(first)} and {len(second)} images")
    if not first:
        raise ValueError("no images to compare")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha!r}")
    a = sum(1 for x, y in zip(first, second) if x and y)
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    d = len(first) - a - b - c
    n = len(first)
    exact = b + c < EXACT_BELOW
    return Paired(n, (a + b) / n, (a + c) / n, b, c, mcnemar_p(b, c), exact,
                  newcombe_paired(a, b, c, d, z), alpha)
