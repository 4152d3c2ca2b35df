"""INT8 quantization-aware training mechanics: prepare, freeze, convert (used by stage ``q``,
by every stage that trains a fake-quantized model, and by deployment).

Path chosen: torch.ao FX graph mode. It traces any of our backbones without
per-architecture code (conv-bn(-relu) fusion and quantized residual adds are found
by pattern matching), its converted model runs PyTorch's real INT8 kernels
(``quantized::conv2d`` / ``linear`` on the x86 engine, fbgemm/oneDNN underneath),
and both the QAT model and the INT8 model round-trip through plain state dicts that
load with ``weights_only=True``. torch.ao is deprecated in favour of torchao's PT2E
flow, whose CPU INT8 speed comes from Inductor code generation (a C++ compiler at
deploy time, minutes on 2 cores) rather than from a loadable artifact; see docs/runtimes.md.

QConfig: weights per-channel symmetric int8, activations per-tensor affine uint8,
both with plain ``FakeQuantize`` modules (not the fused moving-average kind), so the
learned quantization parameters stay exportable.
"""

from __future__ import annotations

import copy
import operator
import warnings
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.constants import input_shape

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
# sigmoid/hardsigmoid (squeeze-excitation gates) want fixed output ranges: they stay float, once per model
warnings.filterwarnings("ignore", message=r".*QConfig must specify a FixedQParamsObserver.*")

import torch.ao.nn.qat as nnqat  # noqa: E402
import torch.ao.quantization as tq  # noqa: E402
from torch.ao.nn.intrinsic import qat as nniqat  # noqa: E402
from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx  # noqa: E402

BACKEND = "x86"


def qconfig(reduce_range: bool = True) -> tq.QConfig:
    """Per-channel symmetric int8 weights, per-tensor affine uint8 activations.

    ``reduce_range`` keeps activations to 7 bits, which the x86 backend wants on CPUs
    without VNNI to avoid saturating the int16 accumulation of fbgemm's kernels.
    """
    act = tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=127 if reduce_range else 255,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )
    weight = tq.FakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver,
        quant_min=-128,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return tq.QConfig(activation=act, weight=weight)


def set_engine() -> None:
    if BACKEND in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = BACKEND


# Ops a backbone can ask to keep float (``qat_float_ops`` on the model class), by name.
FLOAT_OPS = {"add": (operator.add, torch.add)}


def prepare_qat(model: nn.Module, image_size: int, reduce_range: bool = True) -> nn.Module:
    """FP32 model -> fake-quantized FX GraphModule (in train mode), fusing conv-bn-relu, traced at
    ``image_size`` (FX traces symbolically; the example batch only seeds shape checks). Ops the
    model lists in ``qat_float_ops`` stay float (the ViT's residual adds, see pqd/models/vit.py)."""
    set_engine()
    # Traced in eval mode, then switched to training: symbolic tracing records Python values as
    # constants, so code that branches on ``self.training`` outside a module call (torchvision's
    # stochastic depth in EfficientNet and ConvNeXt, functional dropout, auxiliary heads) would
    # keep its training behaviour forever, in the INT8 model and its ONNX export too (random
    # ops in the deployed graph). Traced in eval mode, the graph is the inference graph; modules
    # (BatchNorm, nn.Dropout, the fused QAT conv-bn) still follow train()/eval().
    model = model.cpu().eval()
    mapping = tq.QConfigMapping().set_global(qconfig(reduce_range))
    for name in getattr(model, "qat_float_ops", ()):
        for op in FLOAT_OPS[name]:
            mapping = mapping.set_object_type(op, None)
    return prepare_qat_fx(model, mapping, example_inputs=(torch.randn(*input_shape(2, image_size)),)).train()


def convert(qat_model: nn.Module) -> nn.Module:
    """Fake-quantized model -> INT8 model running quantized kernels (CPU, eval mode)."""
    set_engine()
    return convert_fx(qat_model.cpu().eval())


def for_export(qat_model: nn.Module) -> nn.Module:
    """The fake-quantized model frozen for ONNX export: eval mode, observers off, so each
    FakeQuantize is a fixed quantize-dequantize with its learned scale (exported as a
    QuantizeLinear/DequantizeLinear pair) and nothing updates a buffer (an in-place copy the
    exporter cannot map)."""
    model = qat_model.cpu().eval()
    model.apply(tq.disable_observer)
    return model


def is_qat(model: nn.Module) -> bool:
    return any(isinstance(m, tq.FakeQuantizeBase) for m in model.modules())


def freeze_hook(epochs: int, freeze_at: float) -> Callable[[nn.Module, int], None]:
    """Epoch hook: from epoch ``freeze_at * epochs`` on, freeze observers and BN statistics,
    the usual end-of-QAT recipe so the last epochs fine-tune against fixed ranges."""
    start = int(round(freeze_at * epochs))

    def hook(model: nn.Module, epoch: int) -> None:
        if is_qat(model) and epoch >= start:
            model.apply(tq.disable_observer)
            model.apply(nniqat.freeze_bn_stats)

    return hook


def int8_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Integer weight tensors (``int_repr``) of every quantized conv/linear of an INT8 model."""
    out = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if callable(w) and type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            q = w()
            if q.is_quantized:
                out[name] = q.int_repr()
    return out


# Where an INT8 graph carries its quantize-dequantize pairs (:attr:`pqd.catalog.RuntimeSpec.int8_placement`).
# ``every_op``: after every quantized op, as FX QAT trains and converts it: what ONNX Runtime fuses into
# its QLinear* kernels. ``weighted_inputs``: on the inputs of weighted layers (conv, linear, matrix
# products) only, NNCF's placement: what OpenVINO fuses best, activations and residual adds running
# as post-ops of the integer convolutions (bench/byo_latency.py: 1.2-1.7x faster on MobileNetV3 and
# EfficientNet, equal on ResNet-18; ONNX Runtime on such a graph runs float convolutions, 3x slower).
PLACEMENTS = ("every_op", "weighted_inputs")

_WEIGHTED_FUNCS = {torch.matmul, operator.matmul, torch.bmm, F.linear, F.conv2d}
# ops that only move or select values (and max pooling, which commutes with a monotone quantizer):
# a quantizer before them still quantizes the weighted layer's input behind them
_PASS_METHODS = {
    "view",
    "reshape",
    "permute",
    "transpose",
    "flatten",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "chunk",
    "split",
    "unbind",
    "expand",
}
_PASS_FUNCS = {
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    torch.unbind,
    operator.getitem,
}
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity, nn.MaxPool2d)


def _reaches_weighted(node: torch.fx.Node, modules: dict) -> bool:
    """Whether ``node``'s value enters a weighted layer, itself or through value-moving ops only."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):  # QAT and fused QAT modules subclass these
            return True
        passes = isinstance(m, _PASS_MODULES)
    elif node.op == "call_function":
        if node.target in _WEIGHTED_FUNCS:
            return True
        passes = node.target in _PASS_FUNCS
    else:
        passes = node.op == "call_method" and node.target in _PASS_METHODS
    return passes and any(_reaches_weighted(u, modules) for u in node.users)


class _HardsigmoidAsClamp(nn.Module):
    """``hardsigmoid`` written as ``clamp(x + 3, 0, 6) / 6`` (identical values): OpenVINO recognises
    this form as its HSigmoid and fuses it into the convolution before it, while ONNX's
    ``HardSigmoid`` op runs as a separate float layer (squeeze-excitation gates of MobileNetV3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def _fold_batchnorm(model: nn.Module) -> None:
    """Replace each fused QAT conv-BN(-ReLU) by a QAT conv(-ReLU) with the BatchNorm folded in
    (eval mode: exactly what the fused module computes, and what :func:`convert` folds too), its
    weight fake-quantizer kept: the runtime then sees one quantized convolution, not a convolution,
    a rescale and a BatchNorm."""
    for name, m in list(model.named_modules()):
        if not isinstance(m, nniqat.ConvBn2d):  # ConvBnReLU2d subclasses it
            continue
        bn = m.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        cls = nniqat.ConvReLU2d if isinstance(m, nniqat.ConvBnReLU2d) else nnqat.Conv2d
        folded = cls(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            m.groups,
            True,
            m.padding_mode,
            qconfig=m.qconfig,
        )
        with torch.no_grad():
            folded.weight.copy_(m.weight * scale.reshape(-1, 1, 1, 1))
            bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
            folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
        folded.weight_fake_quant = m.weight_fake_quant
        model.set_submodule(name, folded.eval())


def _symmetric_activations(model: nn.Module, reduce_range: bool) -> None:
    """Activation quantizers over ranges that never go negative (after ReLU, the input of most
    convolutions) made symmetric, zero point 0, over the range QAT observed: [0, 127] with
    ``reduce_range`` (the 7 bits CPUs without VNNI need), else [0, 255]. OpenVINO's integer kernels
    take those without zero-point compensation (NNCF's form too). The step is hi / 127 against the
    trained (hi - lo) / 127: the same where the range starts at 0 (after ReLU), coarser by hi / (hi - lo)
    where it starts above (a sigmoid gate). Signed ranges keep the trained affine form: made symmetric
    signed INT8, OpenVINO's INT8 linear layers on an AVX2 CPU without VNNI lost 25 points of top-1
    on the test ViT (ONNX Runtime and PyTorch did not), and ONNX has no 7-bit signed range."""
    for m in model.modules():
        if not isinstance(m, tq.FakeQuantize) or m.qscheme != torch.per_tensor_affine:
            continue
        lo, hi = float(m.activation_post_process.min_val), float(m.activation_post_process.max_val)
        if not (torch.isfinite(torch.tensor([lo, hi])).all() and hi > lo):
            continue  # never observed: keep the quantizer as trained
        if lo < 0:
            continue
        qmax = 127 if reduce_range else 255
        qmin, scale = 0, hi / qmax
        # FakeQuantize.forward takes the integer range from its observer
        m.quant_min = m.activation_post_process.quant_min = qmin
        m.quant_max = m.activation_post_process.quant_max = qmax
        m.scale.fill_(max(scale, 1e-8))
        m.zero_point.zero_()


def weighted_inputs_graph(qat_model: nn.Module, reduce_range: bool = True) -> nn.Module:
    """The fake-quantized model rearranged for a ``weighted_inputs`` runtime (OpenVINO), for export.

    Starting from :func:`for_export` (learned scales, observers off), a quantizer stays only on the
    edges into weighted layers (an activation quantizer that feeds both a convolution and a residual
    add quantizes the convolution's input only); BatchNorm is folded into the convolutions;
    non-negative activation quantizers become symmetric over their trained ranges; ``hardsigmoid``
    takes the form the runtime fuses. Convolutions and linear layers keep their learned per-channel INT8 weights and their INT8
    inputs; what runs in float between them (activations, adds, gates) is what the runtime fuses into
    them. So the deployed graph is not bit-identical to the trained one: it has fewer rounding points,
    and the same steps but where a non-negative range starts above 0. Its accuracy is what pqd measures and reports, in the runtime,
    on every test image (with PyTorch's converted model's beside it, ``accuracy_torch``)."""
    model = for_export(copy.deepcopy(qat_model))
    modules = dict(model.named_modules(remove_duplicate=False))
    for node in list(model.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], tq.FakeQuantizeBase):
            continue
        for user in list(node.users):
            if not _reaches_weighted(user, modules):
                user.replace_input_with(node, node.args[0])
        if not node.users:
            model.graph.erase_node(node)
    model.graph.lint()
    model.recompile()
    model.delete_all_unused_submodules()
    _fold_batchnorm(model)
    _symmetric_activations(model, reduce_range)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Hardsigmoid):
            model.set_submodule(name, _HardsigmoidAsClamp())
    return model.eval()
