"""INT8 quantization-aware training mechanics: prepare, freeze, convert (used by stage ``q``,
by every stage that trains a fake-quantized model, and by deployment).

Path chosen: torch.ao FX graph mode. It traces any of our backbones without
per-architecture code (conv-bn(-relu) fusion and quantized residual adds are found
by pattern matching), its converted model runs PyTorch's real INT8 kernels
(``quantized::conv2d`` / ``linear`` on the x86 engine, fbgemm/oneDNN underneath),
and both the QAT model and the INT8 model round-trip through plain state dicts that
load with ``weights_only=True``. torch.ao is deprecated in favour of torchao's PT2E
flow, whose CPU INT8 speed comes from Inductor code generation (a C++ compiler at
deploy time, minutes on 2 cores) rather than from a loadable artifact; see README.

QConfig: weights per-channel symmetric int8, activations per-tensor affine uint8,
both with plain ``FakeQuantize`` modules (not the fused moving-average kind), so the
learned quantization parameters stay exportable.
"""

from __future__ import annotations

import operator

import warnings
from typing import Callable

import torch
import torch.nn as nn

from pqd.constants import input_shape

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
# sigmoid/hardsigmoid (squeeze-excitation gates) want fixed output ranges: they stay float, once per model
warnings.filterwarnings("ignore", message=r".*QConfig must specify a FixedQParamsObserver.*")

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
        observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=127 if reduce_range else 255,
        dtype=torch.quint8, qscheme=torch.per_tensor_affine,
    )
    weight = tq.FakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
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
