"""INT8 against FP32 ViT in each runtime, and the INT8 ViT's top-1 in each runtime against
PyTorch's fake-quantized model (BENCHMARKS.md section 7).

    python bench/vit_int8.py                      # widths 1, 2, 4 (embedding 96, 192, 384), 1 thread
    python bench/vit_int8.py --smoke              # tiny, for CI

Latency: for each width, the ViT is deployed as the workflow deploys it (:func:`pqd.measure.deployed_runner`:
FP32; INT8 through FX QAT prepare with observers fed, then each runtime's INT8 form as above) and all
forms and runtimes are timed interleaved in one process, batch 1;
printed: each runtime's FP32 / INT8 latency ratio (above 1: INT8 faster). Weights are untrained
(latency depends on shapes, not values). Accuracy: a ViT (``--acc-width``) trained briefly on the
digits data (FP32 with AdamW, then one QAT epoch), top-1 on its 360 test images of the PyTorch
fake-quantized model and of the INT8 model each runtime gets from the workflow (PyTorch's converted
model; ONNX Runtime's QDQ graph; OpenVINO's weighted-inputs graph, :func:`pqd.qat.weighted_inputs_graph`);
the goal is within 1 point of the fake-quantized model.
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
from pathlib import Path

import torch
from common import header, parse, stamp

from pqd import qat as quant
from pqd.data import load_data, prepare
from pqd.measure import deployed_runner, fake_quant_runner, interleaved_latency
from pqd.models import build_model
from pqd.train import Callbacks, FitSettings, evaluate, fit

RUNTIMES = ("torch", "onnxruntime", "openvino")


def latency_rows(width: float, threads: int, runs: int, rounds: int) -> list[str]:
    torch.manual_seed(0)
    model = build_model("vit", 10, width).eval()
    meta = {"backbone": "vit", "dataset": "bench", "num_classes": 10, "width": width, "reduce_range": True}
    with tempfile.TemporaryDirectory() as tmp:
        runners = {
            f"{rt}_{form}": deployed_runner(model, meta, form, tmp, f"{rt}_{form}", rt, threads)
            for rt in RUNTIMES
            for form in ("fp32", "int8")
        }
        res = interleaved_latency(runners, runs=runs, warmup=10, rounds=rounds, threads=threads, image_size=32)
    dim = model.patch_embed.out_channels
    return [
        f"| {width:g} ({dim}) | {rt} | {res[f'{rt}_fp32']['median_ms']:.3f} | {res[f'{rt}_int8']['median_ms']:.3f} | "
        f"{res[f'{rt}_fp32']['median_ms'] / res[f'{rt}_int8']['median_ms']:.2f} |"
        for rt in RUNTIMES
    ]


def accuracy_rows(width: float, epochs: int, threads: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "digits.pt")
        prepare("digits", {"kind": "digits"}, tmp, cache)
        data = load_data(cache, augment={"crop_pad": 2})
        torch.manual_seed(0)
        vit = build_model("vit", 10, width)
        quiet = Callbacks(log=io.StringIO())
        fit(vit, data, FitSettings(epochs=epochs, lr=1e-3, batch_size=64, optimizer="adamw"), callbacks=quiet)
        q = quant.prepare_qat(vit, 32)
        fit(q, data, FitSettings(epochs=1, lr=5e-4, batch_size=64, optimizer="adamw"), callbacks=quiet)
        meta = {"backbone": "vit", "num_classes": 10, "width": width, "reduce_range": True}
        # each runtime gets the INT8 graph the workflow deploys to it (fake_quant_runner: deploy, then
        # that runtime's export); the fake-quantized model is scored before (export freezes its observers)
        fake = evaluate(quant.for_export(copy.deepcopy(q)), data)
        acc = {rt: evaluate(fake_quant_runner(q, meta, tmp, f"acc_{rt}", rt, threads), data) for rt in RUNTIMES}
    return [f"| {width:g} | fake-quantized (PyTorch) | {fake:.2f} | - |"] + [
        f"| {width:g} | INT8 {rt} | {a:.2f} | {a - fake:+.2f} |" for rt, a in acc.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=float, nargs="*", default=[1.0, 2.0, 4.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--acc-width", type=float, default=1.0)
    ap.add_argument("--acc-epochs", type=int, default=15)
    a = parse(ap, {"widths": [0.25], "runs": 20, "rounds": 4, "acc_width": 0.25, "acc_epochs": 1})
    print(stamp(f"{a.threads} thread(s)", f"torch {torch.__version__}"))
    print(header(["width (embedding)", "runtime", "FP32 ms", "INT8 ms", "FP32 / INT8"]))
    for w in a.widths:
        print("\n".join(latency_rows(w, a.threads, a.runs, a.rounds)), flush=True)
    print("\n" + header(["width", "model", "top-1 % (digits, 360 images)", "vs fake-quantized"]))
    print("\n".join(accuracy_rows(a.acc_width, a.acc_epochs, a.threads)))


if __name__ == "__main__":
    main()
