"""Workflow and CLI conventions: lint-clean rules, one-line CLI errors, deterministic stage jobs."""

from __future__ import annotations

import subprocess
import sys

import torch
from helpers import ALL_STAGES_TARGETS, TINY_ALL_STAGES, copy_workflow, stage_params

from pqd.checkpoint import load_checkpoint
from pqd.runner import run_stage


def test_snakemake_lint_is_clean(tmp_path):
    wd = copy_workflow(tmp_path, TINY_ALL_STAGES)
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=wd, capture_output=True, text=True, timeout=300
    )
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr, res.stdout[-3000:]


def test_each_subcommand_requires_its_own_arguments_in_one_line():
    res = subprocess.run([sys.executable, "-m", "pqd", "stage", "--data", "x.pt"], capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "pqd: error: python -m pqd stage: the following arguments are required: --params, --output"
    )
    res = subprocess.run(
        [sys.executable, "-m", "pqd", "stage", "--params", "{not json", "--data", "x.pt", "--output", "y.pt"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "pqd: error: job parameters are not valid JSON (Expecting property name enclosed in double quotes); "
        "pass the rule's params unchanged"
    ]


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


def test_the_shipped_slurm_profile_dry_runs_and_gives_every_training_job_a_gpu(tmp_path):
    """No cluster needed for a dry run. Every stage rule (from its spec) is a training job with a
    GPU, evaluation and latency are not; latency asks for its own node. The profile names no rule.
    (A dry run counts threads against one core, so thread counts are not checked here.)"""
    import re

    import yaml

    from pqd.pipeline import all_stage_specs

    wd = copy_workflow(tmp_path, TINY_ALL_STAGES)
    (wd / "eight.yaml").write_text("threads: {train: 8, eval: 4}\nmeasure: {runtime: openvino}\n")
    profile = yaml.safe_load((wd / "profiles/slurm/config.yaml").read_text())
    assert "set-resources" not in profile and "set-threads" not in profile and "config" not in profile
    targets = [
        *ALL_STAGES_TARGETS,
        "results/resnet18_digits/pqd/report.json",
        "results/resnet20_digits/f/finetuned.pt",
        "results/resnet20_digits/ctl-pq/finetuned.pt",
    ]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "profiles/slurm",
            "-n",
            *targets,
            "--configfile",
            "tiny.yaml",
            "eight.yaml",
        ],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    blocks = {m.group(1): m.group(0) for m in re.finditer(r"\nrule (\w+):.*?(?=\n\n|\Z)", out, re.S)}
    for rule in [spec.rule for spec in all_stage_specs()] + ["equal_budget_control"]:
        assert "gpu=1" in blocks[rule] and "mem_mb=8000" in blocks[rule], rule
    assert "--exclusive" in blocks["latency"] and "gpu=" not in blocks["latency"]
    assert "gpu=" not in blocks["evaluate"] and "slurm_account=your_account" in blocks["evaluate"]
