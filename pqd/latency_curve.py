"""Latency curves: how a model's measured batch-1 latency falls as structured pruning removes channels.

Why measure rather than count: at small widths halving the MACs gave 1.25x, not 2x (BENCHMARKS.md),
and kernels slow down at channel counts their vector width does not divide. NetAdapt and HALP
used per-platform lookup tables; pqd measures the whole model instead: the model that enters
stage ``s``, pruned at a grid of channel ratios exactly as ``s`` prunes it (same allocation and
rounding), each deployed in the form the target is for (INT8 through the pipeline's own QAT
convert and ONNX export, or FP32) and timed in the configured runtime and threads, interleaved
with the unpruned model in one process. What is recorded per point is the *ratio* to the unpruned
model, a median of per-round ratios: a shared CPU's speed drifts by up to 2x within seconds, so
only ratios timed side by side carry from the curve job to the stage that uses them (absolute
milliseconds are kept too, for ``latency_ms`` targets, which hold only on the measuring machine).

The ``latency_curve`` rule runs this where the ``latency`` rule runs (the latency resources, the
whole machine), not on a training node; stage ``s`` then picks its channel ratio from the curve
(:func:`pqd.latency_budget.ratio_for_latency`), and the pipeline's ``latency`` job measures what was reached
against the same unpruned reference (:func:`pqd.measure.reference_runner`).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch.nn as nn

from pqd.channels import prune_once
from pqd.checkpoint import code_version
from pqd.errors import PqdError
from pqd.macs import macs
from pqd.measure import cpu_info, deployed_runner, interleaved_latency, load_unpruned
from pqd.models import backbone_of
from pqd.params import CurveParams
from pqd.runtimes import runtime_versions


def per_round_keep(model_rounds: list[float], reference_rounds: list[float]) -> float:
    """Median over timing rounds of the per-round latency ratio (the two were timed in the same rounds)."""
    return statistics.median(m / r for m, r in zip(model_rounds, reference_rounds))


def measure_curve(model_path: str, p: CurveParams) -> dict:
    """Time the model at ``model_path`` pruned at each of ``p.ratios`` (0 first: the reference)."""
    if not p.ratios or p.ratios[0] != 0:
        raise PqdError("a latency curve starts at ratio 0 (the unpruned reference)")
    model, meta = load_unpruned(model_path)
    size = backbone_of(meta).image_size
    runtime, threads = p.measure.runtime, p.measure.threads
    points, runners = [], {}
    with tempfile.TemporaryDirectory(prefix="pqd-curve-") as tmp:
        for i, ratio in enumerate(p.ratios):
            m = model if ratio == 0 else prune_once(model, ratio, size, p.allocation, p.round_to).eval()
            runners[f"r{i}"] = deployed_runner(m, meta, p.form, tmp, f"r{i}", runtime, threads)
            points.append(
                {
                    "ratio": ratio,
                    "macs": macs(m, size),
                    "out_channels": sum(c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)),
                }
            )
        res = interleaved_latency(
            runners,
            runs=p.measure.runs,
            warmup=p.measure.warmup,
            rounds=p.measure.rounds,
            threads=threads,
            image_size=size,
        )
    ref = res["r0"]
    for i, point in enumerate(points):
        r = res[f"r{i}"]
        point.update(
            median_ms=r["median_ms"], keep=per_round_keep(r["round_ms"], ref["round_ms"]), round_ms=r["round_ms"]
        )
    return {
        "form": p.form,
        **runtime_versions(runtime),
        "threads": threads,
        "allocation": p.allocation,
        "round_to": p.round_to,
        "reference_ms": ref["median_ms"],
        "points": points,
        "source": str(model_path),
        "system": cpu_info(),
        "code_version": code_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
