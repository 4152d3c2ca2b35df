"""Shared test helpers: typed job params cut from the shipped config, as the workflow does; a copy
of the workflow in a temporary directory and Snakemake runs in it (one way for every test module)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pqd import config as pc
from pqd.params import StageParams

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = str(ROOT / "config/schema/config.schema.yaml")
WORKFLOW = ("Snakefile", "rules", "config", "profiles", "report", "pqd", "envs")  # what a user clones and runs
TINY_WORKFLOW = (ROOT / ".test/config/workflow.yaml").read_text()  # digits, ResNet-20 at width 0.25
TINY_ALL_STAGES = (ROOT / ".test/config/all_stages.yaml").read_text()  # ResNet-18 at width 0.125
# targets of the all-stages config that together name every registered stage letter (tests/test_codehash.py)
ALL_STAGES_TARGETS = [
    "results/resnet18_digits/pqd/eval.json",
    "results/resnet18_digits/s/slim.pt",
    "results/resnet18_digits/l/lowrank.pt",
    "results/resnet18_digits/pqk/pqk_int8.pt",
    "results/resnet18_digits/eq/qat_int8.pt",
    "results/resnet18_digits/f/finetuned.pt",
    "results/resnet18_digits/b/shallow.pt",
]


def copy_workflow(dest: Path, config: str | None = None, name: str = "tiny.yaml") -> Path:
    """The workflow's files copied to ``dest`` (created), with ``config`` written there as ``name``."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in WORKFLOW:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / item)
    if config is not None:
        (dest / name).write_text(config)
    return dest


def smk(
    wd: Path,
    *args: str,
    config: str = "tiny.yaml",
    edit: str = "",
    configs: tuple[str, ...] = (),
    check: bool = True,
    env: dict | None = None,
    cwd: Path | None = None,
    snakefile: Path | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """``snakemake -j2 ARGS`` in ``wd`` (or ``cwd``) with ``config`` plus ``configs`` (files in
    ``wd``) and ``edit`` (YAML written to edit.yaml) merged over it; with ``check``, a failure
    raises with the end of Snakemake's output."""
    files = [config, *configs]
    if edit:
        (wd / "edit.yaml").write_text(edit)
        files.append("edit.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-j2", *(["-s", str(snakefile)] if snakefile else []), *args]
    cmd += ["--configfile", *(str(wd / f) for f in files)]
    res = subprocess.run(
        cmd, cwd=cwd or wd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def planned(wd: Path, *args: str, **kw) -> dict[str, int]:
    """Job counts per rule of a dry run (empty when nothing is to be done)."""
    res = smk(wd, "-n", *args, **kw)
    out = res.stdout + res.stderr
    stats = {}
    if "Job stats:" in out:
        table = out.split("Job stats:")[1].split("total")[0]
        stats = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    return stats


def stage_params(
    chain: str,
    backbone: str = "resnet20",
    width: float = 0.5,
    epochs: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    **settings,
) -> StageParams:
    """The params the workflow would give the job producing the model after ``chain`` ('' = dense)
    in experiment ``{backbone}_digits``, with stage settings, epochs and threads overridden (one
    thread: the tests' models are tiny, and the suite runs in two processes)."""
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["width"] = width
    cfg["train"]["batch_size"] = batch_size
    exp = f"{backbone}_digits"
    p = pc.stage_params(pc.experiment(cfg, exp, SCHEMA), exp, chain)
    return dataclasses.replace(
        p, settings={**p.settings, **settings}, epochs=p.epochs if epochs is None else epochs, threads=threads
    )
