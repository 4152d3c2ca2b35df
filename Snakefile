# pqd: prune / quantize / distill image classifiers for CPU deployment.
#   snakemake -j2                                        # every experiment in config/config.yaml
#   snakemake -j4 results/vgg16_c10/pqd/report.json      # one pipeline of one experiment
from snakemake.utils import min_version, update_config

min_version("9.0")

import os
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the pqd package beside this Snakefile wins over an installed one

from pqd.errors import PqdError
from pqd import config as pqd_config
from pqd import interrupts as pqd_interrupts


# The working directory's config/config.yaml (the usual layout); run from elsewhere with
# `-s path/to/Snakefile`, the workflow's own default config instead. Results, logs and data are
# always relative to the working directory.
configfile: "config/config.yaml" if Path("config/config.yaml").is_file() else f"{workflow.basedir}/config/config.yaml"


# The schema file plus the blocks generated from the stage, dataset-kind and runtime registries.
SCHEMA = f"{workflow.basedir}/config/schema/config.schema.yaml"
# Nested --config values (seeds=[0,1], stages={p: {sparsity: 0.9}}) arrive as strings: re-read as YAML.
update_config(config, pqd_config.command_line_values(workflow.config_settings.config))
for line in pqd_config.inert_settings(config):  # as written, before the schema fills defaults
    print(f"pqd: warning: {line}", file=sys.stderr)
try:
    pqd_config.validate(config, SCHEMA)
except PqdError as e:
    raise WorkflowError(f"pqd: error: {e}") from None


wildcard_constraints:
    exp="[^/]+",
    pipeline="[^/]+",
    dataset="[^/]+",


# Jobs run `python3 -m pqd`: this workflow's own pqd (first on PYTHONPATH, whatever the working
# directory) with the interpreter that runs Snakemake, activated virtualenv or not (its folder
# first on PATH); under --software-deployment-method conda, the environment's activation puts
# the python3 of envs/pqd.yaml first instead. Set here, in the environment the jobs inherit, so
# that no shell command reads a global and no machine-specific path enters the tracked params.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
os.environ["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
# A SIGINT or SIGTERM to Snakemake alone also stops its running jobs, and a job stops when the
# Snakemake process that started it is gone (pqd/interrupts.py).
pqd_interrupts.forward_to_jobs()


# ... and passed on to jobs that run elsewhere (cluster executors).
envvars:
    "PYTHONPATH",
    "PATH",


include: "rules/common.smk"


rule all:
    """Default target: the summary of every experiment listed in the config."""
    input:
        expand(f"{RESULTS}/{{exp}}/summary.csv", exp=config["experiments"]),


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/measure.smk"
include: "rules/report.smk"
