"""The SLURM path, for real: a one-node cluster (tests/slurm/cluster.sh: munge, slurmctld, slurmd,
no accounting) runs a P->Q->D pipeline through the shipped profile with the user edits the README
names, and its models and accuracy equal a local run's for the same seed.

Skipped, with the reason printed, only where SLURM cannot be run: not root, or Debian's slurm-wlm
and munge not installed (.ci/run installs them where apt-get works)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXP = "resnet20_digits"
TARGET = f"results/{EXP}/pqd/eval.json"
MODELS = ["dense/dense.pt", "p/pruned.pt", "pq/qat_int8.pt", "pqd/distilled_int8.pt"]
MISSING = [
    b
    for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
    if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()
]
REASON = (
    f"SLURM cannot run here: {'not root' if os.geteuid() != 0 else 'missing ' + ', '.join(MISSING)}"
    "; apt-get install slurm-wlm munge as root (what .ci/run does)"
)
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or bool(MISSING), reason=REASON)


def user_profile(wd: Path) -> None:
    """The shipped profile with the README's edits for a cluster without accounting: no account,
    the partition, squeue for job status (plus short polling, to keep the test short)."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    del profile["default-resources"]["slurm_account"]
    profile["default-resources"]["slurm_partition"] = "main"
    profile.update(
        {
            "slurm-no-account": True,
            "slurm-status-command": "squeue",
            "slurm-keep-successful-logs": True,
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 2,
        }
    )
    (wd / "profiles/cluster").mkdir()
    (wd / "profiles/cluster/config.yaml").write_text(yaml.safe_dump(profile))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    script = str(ROOT / "tests/slurm/cluster.sh")
    start = subprocess.run(["bash", script, "start", str(d)], capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    yield {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    subprocess.run(["bash", script, "stop", str(d)], timeout=60)


def workflow_copy(dest: Path) -> Path:
    from helpers import TINY_WORKFLOW, copy_workflow

    copy_workflow(dest, TINY_WORKFLOW)
    # no GPU on this node: the one edit a CPU-only cluster needs (README); runtime torch: no export jobs
    (dest / "cluster.yaml").write_text(
        "resources: {train: {gpu: 0, mem_mb: 2000}, eval: {mem_mb: 2000}, "
        "light: {mem_mb: 2000}}\nmeasure: {runtime: torch}\n"
    )
    return dest


def test_a_pipeline_runs_through_slurm_and_matches_a_local_run(cluster, tmp_path):
    import time

    wd = workflow_copy(tmp_path / "slurm")
    user_profile(wd)
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "profiles/cluster",
            TARGET,
            "--configfile",
            "tiny.yaml",
            "cluster.yaml",
        ],
        cwd=wd,
        capture_output=True,
        text=True,
        env=cluster,
        timeout=1200,
    )
    slurm_s = time.perf_counter() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) == 7, out[-3000:]  # prepare_data, dense, p, pq, pqd, deploy, evaluate
    logs = list((wd / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(logs) == 7 and all(any(part.startswith("rule_") for part in p.parts) for p in logs)

    local = workflow_copy(tmp_path / "local")
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-j2", TARGET, "--configfile", "tiny.yaml", "cluster.yaml"],
        cwd=local,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    local_s = time.perf_counter() - t0
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for model in MODELS:
        a, b = (torch.load(d / f"results/{EXP}" / model, weights_only=True)["state_dict"] for d in (wd, local))
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k].detach(), b[k].detach()), (model, k)
    ev = [yaml.safe_load((d / TARGET).read_text()) for d in (wd, local)]
    assert ev[0]["accuracy"] == ev[1]["accuracy"] and ev[0]["form"] == "int8"
    print(
        f"\nSLURM: 7 jobs in {slurm_s:.0f} s; local: {local_s:.0f} s; overhead {(slurm_s - local_s) / 7:.1f} s per job"
    )


def test_a_job_reads_its_slurm_time_limit(cluster):
    """Training jobs stop at an epoch boundary before the job's time limit (pqd.interrupts.job_deadline,
    tested locally in test_resume): on SLURM 22.05, without SLURM_JOB_END_TIME, the limit comes from squeue."""
    import time

    code = "from pqd.interrupts import job_deadline; print(job_deadline())"
    t0 = time.time()
    res = subprocess.run(
        ["srun", "-p", "main", "-t", "5", "-n1", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cluster, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = float(res.stdout.strip().splitlines()[-1])
    assert t0 + 240 < deadline < time.time() + 301, deadline - t0
