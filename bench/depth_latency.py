"""Depth against width: what fraction of a deep, narrow network's batch-1 latency each kind of
pruning keeps for the MACs it keeps (BENCHMARKS.md section 14; issue 23 item 2).

    python bench/depth_latency.py [--backbone resnet56] [--threads 1] [--rounds 40]

Builds the backbone (weights do not change kernels or shapes, so a random initialisation times
like a trained model), and from it: width-pruned variants at the latency curve's channel ratios
(``s``'s own mechanics, :func:`pqd.channels.prune_once`), depth-pruned variants with 20-100% of the
removable residual blocks removed (``b``'s own mechanics, :func:`pqd.blocks.remove`; spread over
the stages, the last blocks of each stage first, since ``b``'s choice needs data), and depth plus
width together. Every variant is deployed INT8 through the pipeline's own path
(:func:`pqd.measure.deployed_runner`: QAT prepare, convert, the runtime's ONNX graph) and timed in
the configured runtime, all interleaved with the unpruned model in one process. Prints per
variant the MACs kept and the latency kept (median of per-round ratios, 95% CI over batch medians
of the rounds), with the CPU's instruction-set flags.
"""

from __future__ import annotations

import argparse
import tempfile

from common import header, parse, stamp

from pqd import stats
from pqd.blocks import removable_blocks, remove
from pqd.catalog import BACKBONES
from pqd.channels import prune_once
from pqd.config import CURVE_RATIOS
from pqd.macs import macs
from pqd.measure import deployed_runner, interleaved_latency
from pqd.models import build_model


def spread(blocks: list[str], n: int) -> list[str]:
    """``n`` of ``blocks`` taken round-robin over the stages, the last block of each stage first."""
    stages: dict[str, list[str]] = {}
    for b in blocks:
        stages.setdefault(b.rpartition(".")[0], []).append(b)
    queues = [list(reversed(v)) for v in stages.values()]
    out: list[str] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet56")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--runtime", default="openvino")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=400)
    smoke = {"backbone": "resnet20", "width": 0.25, "rounds": 4, "runs": 8}
    a = parse(ap, smoke, help="a tiny ResNet-20 and 4 rounds (the tests' smoke run)")
    spec = BACKBONES.get(a.backbone)
    size = spec.image_size
    model = build_model(spec, 10, a.width).eval()
    meta = {"backbone": a.backbone, "model": spec.to_dict(), "num_classes": 10, "width": a.width}
    blocks = removable_blocks(model, size)
    variants = {"reference": model}
    for r in CURVE_RATIOS[1:]:
        variants[f"width {r:.1f}"] = prune_once(model, r, size, "uniform", 1).eval()
    for frac in (0.2, 0.4, 0.6, 0.8, 1.0):
        k = round(frac * len(blocks))
        variants[f"depth {k}/{len(blocks)}"] = remove(build_model(spec, 10, a.width).eval(), spread(blocks, k))
    half = spread(blocks, round(0.5 * len(blocks)))
    for r in (0.3, 0.5):
        shallow = remove(build_model(spec, 10, a.width).eval(), half)
        variants[f"depth {len(half)}/{len(blocks)} + width {r:.1f}"] = prune_once(shallow, r, size, "uniform", 1).eval()
    ref_macs = macs(model, size)
    runners = {}
    with tempfile.TemporaryDirectory(prefix="pqd-depth-") as tmp:
        for i, (name, m) in enumerate(variants.items()):
            runners[name] = deployed_runner(m, meta, "int8", tmp, f"v{i}", a.runtime, a.threads)
        res = interleaved_latency(runners, runs=a.runs, warmup=20, rounds=a.rounds, threads=a.threads, image_size=size)
    print(
        stamp(
            f"{a.backbone} width {a.width}, INT8 in {a.runtime}, {a.threads} thread(s), batch 1, {size}px, "
            f"{a.rounds} rounds"
        )
    )
    print(header(["variant", "MACs kept", "latency kept (95% CI)", "median ms"]))
    for name, m in variants.items():
        keep = stats.ratio_interval([res[name]["round_ms"]], [res["reference"]["round_ms"]])
        print(
            f"| {name} | {macs(m, size) / ref_macs:.3f} | {keep.mean:.2f} [{keep.low:.2f}, {keep.high:.2f}] "
            f"| {res[name]['median_ms']:.3f} |"
        )


if __name__ == "__main__":
    main()
