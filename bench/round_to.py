"""Which ``stages.s.round_to`` measures fastest here: pruned models rounded to channel multiples of
1, 4, 8 and 16, each pruned to the same fraction of the MACs, timed side by side.

    python bench/round_to.py                         # resnet20 and vgg16 (full width), INT8 and FP32, OpenVINO and PyTorch
    python bench/round_to.py --smoke                 # tiny, for CI

INT8 and vector kernels work on channel blocks (8 or 16 lanes; VNNI groups of 4 inputs), so a
channel count that no block divides may cost as much as the next multiple. For each backbone,
each ``round_to`` gets the uniform channel ratio that keeps ``--macs-keep`` of the MACs
(:func:`pqd.channels.ratio_for_macs`, which rounds as ``s`` does), so the models do nearly equal
work; all of them and the unpruned model are deployed as the workflow deploys (FX QAT convert,
ONNX export) and timed interleaved in one process per runtime and form. Printed per row: the
latency kept (median of per-round ratios to the unpruned model) and the MACs kept; the lowest
latency per MAC kept is the round_to to use on this CPU. Weights are untrained: latency depends
on shapes and kernels, not values.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import header, parse, stamp

from pqd.channels import prune_once, ratio_for_macs
from pqd.errors import PqdError
from pqd.latency_curve import per_round_keep
from pqd.macs import macs
from pqd.measure import deployed_runner, interleaved_latency
from pqd.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=["resnet20", "vgg16"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--macs-keep", type=float, default=0.6)
    ap.add_argument("--round-to", type=int, nargs="*", default=[1, 4, 8, 16])
    ap.add_argument("--runtimes", nargs="*", default=["openvino", "torch"])
    ap.add_argument("--forms", nargs="*", default=["int8", "fp32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=40)
    smoke = {"backbones": ["resnet20"], "width": 0.25, "round_to": [1, 8], "runtimes": ["openvino"], "forms": ["int8"]}
    a = parse(ap, {**smoke, "runs": 20, "rounds": 4})
    print(stamp(f"{a.threads} thread(s)", f"torch {torch.__version__}"))
    print(
        header(
            ["backbone", "runtime", "form", "round_to", "channel ratio", "MACs kept", "latency kept"]
            + ["latency kept / MACs kept"]
        )
    )
    for bb in a.backbones:
        torch.manual_seed(0)
        model = build_model(bb, 10, a.width).eval()
        meta = {"backbone": bb, "dataset": "bench", "num_classes": 10, "width": a.width}
        base = macs(model, 32)
        pruned = {}
        for r in a.round_to:
            try:
                ratio = ratio_for_macs(model, a.macs_keep, 32, round_to=r)
            except PqdError as e:  # coarse rounding of thin layers: that MACs fraction is out of reach
                print(f"| {bb} x{a.width} | - | - | {r} | - | - | - | {e} |")
                continue
            m = prune_once(model, ratio, 32, round_to=r).eval()
            pruned[r] = (ratio, m, macs(m, 32) / base)
        for runtime in a.runtimes:
            for form in a.forms:
                with tempfile.TemporaryDirectory() as tmp:
                    runners = {"reference": deployed_runner(model, meta, form, tmp, "ref", runtime, a.threads)}
                    for r, (_, m, _) in pruned.items():
                        runners[r] = deployed_runner(m, meta, form, tmp, f"r{r}", runtime, a.threads)
                    res = interleaved_latency(
                        runners, runs=a.runs, warmup=10, rounds=a.rounds, threads=a.threads, image_size=32
                    )
                for r, (ratio, _, kept) in pruned.items():
                    keep = per_round_keep(res[r]["round_ms"], res["reference"]["round_ms"])
                    print(
                        f"| {bb} x{a.width} | {runtime} | {form} | {r} | {ratio:.3f} | {kept:.3f} | {keep:.3f} | "
                        f"{keep / kept:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
