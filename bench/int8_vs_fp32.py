"""INT8 (pqd's deployed form) vs FP32 eager, batch-1 CPU latency, timed interleaved in one process.

    python bench/int8_vs_fp32.py                       # vgg16, resnet18, wrn28_10 at full width
    python bench/int8_vs_fp32.py --smoke               # tiny widths, a few runs (CI smoke run)

Random weights: latency does not depend on the values. The INT8 model is made exactly as
the workflow makes it (FX QAT prepare, observers fed a few batches, convert), so the ratio
printed is the one a `q` pipeline gets. Trust the ratios; absolute ms drift on shared CPUs.
"""

from __future__ import annotations

import argparse
import time

import torch

from pqd import quant
from pqd.measure import cpu_info, interleaved_latency
from pqd.models import build_model


def macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of one 32x32 image through conv and linear layers."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hs:
        h.remove()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="*", default=["vgg16", "resnet18", "wrn28_10"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="tiny widths and runs, for CI")
    a = ap.parse_args()
    if a.smoke:
        a.width, a.runs, a.threads = 0.125, 20, [1]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_info()}")
    print("| backbone | width | MMACs | threads | FP32 eager ms | INT8 ms | INT8 speedup |")
    print("|---|---|---|---|---|---|---|")
    for name in a.backbones:
        torch.manual_seed(0)
        fp32 = build_model(name, 10, a.width).eval()
        qat = quant.prepare_qat(build_model(name, 10, a.width))
        with torch.no_grad():
            for _ in range(4):
                qat(torch.randn(16, 3, 32, 32))
        int8 = quant.convert(qat)
        for t in a.threads:
            res = interleaved_latency({"fp32": fp32, "int8": int8}, runs=a.runs, warmup=10, rounds=10, threads=t)
            f, i = res["fp32"]["median_ms"], res["int8"]["median_ms"]
            print(f"| {name} | {a.width} | {macs(fp32) / 1e6:.0f} | {t} | {f:.2f} | {i:.2f} | {f / i:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
