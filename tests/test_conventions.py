"""Workflow and CLI conventions: lint-clean rules, one-line CLI errors, deterministic stage jobs."""

from __future__ import annotations

import subprocess
import sys

import torch
from helpers import stage_params
from test_codehash import copy_workflow

from pqd.checkpoint import load_checkpoint
from pqd.runner import run_stage


def test_snakemake_lint_is_clean(tmp_path):
    wd = copy_workflow(tmp_path)
    res = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=wd, capture_output=True, text=True,
                         timeout=300)
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr, res.stdout[-3000:]


def test_each_subcommand_requires_its_own_arguments_in_one_line():
    res = subprocess.run([sys.executable, "-m", "pqd", "stage", "--data", "x.pt"], capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pqd: error: python -m pqd stage: the following arguments are "
                                                   "required: --params, --output")
    res = subprocess.run([sys.executable, "-m", "pqd", "stage", "--params", "{not json", "--data", "x.pt",
                          "--output", "y.pt"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "pqd: error: job parameters are not valid JSON (Expecting property name enclosed in double quotes); "
        "pass the rule's params unchanged"]


def test_a_stage_job_is_bit_identical_when_rerun(tmp_path, digits_cache):
    """Same params, same machine, same threads: the same weights, for a starting stage (dense) and
    one that loads its input (q), through the one runner every stage uses."""
    dense = stage_params("", "resnet20", 0.25, epochs=1)
    q = stage_params("q", "resnet20", 0.25, epochs=1)
    for run in ("a", "b"):
        run_stage(dense, digits_cache, str(tmp_path / f"dense_{run}.pt"))
        run_stage(q, digits_cache, str(tmp_path / f"q_{run}.pt"), str(tmp_path / "dense_a.pt"))
    for name in ("dense", "q"):
        a, b = (load_checkpoint(tmp_path / f"{name}_{r}.pt")["state_dict"] for r in "ab")
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                ta, tb = (t.int_repr() if t.is_quantized else t for t in (a[k], b[k]))
                assert torch.equal(ta, tb), (name, k)
