"""Latency budget against MACs budget for structured pruning, and uniform against per-layer
(global) allocation at one latency target (BENCHMARKS.md section 4).

    python bench/latency_budget.py [--keep 0.6] [--no-run]

Runs ``config/examples/c10jpg_latency.yaml`` once per variant, each in its own results directory
(``results_c10jpg_latency/<variant>``): ``macs`` (``macs_keep``), ``latency`` (``latency_keep``,
uniform) and ``latency_global`` (``latency_keep``, ``allocation: global``), all at the same
fraction. Then prints, per variant, what the budget bought: the MACs and the *measured* latency
kept by pruning (the deployed INT8 model against the unpruned model entering ``s``, timed in the
same rounds of the pipeline's latency job, mean over seeds), the latency the curve predicted,
the speedup over dense FP32 in the same runtime, and top-1 with its 95% CI; and the paired
top-1 differences between variants (paired test over seeds and test images, Holm-corrected).
``--no-run`` only reads what the runs wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import overlay, snakemake

from pqd import stats
from pqd.errors import PqdError
from pqd.report import load_correct
from pqd.results import configured, replicate_reports

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config/examples/c10jpg_latency.yaml"
EXP, PIPELINE = "resnet20_c10jpg", "sq"


def variants(keep: float) -> dict[str, dict]:
    return {
        "macs": {"target": "macs", "macs_keep": keep, "allocation": "uniform"},
        "latency": {"target": "latency", "latency_keep": keep, "allocation": "uniform"},
        "latency_global": {"target": "latency", "latency_keep": keep, "allocation": "global"},
    }


def run(name: str, s: dict, results: Path) -> None:
    over = overlay({"results": f"{results}/{name}", "stages": {"s": s}})
    snakemake([f"{results}/{name}/{EXP}/summary.csv"], [CONFIG, over])


def reports(results: Path) -> list[dict]:
    """The pipeline's report in each seed's replicate that this script's config runs."""
    return replicate_reports(results, EXP, PIPELINE, configured([ROOT / "config/config.yaml", CONFIG])["seeds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=float, default=0.6, help="the MACs / latency fraction every variant keeps")
    ap.add_argument("--results", default="results_c10jpg_latency")
    ap.add_argument("--no-run", action="store_true")
    a = ap.parse_args()
    vs = variants(a.keep)
    if not a.no_run:
        for name, s in vs.items():
            run(name, s, a.results)
    results = ROOT / a.results
    rows, correct = [], {}
    for name in vs:
        try:
            reps = reports(results / name)
        except PqdError as e:
            raise SystemExit(f"{e}; run without --no-run first") from None
        correct[name] = np.stack([load_correct(r["_path"]) for r in reps])
        summary = pd.read_csv(results / name / EXP / "summary.csv").set_index("pipeline")
        lt = [r["latency_target"] for r in reps]
        st = [r["stages"][-2]["structured"] for r in reps]  # s, before q
        rows.append(
            {
                "variant": name,
                "budget": ", ".join(f"{k} {v:g}" for k, v in lt[0]["target"].items()),
                "allocation": st[0]["allocation"],
                "channel_ratio": np.mean([x["channel_ratio"] for x in st]),
                "macs_kept": np.mean([x["macs_kept"] for x in st]),
                "latency_kept_predicted": lt[0]["predicted_keep"],
                "latency_kept_measured": np.mean([x["measured_keep"] for x in lt]),
                "latency_kept_seed_range": f"{min(x['measured_keep'] for x in lt):.3f}-{max(x['measured_keep'] for x in lt):.3f}",
                "speedup_vs_dense_same_runtime": summary.loc[PIPELINE, "speedup_same_runtime_mean"],
                # against the fastest untrained dense form the runtime offers on this CPU (bf16 where it has it)
                "speedup_vs_baseline": summary.loc[PIPELINE, "speedup_vs_baseline_mean"],
                "top1": summary.loc[PIPELINE, "accuracy_mean"],
                "top1_ci95": f"[{summary.loc[PIPELINE, 'accuracy_ci95_low']:.2f}, {summary.loc[PIPELINE, 'accuracy_ci95_high']:.2f}]",
                "dense_top1": summary.loc["dense", "accuracy_mean"],
                "seeds": len(reps),
            }
        )
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False, floatfmt=".3f"))
    n_seeds, n_images = next(iter(correct.values())).shape
    pairs = [("latency", "macs"), ("latency_global", "latency"), ("latency_global", "macs")]
    comps = stats.with_holm([stats.paired_comparison(a, b, correct[a], correct[b]) for a, b in pairs])
    print("\nPaired top-1 differences (points; paired test over seeds and test images, Holm over these 3):")
    for c in comps:
        verdict = (
            ("a better" if c.diff > 0 else "b better")
            if c.significant
            else "no detectable difference"
            if c.judged
            else "not judged (1 seed)"
        )
        print(
            f"  {c.a} - {c.b}: {c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}], p={c.p_value:.3g}, "
            f"p_holm={c.p_holm:.3g}: {verdict}"
        )
    first = reports(results / "latency")[0]["system"]
    print(f"\nCPU: {first['cpu']}, ISA {' '.join(first['isa'])}; {n_seeds} seeds x {n_images} test images")


if __name__ == "__main__":
    main()
