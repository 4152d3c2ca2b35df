"""Rerun tracking derived from imports (pqd/codehash.py), and the one-module-one-entry stage contract.

The workflow tests run a real tiny grid that uses every registered stage, then edit one source
file at a time and ask Snakemake (dry run) which jobs' params changed: exactly the jobs whose
code imports the edited file, and nothing else."""

from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pytest
from helpers import ALL_STAGES_TARGETS, TINY_ALL_STAGES, copy_workflow, smk

from pqd import codehash
from pqd.pipeline import STAGES, all_stage_specs

ROOT = Path(__file__).resolve().parent.parent
EXP = "resnet18_digits"
R = f"results/{EXP}"
TARGETS = ALL_STAGES_TARGETS  # every registered stage letter appears in these targets (checked below)


def params_changed(wd: Path) -> collections.Counter:
    """Rules (with job counts) whose params changed since their last run: Snakemake's own
    per-output status (``--summary``), so a job counts even when an upstream job also reruns."""
    out = smk(wd, "--summary", *TARGETS).stdout
    changed = collections.Counter()
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and cols[4] == "params changed":
            changed[cols[2]] += 1
    return changed


def test_the_targets_cover_every_registered_stage():
    letters = set("".join(t.split("/")[2] for t in TARGETS))
    assert letters == set(STAGES)


def test_stage_modules_import_core_only_never_another_stage_and_measurement_imports_no_stage():
    for spec in all_stage_specs():
        path = codehash.module_file(spec.module)
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith("pqd.stages") or m == "pqd.runner"}, spec.module
    for entry in ("pqd.measure", "pqd.runtimes", "pqd.report", "pqd.model_io", "pqd.data", "pqd.runner"):
        assert not [m for m in codehash.closure((entry,)) if m.startswith("pqd.stages.")], entry


def test_closure_follows_imports_and_the_job_audit_catches_an_untracked_module():
    distill = codehash.closure(("pqd.runner", "pqd.stages.distill"))
    prune = codehash.closure(("pqd.runner", "pqd.stages.prune"))
    assert "pqd.losses" in distill and "pqd.losses" not in prune
    assert {"pqd.masks", "pqd.qat", "pqd.train", "pqd.model_io", "pqd.cli", "pqd.params"} <= set(prune)
    assert codehash.untracked(["pqd.runner", "pqd.losses", "json"], ["pqd.runner", "pqd.stages.prune"]) == [
        "pqd.losses"
    ]
    assert codehash.code_hash(["pqd.runner", "pqd.stages.prune"]) != codehash.code_hash(
        ["pqd.runner", "pqd.stages.distill"]
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    wd = copy_workflow(tmp_path_factory.mktemp("codehash"), TINY_ALL_STAGES)
    smk(wd, *TARGETS)
    assert params_changed(wd) == {}
    return wd


TRAIN = {
    "dense",
    "stage_prune",
    "stage_qat",
    "stage_distill",
    "stage_structured",
    "stage_lowrank",
    "stage_pqk",
    "stage_epsd",
    "stage_finetune",
    "stage_depth",
}
# One line per output file of the rules in TARGETS: stage_qat has two jobs (pq and eq), evaluate two
# outputs (eval.json, predictions.npz).
JOBS = {"stage_qat": 2, "evaluate": 2}
EXPECTED = {
    # each stage module: that stage's jobs only
    **{codehash.module_file(s.module).relative_to(ROOT).as_posix(): {s.rule} for s in all_stage_specs()},
    # core modules: the stages whose code imports them
    "pqd/losses.py": {"stage_distill", "stage_structured", "stage_pqk", "stage_epsd", "stage_depth"},
    "pqd/blocks.py": TRAIN | {"deploy", "evaluate"},  # model_io -> arch -> blocks: every job that loads a model
    "pqd/channels.py": {"stage_structured"},
    "pqd/macs.py": {"stage_structured", "stage_depth", "deploy", "evaluate"},
    "pqd/runtimes.py": {"deploy", "evaluate"},
    # reading a latency target is the stage's; measuring the curve is the curve job's (none here)
    "pqd/latency_budget.py": {"stage_structured"},
    "pqd/latency_curve.py": set(),
    "pqd/report.py": set(),
    "pqd/masks.py": TRAIN | {"deploy", "evaluate"},
    "pqd/models/vit.py": set(),
}


@pytest.mark.parametrize("edited", sorted(EXPECTED))
def test_editing_a_module_reruns_exactly_the_jobs_whose_code_imports_it(built: Path, edited: str):
    path = built / edited
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        changed = params_changed(built)
    finally:
        path.write_text(original)
    assert changed == collections.Counter({rule: JOBS.get(rule, 1) for rule in EXPECTED[edited]})
    assert params_changed(built) == {}


TOY_MODULE = '''"""A toy stage for the test: scales the classifier, trains with cross-entropy."""

import torch


def run(model, ctx):
    with torch.no_grad():
        list(model.parameters())[-2].mul_(ctx.settings["scale"])
    ctx.fit(model, lr=ctx.settings["lr"])
    ctx.record["toy"] = {"scale": ctx.settings["scale"]}
    return model
'''
TOY_ENTRY = """
STAGES.add("t", StageSpec("t", "toy", "toyed", "pqd.stages.toy", record=("toy",), epochs={"quick": 1, "paper": 1},
                          settings={"lr": _lr(0.01), "scale": {"type": "number", "default": 1.0}}))
"""


def test_a_new_stage_is_one_module_and_one_entry(tmp_path: Path):
    """Rule, closed schema block with defaults, epochs, cluster resources (a GPU for a training
    stage) and the report's record: all from the one StageSpec entry."""
    wd = copy_workflow(tmp_path, TINY_ALL_STAGES)
    (wd / "pqd/stages/toy.py").write_text(TOY_MODULE)
    with open(wd / "pqd/pipeline.py", "a") as f:
        f.write(TOY_ENTRY)
    target = f"{R}/t/report.json"
    (wd / "edit.yaml").write_text("stages: {t: {scal: 2.0}}\n")
    res = smk(wd, "-n", target, check=False, configs=("edit.yaml",))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "pqd: error: invalid config at 'stages.t': Additional properties" in out
    (wd / "edit.yaml").write_text("stages: {t: {scale: 0.5}}\n")
    out = smk(wd, "-n", target, configs=("edit.yaml",)).stdout
    block = re.search(r"rule stage_toy:.*?(?=\n\n)", out, re.S).group(0)
    assert "gpu=1" in block and "mem_mb=8000" in block and "toyed.pt" in block
    smk(wd, target, configs=("edit.yaml",))
    import json

    rep = json.loads((wd / target).read_text())
    assert [s["stage"] for s in rep["stages"]] == ["dense", "t"]
    assert rep["stages"][-1]["toy"] == {"scale": 0.5} and rep["stages"][-1]["epochs"] == 1
    assert rep["stages"][-1]["settings"] == {"lr": 0.01, "scale": 0.5}


def test_a_user_model_file_and_its_local_imports_are_fingerprinted(tmp_path):
    """A backbone built outside pqd: a file of the workflow directory counts by its contents and
    those of the local modules it imports; an installed package by its version."""
    from pqd.codehash import code_hash, external_fingerprint

    (tmp_path / "models").mkdir()
    (tmp_path / "models/net.py").write_text("import torch\nfrom models.blocks import Block\n")
    (tmp_path / "models/blocks.py").write_text("class Block: pass\n")
    (tmp_path / "models/other.py").write_text("x = 1\n")
    labels = [label for label, _ in external_fingerprint("models.net", [tmp_path])]
    assert labels == ["file:models.blocks", "file:models.net"]  # torch is not local; other.py not imported
    before = external_fingerprint("models.net", [tmp_path])
    (tmp_path / "models/other.py").write_text("x = 2\n")
    assert external_fingerprint("models.net", [tmp_path]) == before
    (tmp_path / "models/blocks.py").write_text("class Block: pass  # edited\n")
    assert external_fingerprint("models.net", [tmp_path]) != before
    tv = external_fingerprint("torchvision.models", [tmp_path])
    assert tv[0][0] == "package:torchvision" and tv[0][1].startswith(b"torchvision==")
    assert code_hash(["pqd.runner", "torchvision.models"]) != code_hash(["pqd.runner"])
