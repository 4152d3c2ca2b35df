"""Stage policies: one module per stage, each exposing ``run(model, ctx) -> model``.

A stage module holds only its policy (what to prune, which loss, which schedule) and imports
core modules (:mod:`pqd.masks`, :mod:`pqd.qat`, :mod:`pqd.losses`, :mod:`pqd.channels`,
:mod:`pqd.factorize`, :mod:`pqd.train` ...), never another stage: the runner
(:mod:`pqd.runner`) loads the one module named by the stage's
:class:`~pqd.pipeline.StageSpec`, and each job's code hash covers exactly that module's
import closure. This package's ``__init__`` imports nothing for the same reason.
"""
