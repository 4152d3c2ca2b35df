# Helpers shared by the rules: experiment lookup, file layout, tracked params.
import hashlib
import json
import os
import shlex
import sys
from functools import lru_cache
from pathlib import Path

from pqd import pipeline as pqd_pipeline
from pqd.pipeline import ONNX_RUNTIMES

RESULTS = config["results"]
CACHE = f"{config['data_root']}/pqd-cache"
MACHINE_CPUS = os.cpu_count() or 1
# Jobs run the pqd of the interpreter that runs Snakemake, activated virtualenv or not.
PQD = f"{shlex.quote(sys.executable)} -m pqd"

# A local run never oversubscribes the physical cores: every rule books `cpus` equal to its
# threads, and a local run offers at most this machine's cores (--resources cpus=N overrides).
if workflow.local_exec and "cpus" not in workflow.global_resources:
    workflow.register_resource("cpus", MACHINE_CPUS)


wildcard_constraints:
    exp="[^/]+",
    pipeline="[^/]+",
    dataset="[^/]+",


def fail(e):
    """Re-raise a PqdError as a one-line WorkflowError."""
    raise WorkflowError(f"pqd: error: {e}") from None


@lru_cache(maxsize=None)
def exp_cfg(exp):
    try:
        return pqd_config.experiment(config, exp, SCHEMA)
    except PqdError as e:
        fail(e)


def byo_checkpoint(exp):
    """dense.checkpoint of `exp` ([] when training from scratch); a missing file is a config error."""
    path = exp_cfg(exp)["dense"]["checkpoint"]
    if path and not Path(path).is_file():
        fail(f"dense.checkpoint {path!r} not found (experiment {exp}); fix the path or set it to null to train")
    return path or []


# Fail fast on every experiment the config names: Snakemake swallows an error raised inside an
# input function when the target file already exists (it then treats that file as a source).
for _exp in dict.fromkeys([*config["experiments"], *config["overrides"]]):
    byo_checkpoint(_exp)


def chain_of(pipeline):
    try:
        return pqd_pipeline.parse_pipeline(pipeline)
    except PqdError as e:
        fail(e)


def model_file(exp, chain):
    return pqd_pipeline.model_path(RESULTS, exp, chain)


def data_file(wc):
    return f"{CACHE}/{exp_cfg(wc.exp)['dataset']}.pt"


def params_json(exp, chain):
    try:
        return json.dumps(pqd_config.rule_params(exp_cfg(exp), exp, chain), sort_keys=True)
    except PqdError as e:
        fail(e)


def eval_json(wc):
    return json.dumps(pqd_config.eval_params(exp_cfg(wc.exp), wc.exp), sort_keys=True)


# Code tracking: each job's params carry a hash of the pqd modules it runs, so editing
# pqd/distill.py reruns distillation jobs (and their descendants) but not pruning.
PQD_SRC = Path(workflow.basedir) / "pqd"
STAGE_ONLY = {f"{s.module.split('.')[-1]}.py" for s in map(pqd_pipeline.STAGES.get, pqd_pipeline.STAGES)}
# the shared training loop keeps masks and freezes QAT through prune.py and quant.py, and every
# checkpoint load rebuilds factorised layers through lowrank.py (pqd/arch.py)
STAGE_ONLY -= {"prune.py", "quant.py", "lowrank.py"}
ROLE_ONLY = {"measure.py", "report.py", "runtimes.py"}


@lru_cache(maxsize=None)
def code_hash(*extra):
    files = [f for f in sorted(PQD_SRC.rglob("*.py")) if f.name not in STAGE_ONLY | ROLE_ONLY or f.name in extra]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def log_path(name):
    return f"logs/{{exp}}/{name}.log"
