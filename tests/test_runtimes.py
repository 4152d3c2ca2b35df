"""Export of the deployed model to ONNX and its execution in ONNX Runtime and OpenVINO."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pqd import masks as prune
from pqd import qat as quant
from pqd.checkpoint import save_checkpoint
from pqd.errors import PqdError
from pqd.measure import interleaved_latency
from pqd.models import build_model
from pqd.runtimes import export_onnx, make_runner
from pqd.train import Callbacks, FitSettings, evaluate, fit


@pytest.fixture(scope="module")
def int8_artifacts(digits, tmp_path_factory):
    """A trained, 50%-pruned, QAT-trained ResNet-20 (width 0.25), deployed and exported."""
    torch.manual_seed(0)
    m = build_model("resnet20", 10, 0.25)
    fit(m, digits, FitSettings(epochs=2, lr=0.1, batch_size=64), callbacks=Callbacks(log=io.StringIO()))
    layers = prune.prunable_layers(m)
    prune.global_magnitude_prune(m, 0.5, layers)
    pruned = {n: mod.weight.detach() == 0 for n, mod in layers}
    q = quant.prepare_qat(m, 32)
    fit(
        q,
        digits,
        FitSettings(epochs=1, lr=0.01, batch_size=64),
        callbacks=Callbacks(step=[prune.mask_hook(prune.masks_from_zeros(q))], log=io.StringIO()),
    )
    d = tmp_path_factory.mktemp("rt")
    meta = {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "int8", "reduce_range": True}
    save_checkpoint(d / "qat.pt", q.state_dict(), {**meta, "form": "qat"})  # what OpenVINO's graph is built from
    int8 = quant.convert(q)
    save_checkpoint(d / "deployed.pt", int8.state_dict(), meta)
    assert export_onnx(str(d / "deployed.pt"), str(d / "deployed.onnx")) == {
        "form": "int8",
        "opset": 17,
        "int8_path": "converted",
    }
    return int8, pruned, str(d / "deployed.pt"), str(d / "deployed.onnx")


def _int8_weights(path):
    mo = onnx.load(path)
    tensors = list(mo.graph.initializer) + [n.attribute[0].t for n in mo.graph.node if n.op_type == "Constant"]
    return mo, [a for a in map(numpy_helper.to_array, tensors) if a.dtype == np.int8 and a.ndim >= 2]


def test_exported_graph_is_qdq_with_the_learned_int8_weights_and_their_zeros(int8_artifacts):
    int8, pruned, _, onnx_path = int8_artifacts
    mo, weights = _int8_weights(onnx_path)
    ops = {n.op_type for n in mo.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert "BatchNormalization" not in ops  # folded into the convolutions
    torch_ints = quant.int8_layers(int8)
    assert len(weights) == len(torch_ints)
    # the same integers as the PyTorch INT8 model (no re-calibration), pruned zeros included
    exported = sorted(w.tobytes() for w in weights)
    assert exported == sorted(t.numpy().tobytes() for t in torch_ints.values())
    inner = [torch_ints[n].numpy() for n in pruned]
    assert sum((w == 0).sum() for w in inner) / sum(w.size for w in inner) >= 0.5


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_runtimes_match_the_pytorch_int8_model(int8_artifacts, digits, runtime):
    int8, _, deployed, onnx_path = int8_artifacts
    ort = make_runner(runtime, deployed, onnx_path, 1)
    x = digits.normalize(digits.test_x)
    agree = (ort(x).argmax(1) == int8(x).argmax(1)).float().mean().item()
    # a barely trained width-0.25 model has small logit margins, so requantization rounding
    # differences flip some near-ties; a wrong scale or layout would drop agreement to chance
    assert agree > 0.85
    # at most 11 of 360 images: PyTorch's x86 INT8 kernels round differently on CPUs with AMX (Intel
    # Xeon, 2026-12-07: 72.8% against 74.4% in ONNX Runtime and 75.0% in OpenVINO for this weakly
    # trained model; within 5 images on AMD EPYC), with the old code as with the new
    assert abs(evaluate(ort, digits) - evaluate(int8, digits)) <= 3.1
    res = interleaved_latency({"ort": ort, "torch": int8}, runs=200, warmup=2, rounds=10, threads=1, image_size=32)
    assert res["ort"]["runs"] >= 200 and res["ort"]["median_ms"] > 0


def _const(graph, name):
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def test_openvino_runs_the_weighted_inputs_graph_of_the_qat_model(int8_artifacts, digits):
    """For OpenVINO (catalogue: int8_placement weighted_inputs) the INT8 graph is built from the QAT
    model with quantize-dequantize pairs on the inputs of weighted layers only, BatchNorm folded:
    every convolution and the classifier read dequantized INT8 inputs and weights, no pair sits
    before an add or an activation, the weights are the QAT model's integers (pruned zeros included;
    within one step of the converted model's, which re-observes each weight at conversion), and
    OpenVINO's top-1 on it is within 3 points (11 images) of the PyTorch INT8 model's."""
    int8, pruned, deployed, onnx_path = int8_artifacts
    qat_path, ov_path = str(Path(deployed).parent / "qat.pt"), str(Path(deployed).parent / "ov.onnx")
    with pytest.raises(PqdError, match="fake-quantized model.*--source"):
        export_onnx(deployed, ov_path, runtime="openvino")
    assert export_onnx(deployed, ov_path, source=qat_path, runtime="openvino")["int8_path"] == "weighted_inputs"
    graph = onnx.load(ov_path).graph
    made_by = {o: n for n in graph.node for o in n.output}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weighted) == len(quant.int8_layers(int8)) and "BatchNormalization" not in {n.op_type for n in graph.node}
    for n in weighted:
        x = made_by[n.input[0]]
        x = made_by[x.input[0]] if x.op_type == "Flatten" else x
        assert x.op_type == "DequantizeLinear" and made_by[n.input[1]].op_type == "DequantizeLinear", n.name
    readers = {
        n.op_type for n in graph.node for i in n.input if i in made_by and made_by[i].op_type == "DequantizeLinear"
    }
    assert readers <= {"Conv", "Gemm", "MatMul", "Flatten"}, readers
    every_op = sum(n.op_type == "QuantizeLinear" for n in onnx.load(onnx_path).graph.node)  # activations only
    on_activations = [n for n in graph.node if n.op_type == "QuantizeLinear" and _const(graph, n.input[0]) is None]
    assert len(on_activations) <= len(weighted) < every_op
    # the weights' integers, recomputed from the exported float weights and their scales, are the
    # PyTorch INT8 model's (the same BatchNorm folding and per-channel scales)
    ints = []
    for n in weighted:
        q = made_by[made_by[n.input[1]].input[0]]
        w, scale = _const(graph, q.input[0]), _const(graph, q.input[1])
        ints.append(np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -128, 127).astype(np.int8))
    torch_ints = [t.numpy() for t in quant.int8_layers(int8).values()]
    # layers matched by content; conversion re-observes each weight once more, so a few integers move by one step
    near = [max((np.abs(a.astype(int) - b) <= 1).mean() for b in torch_ints if b.shape == a.shape) for a in ints]
    same = sum(max((a == b).sum() for b in torch_ints if b.shape == a.shape) for a in ints)
    assert min(near) == 1.0 and same / sum(a.size for a in torch_ints) > 0.95
    inner = [a for a in ints if a.ndim == 4 and a.shape[1] > 3]
    assert sum((a == 0).sum() for a in inner) / sum(a.size for a in inner) >= 0.5
    ov = make_runner("openvino", deployed, ov_path, 1)
    assert abs(evaluate(ov, digits) - evaluate(int8, digits)) <= 3.1  # see test_onnx_runtimes_match_...


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_runtime_without_an_exported_file_is_one_clear_error(int8_artifacts, runtime):
    with pytest.raises(PqdError, match="needs the exported deployed.onnx"):
        make_runner(runtime, int8_artifacts[2], None, 1)
    with pytest.raises(PqdError, match="unknown runtime 'tensorrt'"):
        make_runner("tensorrt", "x.pt", None, 1)


def test_preactivation_networks_export_their_standalone_int8_batchnorm(tmp_path):
    """WRN's pre-activation BN-ReLU stays a quantized op after conversion; pqd registers its
    ONNX mapping (the exporter has none)."""
    q = quant.prepare_qat(build_model("wrn28_10", 10, 0.125), 32)
    with torch.no_grad():
        for _ in range(3):
            q(torch.randn(16, 3, 32, 32))
    int8 = quant.convert(q)
    assert any(
        "batch_norm2d" in str(n.target) or "BNReLU2d" in type(getattr(int8, str(n.target), None)).__name__
        for n in int8.graph.nodes
        if n.op in ("call_module", "call_function")
    )
    meta = {"backbone": "wrn28_10", "num_classes": 10, "width": 0.125, "form": "int8", "reduce_range": True}
    save_checkpoint(tmp_path / "w.pt", int8.state_dict(), meta)
    export_onnx(str(tmp_path / "w.pt"), str(tmp_path / "w.onnx"))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "w.onnx")).graph.node]
    assert "BatchNormalization" in ops
    x = torch.randn(32, 3, 32, 32)
    for runtime in ("onnxruntime", "openvino"):
        run = make_runner(runtime, str(tmp_path / "w.pt"), str(tmp_path / "w.onnx"), 1)
        assert (run(x) - int8(x)).abs().max().item() < 0.25 * int8(x).abs().max().item(), runtime


def test_every_catalogued_runtime_is_in_the_schema_and_runs():
    """One catalogue entry per runtime (pqd.catalog.RUNTIMES) is the single source: the schema's
    choices are generated from it, and each entry's runner and package resolve."""
    from pqd import config as pc
    from pqd.catalog import RUNTIMES, resolve
    from pqd.runtimes import runtime_versions

    schema = pc.build_schema("config/schema/config.schema.yaml")
    assert schema["properties"]["measure"]["properties"]["runtime"]["enum"] == RUNTIMES.names()
    for name in RUNTIMES:
        assert callable(resolve(RUNTIMES.get(name).runner)) and runtime_versions(name)["runtime"] == name
    assert [n for n in RUNTIMES if RUNTIMES.get(n).onnx] == ["onnxruntime", "openvino"]


def test_int8_vit_exports_from_its_fake_quantized_model_and_agrees_in_both_onnx_runtimes(digits, tmp_path):
    """The QAT ViT (trained briefly on digits) is exported as a QDQ graph from its fake-quantized
    form (catalogue: onnx_int8 fake_quant): integer MatMuls in the runtimes, LayerNorm/softmax/GELU
    left float. Both runtimes' top-1 lie within 1 point of the PyTorch fake-quantized model's, and
    without the QAT source the export is one clear error."""
    torch.manual_seed(0)
    vit = build_model("vit", 10, 0.5)
    quiet = Callbacks(log=io.StringIO())
    fit(
        vit, digits, FitSettings(epochs=15, lr=1e-3, batch_size=64, optimizer="adamw"), callbacks=quiet
    )  # ~50% on digits
    q = quant.prepare_qat(vit, 32)
    fit(q, digits, FitSettings(epochs=1, lr=5e-4, batch_size=64, optimizer="adamw"), callbacks=quiet)
    meta = {"backbone": "vit", "num_classes": 10, "width": 0.5, "reduce_range": True}
    save_checkpoint(tmp_path / "v_qat.pt", q.state_dict(), {**meta, "form": "qat"})
    from pqd.measure import deploy

    deploy(str(tmp_path / "v_qat.pt"), str(tmp_path / "v.pt"))
    with pytest.raises(PqdError, match="exported from its fake-quantized model.*--source"):
        export_onnx(str(tmp_path / "v.pt"), str(tmp_path / "v.onnx"))
    rec = export_onnx(
        str(tmp_path / "v.pt"), str(tmp_path / "v_ov.onnx"), source=str(tmp_path / "v_qat.pt"), runtime="openvino"
    )
    assert rec["int8_path"] == "weighted_inputs"
    ov_top1 = evaluate(make_runner("openvino", str(tmp_path / "v.pt"), str(tmp_path / "v_ov.onnx"), 1), digits)
    assert not (tmp_path / "v.onnx").exists()
    rec = export_onnx(str(tmp_path / "v.pt"), str(tmp_path / "v.onnx"), source=str(tmp_path / "v_qat.pt"))
    assert rec["int8_path"] == "fake_quant"
    graph = onnx.load(str(tmp_path / "v.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul", "LayerNormalization", "Softmax"} <= ops
    fake_top1 = evaluate(quant.for_export(q), digits)
    for runtime in ("onnxruntime", "openvino"):
        run = make_runner(runtime, str(tmp_path / "v.pt"), str(tmp_path / "v.onnx"), 1)
        top1 = evaluate(run, digits)
        assert fake_top1 > 30 and abs(top1 - fake_top1) <= 1.0, (runtime, top1, fake_top1)
    assert abs(ov_top1 - fake_top1) <= 1.0, ("openvino weighted_inputs", ov_top1, fake_top1)


def test_the_runtimes_default_precision_is_a_timed_baseline_and_evaluated(int8_artifacts, digits, tmp_path):
    """OpenVINO runs an FP32 model in bf16 by default on CPUs with AVX-512 BF16 or AMX; pqd deploys
    FP32 at forced f32. The latency job times dense both ways, records what each ran in, and names
    the fastest untrained dense form as the baseline of speedup_vs_baseline; evaluating an FP32
    model also scores it in the runtime's default precision."""
    from pqd.measure import BASELINES, cpu_info, latency
    from pqd.measure import evaluate as evaluate_deployed
    from pqd.params import MeasureSettings

    _, _, deployed, _ = int8_artifacts
    qat_path, ov_path = str(Path(deployed).parent / "qat.pt"), str(tmp_path / "ov.onnx")
    export_onnx(deployed, ov_path, source=qat_path, runtime="openvino")
    dense = build_model("resnet20", 10, 0.25).eval()
    save_checkpoint(
        tmp_path / "dense.pt",
        dense.state_dict(),
        {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "fp32"},
    )
    export_onnx(str(tmp_path / "dense.pt"), str(tmp_path / "dense.onnx"))
    settings = MeasureSettings(runtime="openvino", threads=1, runs=20, warmup=2, rounds=4)
    lat = latency(
        deployed, str(tmp_path / "dense.pt"), settings, onnx_path=ov_path, dense_onnx=str(tmp_path / "dense.onnx")
    )
    reduced = {"avx512_bf16", "amx_bf16"} & set(cpu_info()["isa"])
    precision = lat["inference_precision"]
    assert precision["dense_runtime"] == "f32" and precision["dense_fp32"] == "f32"
    assert (precision["dense_default"] in ("bf16", "f16")) if reduced else precision["dense_default"] == "f32"
    assert lat["baseline"] in BASELINES and len(lat["dense_default"]["round_ms"]) == 4
    assert lat["speedup_vs_baseline"] == pytest.approx(lat[lat["baseline"]]["median_ms"] / lat["model"]["median_ms"])
    assert lat["speedup_vs_baseline"] <= lat["speedup_vs_dense_same_runtime"] + 1e-9  # the fastest baseline
    ev = evaluate_deployed(
        str(tmp_path / "dense.pt"), digits, "openvino", str(tmp_path / "dense.onnx"), default_precision=True
    )
    assert ev["default_precision"] == precision["dense_default"]
    assert abs(ev["accuracy_default_precision"] - ev["accuracy"]) <= 2.0  # bf16 rounding moves few predictions
    with pytest.raises(PqdError, match="no reduced default precision"):
        make_runner("onnxruntime", str(tmp_path / "dense.pt"), str(tmp_path / "dense.onnx"), 1, precision="default")


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime", "torch"])
def test_throughput_is_measured_beside_latency_for_the_model_and_its_baseline(int8_artifacts, tmp_path, runtime):
    """Images/s at the runtime's throughput setting (OpenVINO's THROUGHPUT hint with the requests it
    calls optimal; a batch of 16 in ONNX Runtime), for the deployed model and the baseline, timed in
    alternating rounds; counted right: at one thread, one stream and one request OpenVINO's images/s
    is the same work as batch-1 latency, so the two agree within the machine's drift."""
    from pqd.measure import latency
    from pqd.params import MeasureSettings
    from pqd.runtimes import THROUGHPUT_BATCH

    _, _, deployed, _ = int8_artifacts
    dense = build_model("resnet20", 10, 0.25).eval()
    meta = {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "fp32"}
    save_checkpoint(tmp_path / "dense.pt", dense.state_dict(), meta)
    onnx = dense_onnx = None  # PyTorch runs the checkpoints themselves
    if runtime != "torch":
        onnx, dense_onnx = str(tmp_path / "model.onnx"), str(tmp_path / "dense.onnx")
        export_onnx(deployed, onnx, source=str(Path(deployed).parent / "qat.pt"), runtime=runtime)
        export_onnx(str(tmp_path / "dense.pt"), dense_onnx)
    settings = MeasureSettings(runtime=runtime, threads=1, runs=200, warmup=5, rounds=8, throughput_rounds=4)
    lat = latency(deployed, str(tmp_path / "dense.pt"), settings, onnx_path=onnx, dense_onnx=dense_onnx)
    tput = lat["throughput"]
    # every untrained dense form on offer is timed at throughput; the one with the most images/s is its baseline
    assert {"model", lat["baseline"], lat["throughput_baseline"]} <= set(tput)
    for t in tput.values():
        assert t["images_per_s"] > 0 and len(t["round_ms_per_image"]) == 4
    dense_forms = {k: v["images_per_s"] for k, v in tput.items() if k != "model"}
    assert lat["throughput_baseline"] == max(dense_forms, key=dense_forms.get)
    assert lat["throughput_vs_baseline"] == pytest.approx(
        tput["model"]["images_per_s"] / tput[lat["throughput_baseline"]]["images_per_s"]
    )
    model = tput["model"]
    if runtime != "openvino":
        assert (model["batch"], model["streams"], model["requests"]) == (THROUGHPUT_BATCH, 1, 1)
    else:
        assert model["batch"] == 1 and model["streams"] == 1 and model["requests"] >= 1
        # a miscount (one image per request, or per burst of 4) is off by 4x. At one stream and one request
        # images/s is the work of batch-1 latency: the two timed in the same rounds (the latency job times
        # them one after the other, where this shared CPU's drift alone once pushed the ratio out)
        from pqd.runtimes import openvino_throughput

        tp = openvino_throughput("openvino", deployed, onnx, 1, "f32", 32)
        one = make_runner("openvino", deployed, onnx, 1)
        res = interleaved_latency({"tp": tp, "one": one}, runs=40, warmup=5, rounds=20, threads=1, image_size=32)
        assert 0.3 < (tp.images / res["tp"]["median_ms"]) / (1 / res["one"]["median_ms"]) < 3.3
    off = dataclasses.replace(settings, throughput_rounds=0)
    assert "throughput" not in latency(deployed, str(tmp_path / "dense.pt"), off, onnx_path=onnx, dense_onnx=dense_onnx)
