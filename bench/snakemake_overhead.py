"""Snakemake's own cost on a large grid: dry-run time, no-op rerun time, jobs after one edit; and
what every job pays to start Python with what it imports.

    python bench/snakemake_overhead.py            # 3 backbones x 2 datasets x 16 pipelines
    python bench/snakemake_overhead.py --smoke    # 1 x 1 x 3, for CI

Runs in a temporary copy of the workflow. The 'built' state is faked without training: a first
`snakemake --touch` records each job's metadata (params, code) as a real run would, every output
the dry run plans is then created empty, and a second `--touch` orders their times along the DAG. That is all a no-op rerun and the rerun decision look at.

Per-job start-up: each job is a ``python3 -m pqd <command>`` process, which imports torch and the
modules its command needs before doing any work; the median wall time of importing them in a fresh
interpreter (``--startup-runs`` times each, alternating) is what a job costs before its first step.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from common import snakemake, stamp

ROOT = Path(__file__).resolve().parent.parent


def smk(wd: Path, flags: list[str], configs: list[str]) -> tuple[float, str]:
    """Wall seconds and output of one Snakemake run in the grid's copy of the workflow."""
    t0 = time.perf_counter()
    res = snakemake([], [Path(c) for c in configs], flags=flags, cwd=wd, capture=True)
    return time.perf_counter() - t0, res.stdout + res.stderr


# what each kind of job imports before its work: a stage, a deploy/evaluate/latency job, a report
STARTUP = {
    "python alone": "pass",
    "stage job (pqd.runner)": "import pqd.runner",
    "measurement job (pqd.measure and OpenVINO)": "import pqd.measure, pqd.runtimes; pqd.runtimes.import_openvino()",
    "report job (pqd.report)": "import pqd.report",
}


def startup(runs: int) -> dict[str, float]:
    """Median wall seconds of a fresh interpreter importing each job kind's modules, alternating kinds."""
    times: dict[str, list[float]] = {k: [] for k in STARTUP}
    for _ in range(runs):
        for kind, code in STARTUP.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
            times[kind].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in times.items()}


def jobs(out: str) -> int:
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--startup-runs", type=int, default=10)
    a = ap.parse_args()
    if a.smoke:
        a.startup_runs = 1
    backbones, datasets = (
        (["resnet20"], ["digits"]) if a.smoke else (["resnet20", "vgg16", "resnet18"], ["digits", "c10"])
    )
    pipelines = ["dense", "pqd", "pdq"] if a.smoke else None
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        for item in ("Snakefile", "rules", "config", "profiles", "report", "pqd", "envs"):
            src = ROOT / item
            (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / item)
        exps = [f"{b}_{d}" for b in backbones for d in datasets]
        pipes = pipelines or [
            "dense",
            "p",
            "q",
            "d",
            "pq",
            "pd",
            "qp",
            "qd",
            "dp",
            "dq",
            "pqd",
            "pdq",
            "qpd",
            "qdp",
            "dpq",
            "dqp",
        ]
        (wd / "grid.yaml").write_text(f"experiments: {exps}\npipelines: {pipes}\n")
        (wd / "edit.yaml").write_text("stages: {d: {temperature: 2.0}}\n")
        dry, out = smk(wd, ["-n"], ["grid.yaml"])
        total = jobs(out)
        smk(wd, ["--touch"], ["grid.yaml"])  # records every job's params and code
        for line in out.splitlines():
            if line.strip().startswith("output:"):
                for f in line.split(":", 1)[1].split(","):
                    (wd / f.strip()).parent.mkdir(parents=True, exist_ok=True)
                    (wd / f.strip()).touch()
        smk(wd, ["--touch"], ["grid.yaml"])  # orders the new files' times along the DAG
        noop, out = smk(wd, [], ["grid.yaml"])
        assert "Nothing to be done" in out, out[-500:]
        edit, out = smk(wd, ["-n"], ["grid.yaml", "edit.yaml"])
        after_edit = jobs(out)
        assert after_edit > 0, "the edit should rerun the distillation jobs"
    start = startup(a.startup_runs)
    print(stamp(f"{len(exps)} experiments x {len(pipes)} pipelines"))
    print("| measure | value |\n|---|---|")
    print(f"| jobs in the grid | {total} |")
    print(f"| dry-run, nothing built | {dry:.1f} s |")
    print(f"| no-op rerun, all built | {noop:.1f} s |")
    print(f"| dry-run after editing stages.d.temperature | {edit:.1f} s |")
    print(f"| jobs to rerun after that edit | {after_edit} of {total} |")
    for kind, seconds in start.items():
        print(f"| start-up of a {kind}, median of {a.startup_runs} | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
