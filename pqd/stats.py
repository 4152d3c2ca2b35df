"""Uncertainty of what a summary reports: confidence intervals, paired tests, detectable effects.

Two sources of noise decide whether pipeline A is better than pipeline B: which test images were
drawn (a 10,000-image test set gives top-1 a standard error of about 0.3 points) and which
training run was drawn (the seed: data order, initialisation). The intervals here resample both
at once, the *seeds* of an experiment and the *test images* (a two-level bootstrap), and every
comparison is *paired*: A and B are scored on the same images within the same seed, so what the
two have in common (easy and hard images, a lucky seed) cancels. Latency is resampled over the
timing rounds of each seed's latency job (dense and compressed models alternate within a round,
so their ratio is paired per round as well).

Pure numpy over arrays: ``correct[s, i]`` is 1 when seed ``s``'s model got test image ``i`` right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

BOOTSTRAP = 2000  # resamples: percentile CI end points to about +-0.1 point at these sample sizes
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% confidence interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two pipelines' top-1 (points; positive = A better)."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    p_value: float
    p_holm: float = float("nan")

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


class Resampler:
    """One set of bootstrap draws (seeds and image weights) shared by every pipeline of a summary,
    so that the intervals of A, of B and of A - B come from the same resamples (paired)."""

    def __init__(self, n_seeds: int, n_images: int, draws: int = BOOTSTRAP, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n_seeds, self.n_images, self.draws = n_seeds, n_images, draws
        # resampled seeds (with one seed there is nothing to resample: training noise is unseen)
        self.seeds = rng.integers(0, n_seeds, size=(draws, n_seeds)) if n_seeds > 1 else np.zeros((draws, 1), int)
        # image multiplicities of each draw (a multinomial = n draws with replacement), as weights
        self.weights = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=draws).astype(np.float32)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Bootstrap distribution of the mean of ``values[s, i]`` over seeds and images."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.n_seeds, self.n_images):
            raise ValueError(f"expected {(self.n_seeds, self.n_images)} values, got {values.shape}")
        per_seed = self.weights @ values.T / self.n_images  # (draws, seeds)
        return np.take_along_axis(per_seed, self.seeds, axis=1).mean(axis=1)


def percentile_interval(point: float, dist: np.ndarray) -> Interval:
    low, high = np.percentile(dist, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(point), float(low), float(high))


def accuracy_interval(correct: np.ndarray, resampler: Resampler) -> Interval:
    """Top-1 (%) averaged over seeds, with its 95% CI over seeds and test images."""
    correct = np.asarray(correct, dtype=np.float32)
    return percentile_interval(100.0 * float(correct.mean()), 100.0 * resampler.means(correct))


def paired_comparison(a: str, b: str, correct_a: np.ndarray, correct_b: np.ndarray,
                      resampler: Resampler) -> Comparison:
    """Mean top-1 difference A - B (points), its 95% CI and a two-sided paired-bootstrap p-value.

    The p-value is twice the smaller tail of the bootstrap distribution of the difference beyond
    0 (capped at 1). Identical predictions give a difference of 0 in every resample, hence p = 1.
    A tail count cannot resolve p below about 1/draws, yet Holm over the 100-odd pairs of a
    summary needs p near 1e-4 to call anything significant; below p = 0.01 the p-value is
    therefore read from the normal approximation of the same bootstrap distribution (difference
    over its bootstrap standard error)."""
    from scipy.stats import norm

    d = np.asarray(correct_a, dtype=np.float32) - np.asarray(correct_b, dtype=np.float32)
    dist = 100.0 * resampler.means(d)
    ci = percentile_interval(100.0 * float(d.mean()), dist)
    p = min(1.0, 2.0 * min(float((dist <= 0).mean()), float((dist >= 0).mean())))
    if p < 0.01:
        sd = float(dist.std())
        p = float(2.0 * norm.sf(abs(ci.mean) / sd)) if sd > 0 else 0.0
    return Comparison(a, b, ci.mean, ci.low, ci.high, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error rate), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    adjusted = holm([c.p_value for c in comparisons])
    return [Comparison(c.a, c.b, c.diff, c.low, c.high, c.p_value, p) for c, p in zip(comparisons, adjusted)]


def ratio_interval(numerator: list[np.ndarray], denominator: Optional[list[np.ndarray]], draws: int = BOOTSTRAP,
                   seed: int = 0) -> Interval:
    """Median of per-round values (``numerator[s][r]``, or the per-round ratio numerator /
    denominator of models timed in the same rounds) over seeds, with a 95% CI from resampling
    seeds and, within each, timing rounds."""
    rng = np.random.default_rng(seed)
    per_seed = [np.asarray(n, float) / (np.asarray(d, float) if denominator is not None else 1.0)
                for n, d in zip(numerator, denominator if denominator is not None else numerator)]
    point = float(np.mean([np.median(v) for v in per_seed]))
    dist = np.empty(draws)
    for b in range(draws):
        picks = rng.integers(0, len(per_seed), size=len(per_seed)) if len(per_seed) > 1 else [0]
        dist[b] = np.mean([np.median(rng.choice(per_seed[s], size=len(per_seed[s]))) for s in picks])
    return percentile_interval(point, dist)


def minimum_detectable_effect(discordance: float, n_images: int, n_seeds: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """Smallest top-1 difference (points) a paired test on ``n_seeds`` x ``n_images`` scored images
    detects with probability ``power`` at two-sided level ``alpha``, when the two models disagree
    on a fraction ``discordance`` of images (McNemar's normal approximation: the difference
    of paired proportions has variance about discordance / N for small differences).

    More seeds or more test images shrink it as 1/sqrt(N); so does comparing models that disagree
    less. It ignores seed-to-seed training noise, so it is a lower bound on what the bootstrap
    over seeds can resolve."""
    from scipy.stats import norm

    n = n_images * n_seeds
    if n <= 0 or discordance <= 0:
        return 0.0
    return 100.0 * (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * float(np.sqrt(discordance / n))


def discordance(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Fraction of (seed, image) pairs on which exactly one of the two models is right."""
    return float((np.asarray(correct_a, bool) != np.asarray(correct_b, bool)).mean())
