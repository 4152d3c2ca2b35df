"""Does pqd's statistics hold the error rates it promises? Simulated experiments with a known truth,
pushed through the functions the summary uses (:mod:`pqd.stats`: ``paired_comparison``,
``with_holm``, ``accuracy_interval``, ``ratio_interval``, ``minimum_detectable_effect``).

    python bench/stats_calibration.py            # the full table (BENCHMARKS.md), a few minutes
    python bench/stats_calibration.py --quick    # fewer experiments, under a minute (run by the tests)

The simulated experiment follows the audit of issue 21: every test image has a difficulty shared by
all pipelines and seeds (a logit drawn from a normal distribution), each (pipeline, seed) training
run shifts the logit by its own training noise (0.3 points of top-1 by default), and each (run,
image) is right or wrong by a coin with that image's probability. Training noise is set in points
at 85% top-1 and kept as the same spread of logits at 95% and 99.7% (fewer points there: a model
that errs on 0.3% of the images cannot vary by 0.3 points both ways); the full run also prints a
stress row with 0.3 points at 99.7%, reported, not a target. A fresh test set is drawn for
every experiment, so the truth is the pipeline's expected top-1 over training runs and images;
with one seed the accuracy interval promises that trained model's expected top-1 only (training
noise unseen), and the speedup interval that seed's speedup.

Printed: false positives of one comparison of truly equal pipelines (p < 0.05, p < 0.01, and what
the summary calls significant, which needs two seeds), the family-wise error of all 15 pairs of 6
equal pipelines under Holm, coverage of the 95% accuracy interval (85% to 99.7% top-1, 360 and
10,000 images, 1 to 5 seeds), coverage of the 95% speedup interval (the true speedup differs by 3%
between seeds, timing rounds autocorrelated), and power at 0.5 and 1 point. The last line:

    calibration: type1_3seeds=<f> fwer15_3seeds=<f> coverage_acc=<f> coverage_ceiling=<f> power05_5seeds=<f>

targets: type1 and fwer15 <= 0.06, both coverages >= 0.93 (the worst cell), power reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pqd import stats  # noqa: E402

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def expected(mu: float, sd: float) -> float:
    """E[sigmoid(mu + sd * Z)], Z standard normal (Gauss-Hermite)."""
    return float(WEIGHTS @ sigmoid(mu + sd * NODES))


class World:
    """Image difficulty ~ N(mu, tau^2) on the logit scale with mean top-1 ``acc``; shifts given in
    points of top-1 are converted to logits with the local slope d top-1 / d logit. Training noise
    is ``seed_sd`` points of top-1 at ``noise_at`` top-1, the same logit spread at other accuracies
    (``noise_at=None``: ``seed_sd`` points at this accuracy too)."""

    def __init__(self, acc: float, tau: float, seed_sd: float, noise_at: float | None = 0.85):
        self.mu, self.tau = self._mu(acc, tau), tau
        self.slope = self._slope(self.mu, tau)
        ref = self.slope if noise_at is None else self._slope(self._mu(noise_at, tau), tau)
        self.seed_sd = seed_sd / 100 / ref  # logits
        self.seed_sd_points = 100 * self.seed_sd * self.slope

    @staticmethod
    def _mu(acc: float, tau: float) -> float:
        lo, hi = -20.0, 20.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expected(mid, tau) < acc else (lo, mid)
        return (lo + hi) / 2

    @staticmethod
    def _slope(mu: float, tau: float) -> float:
        p = sigmoid(mu + tau * NODES)
        return float(WEIGHTS @ (p * (1 - p)))

    def shift(self, points: float) -> float:
        return points / 100 / self.slope

    def draw(self, rng, n_seeds: int, n_images: int, effects_pts: list[float]):
        """Correctness tables of each pipeline, each run's own expected top-1 (%) and the expected
        top-1 (%) over runs."""
        base = self.mu + self.tau * rng.standard_normal(n_images)
        tables, run_truth, truth = [], [], []
        for e in effects_pts:
            delta = self.shift(e) + self.seed_sd * rng.standard_normal(n_seeds)
            tables.append(rng.random((n_seeds, n_images)) < sigmoid(base[None, :] + delta[:, None]))
            run_truth.append([100 * expected(self.mu + d, self.tau) for d in delta])
            truth.append(100 * expected(self.mu + self.shift(e), float(np.hypot(self.tau, self.seed_sd))))
        return tables, run_truth, truth


def null_rates(world: World, rng, reps: int, n_seeds: int, n_images: int) -> dict:
    p, sig, disc = [], 0, []
    for _ in range(reps):
        (a, b), _, _ = world.draw(rng, n_seeds, n_images, [0.0, 0.0])
        c = stats.with_holm([stats.paired_comparison("a", "b", a, b)])[0]
        p.append(c.p_value)
        sig += c.significant
        disc.append(stats.discordance(a, b))
    p = np.array(p)
    return {
        "p<0.05": float((p < 0.05).mean()),
        "p<0.01": float((p < 0.01).mean()),
        "p<0.001": float((p < 0.001).mean()),
        "called significant": sig / reps,
        "disagreement": float(np.mean(disc)),
    }


def fwer(world: World, rng, reps: int, n_seeds: int, n_images: int, n_pipes: int = 6) -> float:
    hits = 0
    for _ in range(reps):
        tables, _, _ = world.draw(rng, n_seeds, n_images, [0.0] * n_pipes)
        comps = stats.with_holm(
            [
                stats.paired_comparison(str(i), str(j), tables[i], tables[j])
                for i in range(n_pipes)
                for j in range(i + 1, n_pipes)
            ]
        )
        hits += any(c.significant for c in comps)
    return hits / reps


def power(world: World, rng, reps: int, n_seeds: int, n_images: int, effect: float) -> float:
    hits = 0
    for _ in range(reps):
        (a, b), _, _ = world.draw(rng, n_seeds, n_images, [effect, 0.0])
        c = stats.with_holm([stats.paired_comparison("a", "b", a, b)])[0]
        hits += c.significant and c.diff > 0
    return hits / reps


def accuracy_coverage(world: World, rng, reps: int, n_seeds: int, n_images: int) -> float:
    hits = 0
    for _ in range(reps):
        (a,), (runs,), (truth,) = world.draw(rng, n_seeds, n_images, [0.0])
        target = runs[0] if n_seeds == 1 else truth
        iv = stats.accuracy_interval(a)
        hits += iv.low <= target <= iv.high
    return hits / reps


def speedup_coverage(
    rng,
    reps: int,
    n_seeds: int,
    rounds: int = 40,
    speedup: float = 1.8,
    seed_sd: float = 0.03,
    phi: float = 0.6,
    noise: float = 0.08,
) -> float:
    """Per-round log ratio = the seed's log speedup + AR(1) timing noise (neighbouring rounds alike)."""
    hits = 0
    for _ in range(reps):
        per_seed = np.log(speedup) + seed_sd * rng.standard_normal(n_seeds)
        dense, model = [], []
        for s in range(n_seeds):
            e = np.empty(rounds)
            e[0] = rng.normal(0, noise / np.sqrt(1 - phi**2))
            for r in range(1, rounds):
                e[r] = phi * e[r - 1] + rng.normal(0, noise)
            m = 1.0 + 0.3 * rng.random(rounds)  # the machine's speed of the round, cancels in the ratio
            model.append(m)
            dense.append(m * np.exp(per_seed[s] + e))
        iv = stats.ratio_interval(dense, model)
        target = float(np.exp(per_seed[0])) if n_seeds == 1 else speedup
        hits += iv.low <= target <= iv.high
    return hits / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer simulated experiments (CI)")
    ap.add_argument("--seed-noise", type=float, default=0.3, help="training noise, points of top-1 (sd)")
    ap.add_argument("--tau", type=float, default=2.5, help="spread of image difficulty (logits)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    k = 1 if a.quick else 5
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {'quick' if a.quick else 'full'} run, training noise "
        f"{a.seed_noise} points, image difficulty sd {a.tau} logits, numpy seed {a.seed}\n"
    )

    w85 = World(0.85, a.tau, a.seed_noise)
    print("## Truly equal pipelines, 85% top-1, 10,000 images: one comparison\n")
    print("| seeds | experiments | p < 0.05 | p < 0.01 | p < 0.001 | called significant | disagreement |")
    print("|---|---|---|---|---|---|---|")
    type1 = {}
    for s in (3,) if a.quick else (1, 2, 3, 5):
        reps = 2000 * k
        r = null_rates(w85, rng, reps, s, 10000)
        type1[s] = r["called significant"]
        print(
            f"| {s} | {reps} | {r['p<0.05']:.3f} | {r['p<0.01']:.4f} | {r['p<0.001']:.4f} | "
            f"{r['called significant']:.3f} | {r['disagreement']:.3f} |",
            flush=True,
        )

    print("\n## Family-wise error: 15 pairs of 6 equal pipelines, Holm, 85%, 10,000 images\n")
    print("| seeds | experiments | any pair called significant |\n|---|---|---|")
    fw = {}
    for s in (3,) if a.quick else (3, 5):
        reps = 600 * k
        fw[s] = fwer(w85, rng, reps, s, 10000)
        print(f"| {s} | {reps} | {fw[s]:.3f} |", flush=True)

    print("\n## Coverage of the 95% top-1 interval (one seed: of that model's top-1; more: of the expected)\n")
    print(
        "| true top-1 | training noise (points) | images | seeds | experiments | coverage |\n|---|---|---|---|---|---|"
    )
    cov = {"acc": [], "ceiling": []}
    for acc in (0.85, 0.95, 0.997):
        w = World(acc, a.tau, a.seed_noise)
        for n in (360, 10000):
            for s in (1, 3) if a.quick else (1, 2, 3, 5):
                reps = 1500 if a.quick else 3000
                c = accuracy_coverage(w, rng, reps, s, n)
                cov["ceiling" if acc > 0.99 else "acc"].append(c)
                print(f"| {100 * acc:.1f}% | {w.seed_sd_points:.3f} | {n} | {s} | {reps} | {c:.3f} |", flush=True)
    if not a.quick:  # stress: as many points of training noise at the ceiling as at 85% (reported, not a target)
        w = World(0.997, a.tau, a.seed_noise, noise_at=None)
        for n in (360, 10000):
            for s in (2, 3, 5):
                c = accuracy_coverage(w, rng, 600 * k, s, n)
                print(f"| 99.7% (stress) | {w.seed_sd_points:.3f} | {n} | {s} | {600 * k} | {c:.3f} |", flush=True)

    print("\n## Coverage of the 95% speedup interval (true 1.8x, 3% seed-to-seed, AR(1) rounds phi 0.6, 40 rounds)\n")
    print("| seeds | experiments | coverage |\n|---|---|---|")
    for s in (1, 3) if a.quick else (1, 2, 3, 5):
        reps = 1000 * k
        print(f"| {s} | {reps} | {speedup_coverage(rng, reps, s):.3f} |", flush=True)

    print("\n## Power: one comparison, 85%, 10,000 images (significant and the right sign)\n")
    print(
        "| true difference | seeds | experiments | power | MDE the summary would print (median) |\n|---|---|---|---|---|"
    )
    pw = {}
    for effect in (0.5,) if a.quick else (0.5, 1.0):
        for s in (5,) if a.quick else (3, 5, 10):
            reps = 400 * k
            pw[(effect, s)] = power(w85, rng, reps, s, 10000, effect)
            mdes = []
            for _ in range(20):
                (x, y), _, _ = w85.draw(rng, s, 10000, [effect, 0.0])
                m = stats.minimum_detectable_effect(stats.paired_comparison("a", "b", x, y).components)
                mdes.append(np.nan if m is None else m)
            print(f"| {effect} | {s} | {reps} | {pw[(effect, s)]:.3f} | {np.nanmedian(mdes):.2f} |", flush=True)

    print(f"\n({time.time() - t0:.0f} s)")
    print(
        f"calibration: type1_3seeds={type1[3]:.4f} fwer15_3seeds={fw[3]:.4f} coverage_acc={min(cov['acc']):.4f} "
        f"coverage_ceiling={min(cov['ceiling']):.4f} power05_5seeds={pw[(0.5, 5)]:.4f}"
    )


if __name__ == "__main__":
    main()
