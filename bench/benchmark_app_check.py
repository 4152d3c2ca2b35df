"""pqd's batch-1 OpenVINO latency against OpenVINO's own ``benchmark_app`` on the same files.

    python bench/benchmark_app_check.py                    # resnet20 (small) and vgg16 (large), INT8
    python bench/benchmark_app_check.py --smoke            # tiny, for CI

Each model is made as the workflow makes it (:func:`pqd.measure.deployed_runner`: FX QAT prepare,
observers fed, convert, and the ONNX graph the ``export_onnx`` rule makes for OpenVINO), then timed alternately, in rounds: pqd's measurement (:func:`pqd.measure.
interleaved_latency` on the OpenVINO runner, which times the infer request alone) and
``benchmark_app -m deployed.onnx -d CPU -api sync -nstreams 1 -nthreads T -hint none
-infer_precision f32`` (its median latency). Both compile with the same thread count, one stream
and f32 inference precision for the non-INT8 parts (pqd's setting; left alone, benchmark_app
runs them in bf16 on a CPU with AVX-512 BF16, which is another model's accuracy). The script prints each
side's median over rounds and their ratio; within 10% is the goal (issue 13). benchmark_app runs
in its own process, so the two cannot interleave call by call; alternating rounds keep the
machine's speed drift from favouring one side.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import header, parse, stamp

from pqd.constants import input_shape
from pqd.measure import deployed_runner, interleaved_latency
from pqd.models import build_model


def benchmark_app() -> str:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        raise SystemExit("benchmark_app not found: it ships with the openvino package (pip install openvino)")
    return exe


def app_median_ms(exe: str, onnx: str, threads: int, seconds: int) -> float:
    out = subprocess.run(
        [
            exe,
            "-m",
            onnx,
            "-d",
            "CPU",
            "-api",
            "sync",
            "-nstreams",
            "1",
            "-nthreads",
            str(threads),
            "-hint",
            "none",
            "-infer_precision",
            "f32",
            "-t",
            str(seconds),
            "-shape",
            f"[{','.join(map(str, input_shape(1)))}]",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Median:\s*([0-9.]+)\s*(ms|us)", out)  # small models: microseconds
    if not m:
        raise SystemExit(f"benchmark_app printed no median latency:\n{out[-1500:]}")
    return float(m.group(1)) / (1000.0 if m.group(2) == "us" else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="*", default=["resnet20", "vgg16"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200, help="pqd's timed runs per round")
    ap.add_argument("--seconds", type=int, default=5, help="benchmark_app's duration per round")
    a = parse(ap, {"backbones": ["resnet20"], "width": 0.25, "rounds": 1, "runs": 20, "seconds": 1})
    exe = benchmark_app()
    print(stamp(f"{a.threads} thread(s)", f"{a.rounds} alternating rounds; medians over rounds"))
    print(header(["backbone", "width", "form", "pqd ms", "benchmark_app ms", "pqd / benchmark_app"]))
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.backbones:
            torch.manual_seed(0)
            meta = {"backbone": name, "num_classes": 10, "width": a.width, "reduce_range": True}
            # the INT8 model and the OpenVINO graph the workflow deploys, written as <tmp>/<name>.onnx
            model = build_model(name, 10, a.width).eval()
            runner = deployed_runner(model, meta, "int8", tmp, name, "openvino", a.threads)
            onnx = str(Path(tmp) / f"{name}.onnx")
            ours, theirs = [], []
            for _ in range(a.rounds):
                ours.append(
                    interleaved_latency(
                        {"m": runner}, runs=a.runs, warmup=20, rounds=1, threads=a.threads, image_size=32
                    )["m"]["median_ms"]
                )
                theirs.append(app_median_ms(exe, onnx, a.threads, a.seconds))
            o, t = statistics.median(ours), statistics.median(theirs)
            print(f"| {name} | {a.width} | int8 | {o:.3f} | {t:.3f} | {o / t:.2f} |")


if __name__ == "__main__":
    main()
