"""The research claims pqd builds on, tested on one experiment's replicates (BENCHMARKS.md section 2).

    python bench/claims.py results_c10jpg_stats resnet20_c10jpg
    python bench/claims.py results resnet20_digits --config config/config.yaml my.yaml   # the seeds of another run

Reads what the workflow wrote (``summary.csv`` and ``pairwise.csv`` of the experiment, and every
replicate's ``report.json`` + ``predictions.npz``) and prints, claim by claim, the figures and a
verdict. Every accuracy comparison is the summary's paired test over seeds and test images
(:mod:`pqd.stats`); a claim's own family of comparisons is Holm-corrected. The claims:

1. INT8 QAT gives the dominant runtime benefit: every pipeline with ``q`` is faster than every
   pipeline without it (95% CIs of the same-runtime speedup do not overlap).
2. Unstructured pruning alone gives no CPU speedup: ``p``'s same-runtime speedup CI lies below
   1.10x (no speedup of practical size; a 10% margin, since a narrow CI can exclude 1.00x by a
   hair of drift).
3. KD applied last recovers accuracy: the model after the last ``d`` is significantly more
   accurate than the same pipeline before it (``pqd`` against ``pq``, ``qpd`` against ``qp``).
4. P->Q->D is the best order: ``pqd`` significantly more accurate than each other order.
5. Any pipeline beats its equal-budget control (significantly, on top-1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pqd import stats
from pqd.report import load_correct
from pqd.results import configured, replicate_paths

ROOT = Path(__file__).resolve().parents[1]

MARGIN = 1.10


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("experiment")
    ap.add_argument(
        "--config",
        nargs="+",
        type=Path,
        default=[ROOT / "config/config.yaml", ROOT / "config/examples/c10jpg_stats.yaml"],
        help="the run's config files, in order: their seeds pick the replicates read (default: section 2's run)",
    )
    a = ap.parse_args()
    root = Path(a.results) / a.experiment
    df = pd.read_csv(root / "summary.csv").set_index("pipeline")
    pw = pd.read_csv(root / "pairwise.csv")
    seeds = configured(a.config)["seeds"]
    reps = replicate_paths(Path(a.results), a.experiment, seeds)
    correct = {p: np.stack([load_correct(str(by_seed[s])) for s in seeds]) for p, by_seed in reps.items()}
    n_images = next(iter(correct.values())).shape[1]
    plain = [p for p in df.index if p != "dense" and not p.startswith("ctl-")]

    def sp(p):
        r = df.loc[p]
        return (
            f"{r.speedup_same_runtime_mean:.2f}x [{r.speedup_same_runtime_ci95_low:.2f}, "
            f"{r.speedup_same_runtime_ci95_high:.2f}]"
        )

    print(f"# {a.experiment}: {len(seeds)} seeds x {n_images} test images\n")
    with_q = [p for p in plain if "q" in p]
    without_q = [p for p in df.index if p != "dense" and "q" not in p]
    lo_q = min((df.loc[p, "speedup_same_runtime_ci95_low"] for p in with_q), default=np.nan)
    hi_no = max((df.loc[p, "speedup_same_runtime_ci95_high"] for p in without_q), default=np.nan)
    print("1. INT8 QAT gives the dominant runtime benefit (same-runtime speedup vs dense FP32, 95% CI):")
    for p in with_q + without_q:
        print(f"   {p:8s} {sp(p)}")
    print(
        f"   -> {'HOLDS' if lo_q > hi_no else 'NOT SHOWN'}: lowest CI bound with q {lo_q:.2f}x, "
        f"highest without q {hi_no:.2f}x\n"
    )

    if "p" in df.index:
        hi_p = df.loc["p", "speedup_same_runtime_ci95_high"]
        print(
            f"2. Unstructured pruning alone gives no CPU speedup: p {sp('p')}, sparsity "
            f"{df.loc['p', 'weight_sparsity']:.3f}"
        )
        print(
            f"   -> {'HOLDS' if hi_p < MARGIN else 'NOT SHOWN'} (upper CI bound {hi_p:.2f}x against the "
            f"{MARGIN:.2f}x margin)\n"
        )
    else:
        print("2. Unstructured pruning alone: not tested (no pipeline p in this summary)\n")

    pairs = [(p, p[:-1]) for p in plain if p.endswith("d") and len(p) > 1 and p[:-1] in correct]
    kd = stats.with_holm([stats.paired_comparison(x, y, correct[x], correct[y]) for x, y in pairs])
    print("3. KD applied last recovers accuracy (after d - before d, points, Holm over these):")
    for c in kd:
        print(
            f"   {c.a} - {c.b}: {c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}], p_holm {c.p_holm:.3g}"
            f"{'  significant' if c.significant else ''}"
        )
        dense_gap = stats.paired_comparison(c.b, "dense", correct[c.b], correct["dense"])
        print(f"      (before d vs dense: {dense_gap.diff:+.2f} [{dense_gap.low:+.2f}, {dense_gap.high:+.2f}])")
    holds = bool(kd) and all(c.significant and c.diff > 0 for c in kd)
    print(f"   -> {'HOLDS' if holds else 'NOT SHOWN'}\n")

    orders = pw[(pw["why"] == "order") & ((pw["a"] == "pqd") | (pw["b"] == "pqd"))]
    print("4. P->Q->D is the best order (pairwise.csv, Holm over all the summary's asked comparisons):")
    wins = 0
    for r in orders.itertuples(index=False):
        other, diff = (r.b, r.diff) if r.a == "pqd" else (r.a, -r.diff)
        low, high = (r.diff_ci95_low, r.diff_ci95_high) if r.a == "pqd" else (-r.diff_ci95_high, -r.diff_ci95_low)
        wins += bool(r.significant and diff > 0)
        print(f"   pqd - {other}: {diff:+.2f} [{low:+.2f}, {high:+.2f}], p_holm {r.p_holm:.3g}")
    groups = {p: df.loc[p, "group"] for p in plain if len(p) == 3}
    print(f"   letter groups among all pipelines (a shared letter: cannot be told apart): {groups}")
    print(
        f"   -> {'HOLDS' if len(orders) and wins == len(orders) else 'NOT SHOWN'} "
        f"(pqd significantly better than {wins} of {len(orders)} other orders)\n"
    )

    ctl = pw[pw["why"] == "vs equal-budget control"]
    better = ctl[ctl["significant"] & (ctl["diff"] > 0)]
    worse = ctl[ctl["significant"] & (ctl["diff"] < 0)]
    print("5. A pipeline beats its equal-budget control (pairwise.csv):")
    for r in ctl.itertuples(index=False):
        print(
            f"   {r.a} - {r.b}: {r.diff:+.2f} [{r.diff_ci95_low:+.2f}, {r.diff_ci95_high:+.2f}], p_holm {r.p_holm:.3g}"
        )
    print(
        f"   -> {len(better)} of {len(ctl)} significantly better, {len(worse)} significantly worse, "
        f"{len(ctl) - len(better) - len(worse)} not told apart"
    )


if __name__ == "__main__":
    main()
