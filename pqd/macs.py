"""Counting a model's cost: multiply-accumulates of one image, and parameters.

MACs, not FLOPs, and counted on the FP32 skeleton: an INT8 kernel does the same
multiply-accumulates, and unstructured zeros still count because dense kernels multiply them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pqd.constants import input_shape


def macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one ``image_size`` image through ``model`` (an FP32 module): convolutions,
    matrix products and attention, counted by PyTorch's FLOP counter (2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(*input_shape(1, image_size)))
    model.train(was_training)
    return counter.get_total_flops() // 2


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def counts(model: nn.Module, image_size: int) -> dict[str, int]:
    """``{"macs", "params"}`` of ``model``: what a structure-removing stage records before and after."""
    return {"macs": macs(model, image_size), "params": param_count(model)}


def size_change(before: dict[str, int], after: dict[str, int]) -> dict:
    """The record every structure-removing stage (``s``, ``b``) writes: MACs and parameters before
    and after (:func:`counts`) and the fractions kept."""
    return {
        "macs_before": before["macs"],
        "macs_after": after["macs"],
        "params_before": before["params"],
        "params_after": after["params"],
        "macs_kept": after["macs"] / before["macs"],
        "params_kept": after["params"] / before["params"],
    }
