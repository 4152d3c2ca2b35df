"""The dense stage: train the FP32 backbone from scratch, or import ``dense.checkpoint``.

It starts every pipeline that does not start with its own stage (``e``). An imported
checkpoint (bring your own model) replaces training: a plain state dict, one wrapped in
``state_dict``, or one with DataParallel's ``module.`` prefix, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import torch.nn as nn

from pqd.checkpoint import foreign_state_dict
from pqd.errors import PqdError


def structural_keys(model: nn.Module) -> set[str]:
    """State-dict keys of buffers that describe structure rather than learned values (modules list
    them in ``structural_buffers``)."""
    return {
        f"{name}.{b}" if name else b for name, m in model.named_modules() for b in getattr(m, "structural_buffers", ())
    }


def import_weights(model: nn.Module, checkpoint: str, backbone: str, width: float) -> None:
    """Load a foreign state dict into ``model``; a mismatch is a one-line error naming the fix."""
    sd = foreign_state_dict(checkpoint)
    own = model.state_dict()
    # Checkpoints from older PyTorch lack BatchNorm's num_batches_tracked counters, which do not
    # affect inference or momentum-based statistics, and checkpoints from other code lack the
    # buffers in which pqd's modules record their structure (``structural_buffers``: an option-A
    # shortcut's channel map), which are right in a fresh unpruned build: take both from it.
    fresh = {k for k in own if k.endswith("num_batches_tracked")} | structural_keys(model)
    sd = {**{k: own[k] for k in fresh if k not in sd}, **sd}
    missing, unexpected = sorted(own.keys() - sd.keys()), sorted(sd.keys() - own.keys())
    if missing or unexpected:
        detail = "; ".join(
            f"{len(keys)} {what} keys (e.g. {', '.join(keys[:2])})"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise PqdError(
            f"checkpoint {checkpoint} does not fit backbone {backbone!r} "
            f"(width {width}): {detail}; pick the backbone it was trained with"
        )
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise PqdError(
            f"checkpoint {checkpoint} has tensors of the wrong shape for {backbone!r} "
            f"(width {width}): {str(e).splitlines()[-1].strip()}"
        ) from None


def run(model: nn.Module, ctx) -> nn.Module:
    checkpoint = ctx.settings.get("checkpoint")
    if checkpoint:
        import_weights(model, checkpoint, ctx.params.backbone.name, ctx.params.width)
        ctx.record["imported_from"] = str(checkpoint)
        ctx.record["epochs"] = 0
    else:
        ctx.fit(model, lr=ctx.settings["lr"], masks={})
    return model
