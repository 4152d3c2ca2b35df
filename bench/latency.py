"""Batch-1 CPU latency of each backbone, FP32 and INT8, in every runtime pqd measures with
(plus torch.compile for FP32), timed interleaved in one process, with ratios to PyTorch eager
FP32 and the fraction of this CPU's INT8 MAC peak each INT8 runtime reaches.

    python bench/latency.py                       # vgg16, resnet18, wrn28_10 at full width
    python bench/latency.py --smoke               # tiny widths, a few runs (CI smoke run)
    python bench/latency.py --columns torch_fp32 ort_int8 ov_int8 --threads 2   # fewer runtimes per process

Random weights: latency does not depend on the values. Every column's model is deployed through
:func:`pqd.measure.deployed_runner`, as the workflow deploys it (FX QAT prepare, observers fed a few
batches, convert; each runtime's own ONNX graph), so each column is what a pipeline's deployed model gets.
Trust the ratios; absolute ms drift on shared CPUs.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch._inductor.config
from common import header, parse, row, stamp

from pqd.constants import input_shape
from pqd.macs import macs
from pqd.measure import deployed_runner, timed_with_peak
from pqd.models import build_model

# ov_fp32 is dense as pqd times it (f32 forced); ov_fp32_default as OpenVINO runs it by default (bf16 on CPUs
# with AVX-512 BF16 or AMX), the baseline a user gets for free (the latency job's dense_default)
COLUMNS = ["torch_fp32", "compile_fp32", "ort_fp32", "ov_fp32", "ov_fp32_default", "torch_int8", "ort_int8", "ov_int8"]
# column -> (runtime, deployed form, precision) of the columns the workflow deploys
DEPLOYED = {
    "torch_fp32": ("torch", "fp32", "f32"),
    "ort_fp32": ("onnxruntime", "fp32", "f32"),
    "ov_fp32": ("openvino", "fp32", "f32"),
    "ov_fp32_default": ("openvino", "fp32", "default"),
    "torch_int8": ("torch", "int8", "f32"),
    "ort_int8": ("onnxruntime", "int8", "f32"),
    "ov_int8": ("openvino", "int8", "f32"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="*", default=["vgg16", "resnet18", "wrn28_10"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument(
        "--columns",
        nargs="*",
        default=COLUMNS,
        choices=COLUMNS,
        help="runtimes to time (torch_fp32 is always one: speedups are against it). Every runtime "
        "keeps its own thread pool; with 2 threads on 2 cores, seven pools in one process "
        "slowed OpenVINO on the small models, which a run with fewer columns shows",
    )
    a = parse(ap, {"backbones": ["resnet18"], "width": 0.125, "runs": 20, "threads": [1]})
    print(stamp())
    cols = [c for c in COLUMNS if c in a.columns or c == "torch_fp32"]
    int8_cols = [c for c in cols if c.endswith("int8")]
    print(
        header(
            ["backbone", "width", "MMACs", "threads", "INT8 peak GMAC/s"]
            + [f"{c} ms" for c in cols]
            + [f"{c} speedup" for c in cols[1:]]
            + [f"{c} peak frac" for c in int8_cols]
        )
    )
    baselines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.backbones:
            torch.manual_seed(0)
            fp32 = build_model(name, 10, a.width).eval()
            meta = {"backbone": name, "num_classes": 10, "width": a.width, "reduce_range": True}
            n_macs = macs(fp32, 32)
            for t in a.threads:
                torch.set_num_threads(t)
                # every column deployed as the workflow deploys it: the INT8 model and each runtime's
                # own ONNX graph (pqd.measure.deployed_runner), from the same random weights
                runners = {
                    c: deployed_runner(fp32, meta, form, tmp, f"{name}_{c}_{t}", runtime, t, precision)
                    for c, (runtime, form, precision) in DEPLOYED.items()
                    if c in cols
                }
                if "compile_fp32" in cols:
                    # inductor's C++ CPU backend, compiled on first call. Freezing (weights as constants:
                    # oneDNN prepacking, conv+BN folding) is Inductor's CPU inference setting; without it
                    # the compiled VGG-16-BN ran 1.4x *slower* than eager here.
                    torch._inductor.config.freezing = True
                    torch._dynamo.reset()
                    runners["compile_fp32"] = torch.compile(fp32)
                    with torch.no_grad():
                        runners["compile_fp32"](torch.randn(*input_shape(1)))
                res, peak_rec = timed_with_peak(
                    {c: runners[c] for c in cols}, t, runs=a.runs, warmup=10, rounds=20, image_size=32
                )
                peak = peak_rec["int8_peak_macs_per_s"]
                ms = {c: res[c]["median_ms"] for c in cols}
                print(
                    row(
                        [name, a.width, f"{n_macs / 1e6:.0f}", t, f"{peak / 1e9:.0f}"]
                        + [f"{ms[c]:.2f}" for c in cols]
                        + [f"{ms['torch_fp32'] / ms[c]:.2f}x" for c in cols[1:]]
                        + [f"{n_macs / (ms[c] / 1e3) / peak:.2f}" for c in int8_cols]
                    ),
                    flush=True,
                )
                if {"ov_fp32", "ov_fp32_default", "ov_int8"} <= set(cols):
                    precision = runners["ov_fp32_default"].precision(input_shape(1))
                    baselines.append(
                        f"| {name} | {t} | {ms['ov_fp32']:.2f} | {ms['ov_fp32_default']:.2f} ({precision}) | "
                        f"{ms['ov_int8']:.2f} | {ms['ov_fp32'] / ms['ov_int8']:.2f}x | "
                        f"{ms['ov_fp32_default'] / ms['ov_int8']:.2f}x |"
                    )
    if baselines:
        print("\nOpenVINO: INT8 against dense at forced f32 (what pqd compares with) and at the runtime's default\n")
        print(
            header(
                ["backbone", "threads", "dense f32 ms", "dense default ms", "INT8 ms", "INT8 vs f32", "INT8 vs default"]
            )
        )
        print("\n".join(baselines))


if __name__ == "__main__":
    main()
