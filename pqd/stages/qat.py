"""Stage ``q``: INT8 quantization-aware training (torch.ao FX graph mode, x86 backend).

The mechanics (qconfig, prepare, observer freezing, conversion) are in :mod:`pqd.qat`; the
runner's training loop freezes observers and BatchNorm statistics for the last
``quant.freeze_at`` of the epochs of any stage that trains a fake-quantized model.
"""

from __future__ import annotations

import torch.nn as nn

from pqd.qat import is_qat, prepare_qat


def run(model: nn.Module, ctx) -> nn.Module:
    """Make the model fake-quantized (if not already) and train it."""
    if not is_qat(model):
        model = prepare_qat(model, ctx.image_size, ctx.quant["reduce_range"])
    ctx.fit(model, lr=ctx.settings["lr"])
    return model
