"""pqd's INT8 deployment of torchvision classifiers against OpenVINO's own INT8 path (NNCF
post-training quantization of the same weights), at batch 1 and their own input size.

    python bench/byo_latency.py                                   # 224 px, 1 and 2 threads, 5 models
    python bench/byo_latency.py --models mobilenet_v3_small --threads 1 --explain   # where the time goes
    python bench/byo_latency.py --every-op-too      # also the QDQ-after-every-op graph pqd deployed before
    python bench/byo_latency.py --models pqd:vgg16 pqd:resnet18 pqd:wrn28_10 --every-op-too   # pqd's own, at 32 px
    python bench/byo_latency.py --smoke                           # 64 px, two models, few runs (CI)

Per model and thread count, timed interleaved in one process (``pqd.measure.interleaved_latency``):
OpenVINO FP32 (the ONNX export pqd deploys for dense, f32 inference precision), pqd's INT8 (FX QAT
prepare, observers fed random batches, then OpenVINO's ``weighted_inputs`` graph of the fake-quantized
model, :func:`pqd.qat.weighted_inputs_graph`: ``measure.deployed_runner``, what a pipeline's ``q``
deploys to OpenVINO) and NNCF's INT8 (``nncf.quantize`` of OpenVINO's own conversion of the
same FP32 module, calibrated on the same kind of random batches). Random weights: latency does not
depend on the values. ``pqd/nncf`` is the median over timing rounds of the per-round ratio, with the
2.5-97.5% range over rounds. ``--explain`` lists, per model, the executed layers of both INT8
graphs by type and precision where they differ (what OpenVINO left in float in one but not the
other). Needs ``pip install nncf`` (not a dependency of pqd).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import header, parse, stamp

from pqd.catalog import BACKBONES, BackboneSpec
from pqd.measure import deployed_runner, interleaved_latency
from pqd.models import build_model
from pqd.runtimes import import_openvino, openvino_runner

MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"]
# ConvNeXt's converted INT8 model has no ONNX mapping (quantized permute before LayerNorm); the
# fake-quantized graph exports (what the probe tells a user to set)
ONNX_INT8 = {"convnext_tiny": "fake_quant"}


def nncf_runner(model: torch.nn.Module, size: int, threads: int, workdir: str, name: str, batches: int = 8):
    """NNCF PTQ of OpenVINO's conversion of ``model``, saved as IR and run by pqd's OpenVINO runner."""
    import nncf

    ov = import_openvino()
    ov_model = ov.convert_model(model.eval(), example_input=torch.randn(1, 3, size, size))
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, size, size), dtype=np.float32) for _ in range(batches)]
    q = nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=batches)
    path = str(Path(workdir) / f"{name}.xml")
    ov.save_model(q, path)
    return openvino_runner(None, path, threads), path


def layer_profile(xml_or_onnx: str, size: int, threads: int) -> collections.Counter:
    ov = import_openvino()
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(xml_or_onnx)
    model.reshape({model.input(0).get_any_name(): ov.PartialShape([1, 3, size, size])})
    compiled = core.compile_model(
        model, "CPU", {props.inference_num_threads: threads, hints.inference_precision: ov.Type.f32}
    )
    out = collections.Counter()
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt else node.get_type_name()
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        if kind not in ("Input", "Output", "Parameter", "Result", "Constant"):
            out[(kind, prec)] += 1
    return out


def ratio_stats(a: list[float], b: list[float]) -> tuple[float, float, float]:
    r = sorted(x / y for x, y in zip(a, b))
    return statistics.median(r), r[int(0.025 * (len(r) - 1))], r[int(0.975 * (len(r) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--explain", action="store_true", help="also compare the executed INT8 layers")
    ap.add_argument(
        "--every-op-too",
        action="store_true",
        help="also time, in OpenVINO, the every_op INT8 graph (QDQ after every op, what ONNX Runtime gets)",
    )
    smoke = {"models": ["resnet18", "mobilenet_v3_small"], "size": 64, "threads": [1], "runs": 20, "rounds": 4}
    a = parse(ap, smoke, help="64 px, two models, few runs, for the tests' smoke run")
    print(stamp(f"batch 1, {a.size} px (pqd: backbones at their own)"))
    print(
        header(
            ["model", "threads", "OpenVINO FP32 ms", "pqd INT8 ms", "NNCF INT8 ms"]
            + ["pqd / NNCF [2.5-97.5% of rounds]", "FP32 / pqd INT8"]
        )
    )
    with tempfile.TemporaryDirectory(prefix="pqd-byo-") as tmp:
        for name in a.models:
            if name.startswith("pqd:"):  # a built-in backbone at its own size
                spec = BACKBONES.get(name[4:])
            else:
                spec = BackboneSpec(
                    name, f"torchvision.models:{name}", image_size=a.size, onnx_int8=ONNX_INT8.get(name, "converted")
                )
            size = spec.image_size
            torch.manual_seed(0)
            model = build_model(spec, 10).eval()
            name = spec.name
            meta = {
                "experiment": "bench",
                "backbone": name,
                "model": spec.to_dict(),
                "dataset": "random",
                "num_classes": 10,
                "width": 1.0,
                "reduce_range": True,
            }
            for threads in a.threads:
                runners = {
                    "fp32": deployed_runner(model, meta, "fp32", tmp, f"{name}_fp32", "openvino", threads),
                    "pqd": deployed_runner(model, meta, "int8", tmp, f"{name}_pqd", "openvino", threads),
                }
                runners["nncf"], nncf_xml = nncf_runner(model, size, threads, tmp, f"{name}_nncf")
                if a.every_op_too:  # the graph exported for ONNX Runtime, run by OpenVINO
                    deployed_runner(model, meta, "int8", tmp, f"{name}_every", "onnxruntime", threads)
                    runners["pqd_every"] = openvino_runner(None, str(Path(tmp) / f"{name}_every.onnx"), threads)
                res = interleaved_latency(
                    runners, runs=a.runs, warmup=20, rounds=a.rounds, threads=threads, image_size=size
                )
                med, lo, hi = ratio_stats(res["pqd"]["round_ms"], res["nncf"]["round_ms"])
                speed, _, _ = ratio_stats(res["fp32"]["round_ms"], res["pqd"]["round_ms"])
                print(
                    f"| {name} | {threads} | {res['fp32']['median_ms']:.2f} | {res['pqd']['median_ms']:.2f} | "
                    f"{res['nncf']['median_ms']:.2f} | {med:.2f} [{lo:.2f}, {hi:.2f}] | {speed:.2f}x |",
                    flush=True,
                )
                if "pqd_every" in res:
                    fmed, flo, fhi = ratio_stats(res["pqd_every"]["round_ms"], res["nncf"]["round_ms"])
                    print(
                        f"| {name} (every_op graph) | {threads} | | {res['pqd_every']['median_ms']:.2f} | | "
                        f"{fmed:.2f} [{flo:.2f}, {fhi:.2f}] | |",
                        flush=True,
                    )
            if a.explain:
                ours = layer_profile(str(Path(tmp) / f"{name}_pqd.onnx"), size, 1)
                theirs = layer_profile(nncf_xml, size, 1)
                print(f"\n{name}: executed layers (type, precision): pqd INT8 vs NNCF INT8, where they differ")
                for key in sorted(set(ours) | set(theirs)):
                    if ours[key] != theirs[key]:
                        print(f"  {key[0]:<24} {key[1]:<6} pqd {ours[key]:>4}  nncf {theirs[key]:>4}")
                print()


if __name__ == "__main__":
    main()
