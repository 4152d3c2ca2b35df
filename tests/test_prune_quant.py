"""Real effects of P and Q: sparsity reached, kept through QAT and into the INT8 integers."""

import torch
import torch.nn as nn

from pqd import masks as prune
from pqd import measure
from pqd import qat as quant
from pqd.models import build_model
from pqd.stages.prune import cubic_schedule
from pqd.train import Callbacks, FitSettings, fit


def _pruned_model(sparsity=0.6):
    m = build_model("resnet20", 10, 0.5)
    layers = prune.prunable_layers(m)
    masks = prune.global_magnitude_prune(m, sparsity, layers)
    return m, layers, masks


def test_global_magnitude_pruning_reaches_the_target_and_spares_first_conv_and_classifier():
    m, layers, masks = _pruned_model(0.6)
    names = [n for n, _ in layers]
    assert "conv1" not in names and "linear" not in names and len(names) == 18
    s = prune.sparsity({n: mod.weight for n, mod in layers})
    assert abs(s - 0.6) < 1e-3
    assert bool((m.conv1.weight != 0).all()) and bool((m.linear.weight != 0).all())
    # global: layers end up with different sparsities
    per_layer = {n: prune.sparsity({n: mod.weight}) for n, mod in layers}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05
    # the kept weights are the largest: every pruned |w| <= every kept |w|
    w = torch.cat([mod.weight.detach().flatten() for _, mod in layers])
    kept = torch.cat([mod.weight.detach().flatten()[masks[f"{n}.weight"].flatten()] for n, mod in layers])
    assert kept.abs().min() >= 0 and (w == 0).sum() >= 0.6 * w.numel() - 1


def test_cubic_schedule_ramps_to_target_and_one_shot_jumps():
    assert cubic_schedule(0.8, 0, 5, gradual=False) == 0.8
    ramp = [cubic_schedule(0.8, e, 5, gradual=True) for e in range(5)]
    assert ramp == sorted(ramp) and ramp[0] < 0.8 and abs(ramp[3] - 0.8) < 1e-9 and ramp[4] == ramp[3]


def test_zeros_survive_training_qat_and_int8_conversion(digits):
    m, layers, masks = _pruned_model(0.5)
    pruned_at = {f"{n}.weight": mod.weight.detach() == 0 for n, mod in layers}
    # FP32 fine-tuning with the mask hook
    fit(m, digits, FitSettings(epochs=1, lr=0.01), callbacks=Callbacks(step=[prune.mask_hook(masks)]))
    # QAT fine-tuning with masks re-derived from zeros (what a later stage does)
    qat = quant.prepare_qat(m, 32)
    assert quant.is_qat(qat)
    fit(
        qat,
        digits,
        FitSettings(epochs=1, lr=0.01),
        callbacks=Callbacks(step=[prune.mask_hook(prune.masks_from_zeros(qat))]),
    )
    qparams = dict(qat.named_parameters())
    for name, zero in pruned_at.items():
        assert bool((qparams[name].detach()[zero] == 0).all()), name
    int8 = quant.convert(qat)
    ints = quant.int8_layers(int8)
    for name, zero in pruned_at.items():
        layer = name.removesuffix(".weight")
        assert ints[layer].dtype == torch.int8
        assert bool((ints[layer][zero] == 0).all()), layer
    assert prune.sparsity({n: ints[n.removesuffix(".weight")] for n in pruned_at}) >= 0.5


def test_converted_model_runs_integer_kernels_with_int8_weights(tmp_path):
    m = build_model("resnet20", 10, 1.0)
    qat = quant.prepare_qat(m, 32)
    qat(torch.randn(8, 3, 32, 32))
    int8 = quant.convert(qat)
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    kinds = {type(mod) for mod in int8.modules()}
    assert {nniq.ConvReLU2d, nnq.Conv2d, nnq.Linear} <= kinds
    assert not any(isinstance(mod, (nn.Conv2d, nn.Linear)) for mod in int8.modules())
    ops = {str(n.target) for n in int8.graph.nodes if n.op == "call_function"}
    assert any("quantized.add_relu" in o for o in ops), ops
    for w in quant.int8_layers(int8).values():
        assert w.dtype == torch.int8
    x = torch.randn(2, 3, 32, 32)
    # the deployed checkpoint reloads (weights_only) into an identical INT8 model
    from pqd.checkpoint import save_checkpoint
    from pqd.model_io import load_model

    meta = {"backbone": "resnet20", "num_classes": 10, "width": 1.0, "form": "int8", "reduce_range": True}
    save_checkpoint(tmp_path / "int8.pt", int8.state_dict(), meta)
    again, _ = load_model(str(tmp_path / "int8.pt"))
    assert torch.equal(int8(x), again(x))
    # and, at full width, over 3x smaller than the FP32 file (4x on the weights, minus scales and framing)
    save_checkpoint(tmp_path / "fp32.pt", m.state_dict(), {**meta, "form": "fp32"})
    ratio = measure.sizes(str(tmp_path / "fp32.pt"))["bytes"] / measure.sizes(str(tmp_path / "int8.pt"))["bytes"]
    assert ratio > 3.0


def test_interleaved_latency_reports_medians_over_at_least_200_runs():
    m = build_model("resnet20", 10, 0.25)
    res = measure.interleaved_latency({"a": m, "b": m}, runs=200, warmup=2, rounds=10, threads=1, image_size=32)
    for r in res.values():
        assert r["runs"] >= 200 and 0 < r["median_ms"] <= r["p90_ms"]


def test_interleaved_latency_times_inference_without_autograd():
    """An FP32 module called with grad enabled records a graph on every call (25% slower for
    ResNet-20 here) while INT8 modules have no grad parameters: timing must not favour INT8."""
    seen = []

    def model(x):
        seen.append(torch.is_grad_enabled())
        return x

    measure.interleaved_latency({"m": model}, runs=4, warmup=1, rounds=2, threads=1, settle_ms=0, image_size=32)
    assert seen and not any(seen)


def test_int8_peak_is_timed_with_the_models_and_is_the_best_of_its_kernels():
    m = build_model("resnet20", 10, 0.25)
    res, peak = measure.timed_with_peak({"m": m}, 1, runs=4, warmup=1, rounds=2, settle_ms=0, image_size=32)
    assert set(res) == {"m"} and res["m"]["runs"] >= 4
    kernels = peak["int8_peak_by_kernel"]
    assert set(kernels) == {"fbgemm_gemm", "openvino_conv3x3"} and min(kernels.values()) > 1e8
    assert peak["int8_peak_macs_per_s"] == max(kernels.values())
