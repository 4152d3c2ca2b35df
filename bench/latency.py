"""Batch-1 CPU latency of each backbone, FP32 and INT8, in every runtime pqd measures with,
timed interleaved in one process, with ratios to PyTorch eager FP32.

    python bench/latency.py                       # vgg16, resnet18, wrn28_10 at full width
    python bench/latency.py --smoke               # tiny widths, a few runs (CI smoke run)

Random weights: latency does not depend on the values. The INT8 model is made exactly as the
workflow makes it (FX QAT prepare, observers fed a few batches, convert) and exported to ONNX
exactly as the `export_onnx` rule does, so each column is what a pipeline's deployed model gets.
Trust the ratios; absolute ms drift on shared CPUs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pqd import quant
from pqd.checkpoint import save_checkpoint
from pqd.measure import cpu_info, interleaved_latency
from pqd.models import build_model
from pqd.runtimes import RUNTIMES, export_onnx


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
    cols = ["torch_fp32", "torch_int8", "ort_fp32", "ort_int8"]
    print("| backbone | width | MMACs | threads | " + " | ".join(f"{c} ms" for c in cols) + " | "
          + " | ".join(f"{c} speedup" for c in cols[1:]) + " |")
    print("|---|---|---|---|" + "---|" * (2 * len(cols) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.backbones:
            torch.manual_seed(0)
            fp32 = build_model(name, 10, a.width).eval()
            qat = quant.prepare_qat(build_model(name, 10, a.width))
            with torch.no_grad():
                for _ in range(4):
                    qat(torch.randn(16, 3, 32, 32))
            int8 = quant.convert(qat)
            paths = {}
            for form, model in (("fp32", fp32), ("int8", int8)):
                meta = {"backbone": name, "num_classes": 10, "width": a.width, "form": form, "reduce_range": True}
                paths[form] = str(Path(tmp) / f"{name}_{form}.pt")
                save_checkpoint(paths[form], model.state_dict(), meta)
                export_onnx(paths[form], paths[form] + ".onnx")
            for t in a.threads:
                ort = {f: RUNTIMES.get("onnxruntime")(paths[f], paths[f] + ".onnx", t) for f in paths}
                res = interleaved_latency({"torch_fp32": fp32, "torch_int8": int8, "ort_fp32": ort["fp32"],
                                           "ort_int8": ort["int8"]}, runs=a.runs, warmup=10, rounds=20, threads=t)
                ms = {c: res[c]["median_ms"] for c in cols}
                print(f"| {name} | {a.width} | {macs(fp32) / 1e6:.0f} | {t} | "
                      + " | ".join(f"{ms[c]:.2f}" for c in cols) + " | "
                      + " | ".join(f"{ms['torch_fp32'] / ms[c]:.2f}x" for c in cols[1:]) + " |", flush=True)


if __name__ == "__main__":
    main()
