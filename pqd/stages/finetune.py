"""Stage ``f``: plain cross-entropy fine-tuning, and the equal-budget control.

As a letter in a pipeline, ``f`` trains for its own epochs at its own learning rate. The control
``ctl-<pipeline>`` (pqd.config.control_params) hands it ``segments``: one cosine cycle per stage
of that pipeline, with that stage's epochs and learning rate, so that the control gets exactly the
training the pipeline's stages got, minus the compression.
"""

from __future__ import annotations

import torch.nn as nn


def run(model: nn.Module, ctx) -> nn.Module:
    segments = ctx.settings.get("segments") or [{"letter": "f", "epochs": ctx.epochs, "lr": ctx.settings["lr"]}]
    done = []
    for seg in segments:
        before = len(ctx.record.get("train", []))
        ctx.fit(model, lr=seg["lr"], epochs=seg["epochs"], masks={})
        done.append({**seg, "epochs_trained": len(ctx.record.get("train", [])) - before})
    ctx.record["segments"] = done
    return model
