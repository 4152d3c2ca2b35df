"""INT8 against the dense baselines of its runtime, from the workflow's own latency jobs: dense at
forced f32 (what pqd compared with until issue 23) and dense as the runtime runs it by default (bf16
on CPUs with AVX-512 BF16 or AMX), per backbone and thread count (BENCHMARKS.md section 12).

    python bench/baselines.py                  # config/examples/baselines.yaml at 1 and 2 threads
    python bench/baselines.py --no-run         # only read what the runs wrote

Runs the config's ``q`` pipelines once per thread count (changing ``measure.threads`` reruns only the
latency jobs) and prints, per backbone and thread count, the medians of the three forms timed in the
same rounds of one latency job and the INT8 model's speedup over each, with a 95% CI over rounds
(:func:`pqd.stats.ratio_interval`; one seed: timing noise only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import header, overlay, row, snakemake, stamp

from pqd import stats
from pqd.results import configured

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config/examples/baselines.yaml"


def run(threads: int) -> None:
    cfg = configured([CONFIG])
    targets = [f"{cfg['results']}/{e}/q/report.json" for e in cfg["experiments"]]
    snakemake(targets, [CONFIG, overlay({"measure": {"threads": threads}})])


def rows(threads: int) -> list[str]:
    cfg = configured([CONFIG])
    out = []
    for exp in cfg["experiments"]:
        lat = json.loads((ROOT / cfg["results"] / exp / "q/latency.json").read_text())
        if lat["threads"] != threads:
            raise SystemExit(f"{exp}'s latency.json was timed at {lat['threads']} threads; run without --no-run")
        model = [lat["model"]["round_ms"]]
        f32 = stats.ratio_interval([lat["dense_runtime"]["round_ms"]], model)
        default = stats.ratio_interval([lat["dense_default"]["round_ms"]], model)
        out.append(
            row(
                [exp.split("_")[0], threads, f"{lat['dense_runtime']['median_ms']:.3f}"]
                + [f"{lat['dense_default']['median_ms']:.3f} ({lat['inference_precision']['dense_default']})"]
                + [f"{lat['model']['median_ms']:.3f}", f"{f32.mean:.2f}x [{f32.low:.2f}, {f32.high:.2f}]"]
                + [f"{default.mean:.2f}x [{default.low:.2f}, {default.high:.2f}]", lat["baseline"]]
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--no-run", action="store_true")
    a = ap.parse_args()
    print(stamp("batch 1, 32 px, full width, OpenVINO; one latency job per row (40 rounds)"))
    print(
        header(
            ["backbone", "threads", "dense f32 ms", "dense default ms", "INT8 ms", "INT8 vs f32 [95% CI]"]
            + ["INT8 vs default [95% CI]", "fastest untrained baseline"]
        )
    )
    for t in a.threads:
        if not a.no_run:
            run(t)
        print("\n".join(rows(t)), flush=True)


if __name__ == "__main__":
    main()
