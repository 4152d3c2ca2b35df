"""Uncertainty of what a summary reports: confidence intervals, paired tests, detectable effects and
the groups of pipelines that cannot be told apart.

A summary scores every pipeline's model of each of S seeds on the same N test images:
``correct[s, i]`` is 1 when seed ``s``'s model got image ``i`` right. Two kinds of noise decide
whether pipeline A beats B: the *training run* (seed: data order, initialisation) and the *test
sample* (which images were drawn). They are not alike: every seed is scored on the same images, so
image noise is shared by all seeds, while training noise differs from seed to seed. The functions
here estimate each once, from a two-way random-effects decomposition of the seeds x images table
(:class:`Components`): the spread of the per-seed means measures training noise (with S - 1 degrees
of freedom), the spread of the per-image means over seeds the image noise; their sum is the
variance of the grand mean, with Satterthwaite's degrees of freedom (never more than the seeds
allow over the seed term's share of the variance, :meth:`Components.variance_df`; seeds that all
made the same predictions are one model, tested on its images). With 2-3 seeds that is few
degrees of freedom, and the t quantile says so: a bootstrap over 3 seeds instead treated their
spread as known (the two-level bootstrap this replaces declared 8.7% of truly equal pairs different
at nominal 5% with 3 seeds, 35% with one, in an independent simulation).

With one seed, training noise is unseen: intervals then cover image (and timing) noise only, and
no comparison is called significant (:attr:`Comparison.significant`). ``bench/stats_calibration.py``
checks the false-positive rate, family-wise error, coverage and power of these functions by
simulation with a known truth.

Pure numpy/scipy over arrays.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% confidence interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Components:
    """Mean squares of a seeds x images table (two-way crossed random effects, one value per cell).

    ``ms_seed`` estimates ``resid + N * seed_variance``, ``ms_image`` estimates
    ``resid + S * image_variance``; with one seed only ``ms_image`` exists (the spread over images)."""

    mean: float
    n_seeds: int
    n_images: int
    ms_seed: float
    ms_image: float
    ms_resid: float
    identical: bool = False  # every seed's row is the same: one model (an import, a stage that ignores the seed)

    def _terms(self, n_seeds: int) -> list[tuple[float, float]]:
        """(coefficient x expected mean square, degrees of freedom) whose sum is the variance of the
        grand mean of ``n_seeds`` seeds: the seed term, plus the image term when images differ
        beyond the residual (shared by every seed, so more seeds do not shrink it)."""
        s, n = n_seeds, self.n_images
        if self.n_seeds == 1:
            return [(self.ms_image / n, n - 1)]
        resid = self.ms_resid
        image_var = max(0.0, (self.ms_image - resid) / self.n_seeds)
        # ms_seed estimates resid + N * seed variance, whatever the number of seeds: the seed term of
        # s seeds is that over s * N, known to s - 1 degrees of freedom (the same estimator at the
        # observed and at a projected number of seeds, so the detectable effect shrinks with seeds).
        terms = [(self.ms_seed / (s * n), s - 1)]
        if image_var > 0:
            ms_image = resid + s * image_var
            terms += [(ms_image / (s * n), n - 1), (-resid / (s * n), (s - 1) * (n - 1))]
        return terms

    def variance_df(self, n_seeds: Optional[int] = None) -> tuple[float, float]:
        """Variance of the grand mean and its Satterthwaite degrees of freedom, for this table or,
        projected from its variance estimates, for ``n_seeds`` seeds on the same images."""
        if self.identical and self.n_seeds > 1:
            # one model scored S times: no training noise to see or to allow for (it is absent, not
            # unseen), so its uncertainty is that of its test images, as for one seed
            return self.ms_image / (self.n_seeds * self.n_images), max(self.n_images - 1, 1)
        terms = self._terms(n_seeds or self.n_seeds)
        var = sum(c for c, _ in terms)
        denom = sum(c * c / df for c, df in terms if df > 0)
        df = var * var / denom if denom > 0 else math.inf
        s = n_seeds or self.n_seeds
        if s > 1 and var > 0 and terms[0][0] > 0:
            # a seed term that is a moderate share of the variance is still known to 1-2 df only
            # (2 seeds covered 92.8% in the calibration without this): S - 1 over its share. (Capping
            # at S - 1 whenever seeds agree closer than image noise made the 360-image intervals
            # cover 100%: there the image term, known to hundreds of df, is most of the variance.)
            df = min(df, terms[0][1] / (terms[0][0] / var))
        if s > 1 and var <= 0 and self.ms_resid > 0:
            # seeds' means identical and no image term, yet cells disagree: not zero noise (a CI of
            # zero width), but at least the residual's, known to S - 1 degrees of freedom
            return self.ms_resid / (s * self.n_images), s - 1
        return max(var, 0.0), df

    @property
    def variance(self) -> float:
        return self.variance_df()[0]

    @property
    def df(self) -> float:
        return self.variance_df()[1]


def _table(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"expected a seeds x images table, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("the seeds x images table holds NaN or infinite values")
    return v


def components(values: np.ndarray) -> Components:
    """Two-way ANOVA mean squares of ``values[s, i]`` (seeds x images)."""
    v = _table(values)
    s, n = v.shape
    grand = float(v.mean())
    if s == 1:
        return Components(grand, 1, n, math.nan, float(v[0].var(ddof=1)) if n > 1 else 0.0, math.nan)
    seed_means, image_means = v.mean(axis=1), v.mean(axis=0)
    ss_seed = n * float(((seed_means - grand) ** 2).sum())
    ss_image = s * float(((image_means - grand) ** 2).sum())
    ss_resid = max(0.0, float(((v - grand) ** 2).sum()) - ss_seed - ss_image)
    return Components(
        grand,
        s,
        n,
        ss_seed / (s - 1),
        ss_image / (n - 1) if n > 1 else 0.0,
        ss_resid / ((s - 1) * (n - 1)) if n > 1 else 0.0,
        identical=bool((v == v[0]).all()),
    )


def _quantile(q: float, df: float) -> float:
    from scipy.stats import norm, t

    return float(norm.ppf(q)) if not math.isfinite(df) else float(t.ppf(q, df))


def wilson(p: float, n: float, q: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` seen in ``n`` (effective) trials, quantile ``q``.
    Unlike ``p +- q * se`` it stays inside [0, 1] and keeps its width at 0% or 100% observed."""
    q2n = q * q / n
    centre = (p + q2n / 2) / (1 + q2n)
    half = q / (1 + q2n) * math.sqrt(p * (1 - p) / n + q2n / (4 * n))
    return (0.0 if p <= 0 else max(0.0, centre - half)), (1.0 if p >= 1 else min(1.0, centre + half))


def accuracy_interval(correct: np.ndarray) -> Interval:
    """Top-1 (%) averaged over seeds, with a Wilson-type 95% CI over seeds and test images.

    The variance decomposition gives the variance of the mean top-1; dividing the binomial variance
    by it gives an effective number of independent trials (fewer than seeds x images when seeds
    disagree or when the same hard images fail in every seed), and the Wilson interval on that
    number with a t quantile (Satterthwaite's degrees of freedom) keeps its coverage near 0 or 100%,
    where a percentile interval collapses (at 100% observed it was [100, 100]). With one seed the
    effective number is the number of images: plain Wilson, image noise only. When every seed gets
    every image right (or wrong) the decomposition has nothing to go on, and the images count once."""
    c = components(correct)
    p = c.mean
    var, df = c.variance_df()
    n = c.n_images
    if c.n_seeds > 1 and 0.0 < p < 1.0 and var > 0:
        n = min(c.n_seeds * c.n_images, max(1.0, p * (1 - p) / var))
    else:
        df = math.inf
    low, high = wilson(p, n, _quantile(1 - ALPHA / 2, df))
    return Interval(100.0 * p, 100.0 * low, 100.0 * high)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two pipelines' top-1 (points; positive = A better)."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    p_value: float
    p_holm: float = math.nan
    n_seeds: int = 1
    components: Optional[Components] = None

    @property
    def judged(self) -> bool:
        """Whether the test saw training noise: it needs at least two seeds."""
        return self.n_seeds >= 2

    @property
    def significant(self) -> bool:
        """Holm-adjusted p below alpha, judged on two or more seeds (never with one: its p-value
        covers image noise only, and a training run's own noise would be read as an effect)."""
        return self.judged and self.p_holm < ALPHA

    @property
    def noise(self) -> str:
        return "seeds and test images" if self.judged else "test images only (1 seed: training noise unseen)"


def exact_mcnemar(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (images only A, only B got right)."""
    from scipy.stats import binomtest

    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)


def paired_comparison(a: str, b: str, correct_a: np.ndarray, correct_b: np.ndarray) -> Comparison:
    """Mean top-1 difference A - B (points), its 95% CI and a two-sided p-value.

    The per-cell differences ``a[s, i] - b[s, i]`` are decomposed like any seeds x images table
    (:func:`components`): a t statistic on their mean with Satterthwaite's degrees of freedom, near
    S - 1 when training noise dominates (so 2-3 seeds get the wide t quantiles they need). The
    p-value is also never below exact McNemar's on the pooled discordant counts: with few differing
    images the normal approximation is too liberal (3 images vs 0: 0.08 against the exact 0.25)."""
    ca, cb = _table(correct_a), _table(correct_b)
    if ca.shape != cb.shape:
        raise ValueError(f"{a} has {ca.shape} seeds x images, {b} has {cb.shape}: compare the same seeds and images")
    comp = components(ca - cb)
    var, df = comp.variance_df()
    diff = 100.0 * comp.mean
    if var <= 0:  # every cell differs by the same amount: identical (p 1) or one always right where the other is wrong
        p_t = 1.0 if comp.mean == 0 else 0.0
        half = 0.0
    else:
        se = math.sqrt(var)
        p_t = _two_sided_p(comp.mean / se, df)
        half = 100.0 * _quantile(1 - ALPHA / 2, df) * se
    p = max(p_t, exact_mcnemar(int((ca > cb).sum()), int((cb > ca).sum())))
    return Comparison(a, b, diff, diff - half, diff + half, p, n_seeds=comp.n_seeds, components=comp)


def _two_sided_p(t_stat: float, df: float) -> float:
    from scipy.stats import norm, t

    return float(2 * (norm.sf(abs(t_stat)) if not math.isfinite(df) else t.sf(abs(t_stat), df)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error rate), in the input order. A NaN (a
    comparison that could not be made) stays NaN and is not counted in the family."""
    p = [float(x) for x in p_values]
    valid = sorted((i for i in range(len(p)) if not math.isnan(p[i])), key=lambda i: p[i])
    m = len(valid)
    adjusted, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    from dataclasses import replace

    adjusted = holm([c.p_value for c in comparisons])
    return [replace(c, p_holm=p) for c, p in zip(comparisons, adjusted)]


def _per_seed_ratios(numerator: Sequence[np.ndarray], denominator: Optional[Sequence[np.ndarray]]) -> list[np.ndarray]:
    if not len(numerator):
        raise ValueError("no seeds to summarise")
    if denominator is not None and len(denominator) != len(numerator):
        raise ValueError(
            f"{len(numerator)} seeds of the model's timing rounds but {len(denominator)} of the reference's"
        )
    out = []
    for s, num in enumerate(numerator):
        if num is None or (denominator is not None and denominator[s] is None):
            raise ValueError(
                f"seed {s}: no timing rounds recorded (a latency.json from before rounds were kept: "
                "rerun its latency job)"
            )
        n = np.asarray(num, dtype=np.float64)
        d = np.asarray(denominator[s], dtype=np.float64) if denominator is not None else np.ones_like(n)
        if n.ndim != 1 or n.shape != d.shape or n.size == 0:
            raise ValueError(
                f"seed {s}: {n.size} timing rounds of the model but {d.size} of the reference "
                "(they must be timed in the same rounds)"
            )
        r = n / d
        if not (np.isfinite(r).all() and (r > 0).all()):
            raise ValueError(f"seed {s}: timing rounds hold NaN, infinite or non-positive values")
        out.append(r)
    return out


ROUNDS_PER_BATCH = 10  # consecutive timing rounds per batch of the one-seed latency interval (3 to 5 batches)


def batch_interval(values: np.ndarray) -> tuple[float, float]:
    """95% CI of the log median of one seed's timing rounds from batch medians: the rounds cut into
    3 to 5 runs of consecutive rounds (one per ten rounds, at least 3, at most 5), a t interval (batches - 1 degrees of freedom) on
    their log medians around the log median of all. Neighbouring rounds are alike (the machine's
    speed drifts over seconds), so rounds are not independent; batches of ten are nearly so. In the
    calibration (autocorrelation 0.6 between rounds) a bootstrap of single rounds or short blocks
    covered 77% of the time, five batches of 40 rounds 91-93%, four batches 93%."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    b = max(3, min(5, len(logs) // ROUNDS_PER_BATCH))
    medians = np.array([np.median(chunk) for chunk in np.array_split(logs, b)])
    half = _quantile(1 - ALPHA / 2, b - 1) * float(medians.std(ddof=1)) / math.sqrt(b)
    centre = float(np.median(logs))
    return centre - half, centre + half


def ratio_interval(numerator: Sequence[np.ndarray], denominator: Optional[Sequence[np.ndarray]] = None) -> Interval:
    """Geometric mean over seeds of the median per-round value (``numerator[s][r]``, or the
    per-round ratio numerator / denominator of models timed in the same rounds), with a 95% CI.

    Two or more seeds: a t interval on the log of the per-seed medians (S - 1 degrees of freedom),
    so a speedup that truly differs between seeds' models, and correlated timing rounds within a
    seed, are both in the spread it sees. One seed: batch medians of its rounds, which
    covers timing noise only. Lists of unequal length are an error, never truncated."""
    per_seed = _per_seed_ratios(numerator, denominator)
    logs = np.log([float(np.median(r)) for r in per_seed])
    point = float(np.exp(logs.mean()))
    if len(per_seed) >= 2:
        half = _quantile(1 - ALPHA / 2, len(logs) - 1) * float(logs.std(ddof=1)) / math.sqrt(len(logs))
        return Interval(point, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)))
    if len(per_seed[0]) < 4:
        raise ValueError(f"{len(per_seed[0])} timing rounds: a one-seed interval needs at least 4")
    low, high = batch_interval(per_seed[0])
    return Interval(float(np.median(per_seed[0])), float(np.exp(low)), float(np.exp(high)))


def minimum_detectable_effect(
    comp: Components, family: int = 1, n_seeds: Optional[int] = None, alpha: float = ALPHA, power: float = POWER
) -> Optional[float]:
    """Smallest top-1 difference (points) the paired test detects with probability ``power`` at the
    Holm level of a family of ``family`` comparisons (its strictest step, alpha / family), given the
    variance of a difference decomposed in ``comp`` (seed and image noise as observed), for its own
    number of seeds or ``n_seeds`` on the same images. None where it cannot be estimated: one seed
    (training noise unseen) or no disagreement at all."""
    if comp.n_seeds < 2:
        return None
    var, df = comp.variance_df(n_seeds)
    if var <= 0 or not df > 0:
        return None
    level = alpha / max(1, family)
    return 100.0 * (_quantile(1 - level / 2, df) + _quantile(power, df)) * math.sqrt(var)


def seeds_needed(comp: Components, effect: float, family: int = 1, most: int = 100) -> Optional[int]:
    """Fewest seeds (on the same test images) whose minimum detectable effect is at most ``effect``
    points, or None when it cannot be estimated or more than ``most`` would not do (the image
    noise alone may be too large for the test set)."""
    if comp.n_seeds < 2:
        return None
    for s in range(2, most + 1):
        mde = minimum_detectable_effect(comp, family, n_seeds=s)
        if mde is not None and mde <= effect:
            return s
    return None


def discordance(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Fraction of (seed, image) pairs on which exactly one of the two models is right."""
    return float((np.asarray(correct_a, bool) != np.asarray(correct_b, bool)).mean())


LETTERS = string.ascii_lowercase + string.ascii_uppercase


def letter_groups(means: dict[str, float], comparisons: Sequence[Comparison]) -> dict[str, str]:
    """Compact letter display: pipelines that share a letter cannot be told apart; two pipelines
    with no letter in common differ significantly. (A rank from counting significantly better
    pipelines claims an order the tests do not give: A > C significant with A ~ B and B ~ C ranked
    A and B equal and C below, though B and C cannot be told apart.)

    Insert-and-absorb (Piepho 2004): start from one group of all; for each significant pair, split
    every group holding both into one without each; drop groups inside another. Letters go to the
    groups in order of their best mean."""
    names = list(means)
    groups: list[frozenset] = [frozenset(names)]
    pairs = sorted({tuple(sorted((c.a, c.b))) for c in comparisons if c.significant})
    for x, y in pairs:
        split = []
        for g in groups:
            split += [g - {x}, g - {y}] if x in g and y in g else [g]
        unique = list(dict.fromkeys(split))
        groups = [g for g in unique if g and not any(g < h for h in unique)]
    groups.sort(key=lambda g: (-max(means[n] for n in g), sorted(names.index(n) for n in g)))
    if len(groups) > len(LETTERS):
        raise ValueError(f"{len(groups)} groups are more than {len(LETTERS)} letters")
    return {n: "".join(LETTERS[k] for k, g in enumerate(groups) if n in g) for n in names}
