"""Stage ``l``: low-rank factorisation of conv/linear layers (:mod:`pqd.factorize`), then
fine-tuning. Per layer the rank is the smallest keeping ``energy`` of the squared singular
values, or ``rank_ratio`` of the full rank; a layer is replaced only when that shrinks it."""

from __future__ import annotations

import torch.nn as nn

from pqd.errors import PqdError
from pqd.factorize import factorize_model


def run(model: nn.Module, ctx) -> nn.Module:
    s = ctx.settings
    layers = factorize_model(
        model,
        energy=s.get("energy"),
        rank_ratio=s.get("rank_ratio"),
        exclude_first_conv=s["exclude_first_conv"],
        exclude_classifier=s["exclude_classifier"],
    )
    if not layers:
        raise PqdError("stage l found no layer that a factor pair would make smaller; lower stages.l.energy")
    ctx.record["factorized"] = layers
    ctx.fit(model, lr=s["lr"], masks={})
    return model
