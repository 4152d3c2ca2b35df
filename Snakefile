# pqd: prune / quantize / distill image classifiers for CPU deployment.
#   snakemake -j2                                        # every experiment in config/config.yaml
#   snakemake -j4 results/vgg16_c10/pqd/report.json      # one pipeline of one experiment
from snakemake.utils import min_version

min_version("9.0")

import sys

sys.path.insert(0, workflow.basedir)  # the pqd package beside this Snakefile wins over an installed one

from pqd.errors import PqdError
from pqd import config as pqd_config


configfile: "config/config.yaml"


SCHEMA = f"{workflow.basedir}/config/schema/config.schema.yaml"
try:
    pqd_config.validate(config, SCHEMA)
except PqdError as e:
    raise WorkflowError(f"pqd: error: {e}") from None


include: "rules/common.smk"


rule all:
    """Default target: the summary of every experiment listed in the config."""
    input:
        expand(f"{RESULTS}/{{exp}}/summary.csv", exp=config["experiments"]),


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/measure.smk"
include: "rules/report.smk"
