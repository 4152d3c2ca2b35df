"""pqd: prune, quantize and distill image classifiers for CPU deployment.

The package is kept import-light on purpose: the Snakefile imports :mod:`pqd.pipeline`
and :mod:`pqd.config` at DAG-build time, and those must not pull in torch.
"""

__version__ = "0.1.0"
