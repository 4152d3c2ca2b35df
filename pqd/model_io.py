"""Rebuild a model from a checkpoint's metadata, in whichever form it was saved.

Forms: ``fp32`` (plain backbone), ``qat`` (FX fake-quantized GraphModule, still
trainable) and ``int8`` (converted, quantized kernels). The QAT and INT8 graphs are
re-derived from the FP32 backbone by the same deterministic prepare/convert calls,
then the saved tensors are loaded, so no code object is ever unpickled.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pqd import arch, qat
from pqd.checkpoint import load_checkpoint
from pqd.constants import input_shape
from pqd.errors import PqdError
from pqd.models import backbone_of, build_model


def build_from_meta(meta: dict) -> nn.Module:
    spec = backbone_of(meta)
    model = build_model(spec, meta["num_classes"], meta["width"])
    if meta.get("arch"):  # reshaped by structured pruning / low-rank factorisation
        model = arch.apply(model, meta["arch"])
    form = meta.get("form", "fp32")
    if form in ("qat", "int8"):
        model = qat.prepare_qat(model, spec.image_size, meta.get("reduce_range", True))
        if form == "int8":
            # One observed batch gives every observer a shape; the loaded state replaces it all.
            with torch.no_grad():
                model(torch.zeros(*input_shape(2, spec.image_size)))
            model = qat.convert(model)
    elif form != "fp32":
        raise PqdError(f"unknown model form {form!r} in checkpoint metadata")
    return model


def load_model(path: str) -> tuple[nn.Module, dict]:
    """Model and metadata of the pqd checkpoint at ``path``."""
    blob = load_checkpoint(path)
    meta = blob["meta"]
    model = build_from_meta(meta)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise PqdError(
            f"{path} does not match its recorded architecture ({str(e).splitlines()[0]}); delete it and rerun its rule"
        ) from None
    return model, meta
