"""Run one stage: load its input model, apply the stage module, save the result.

The stage modules (:mod:`pqd.prune`, :mod:`pqd.quant`, :mod:`pqd.distill`, ...)
only implement ``run(model, ctx) -> model``; everything they share lives here: the
:class:`StageContext` with the data, settings and the training loop pre-wired with
pruning masks and QAT freezing, and the provenance written into each checkpoint.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from pqd import train as trainer
from pqd.checkpoint import code_version, foreign_state_dict, save_checkpoint
from pqd.data import Data, load_data
from pqd.errors import PqdError
from pqd.model_io import load_model
from pqd.models import build_model
from pqd.pipeline import STAGES


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PqdError("device 'cuda' requested but no CUDA device is visible; set device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_for(params: dict, path: str) -> Data:
    return load_data(path, normalize=params["data"].get("normalize"), augment=params["data"].get("augment"),
                     train_subset=params["data"].get("train_subset"))


@dataclass
class StageContext:
    """What a stage needs: its settings and epochs, the data, and a ready training loop."""

    params: dict
    data: Data
    device: torch.device
    teacher_path: Optional[str] = None
    record: dict = field(default_factory=dict)

    @property
    def settings(self) -> dict:
        return self.params["stage"]

    @property
    def epochs(self) -> int:
        return int(self.params["epochs"])

    @property
    def quant(self) -> dict:
        return self.params["quant"]

    def train_batches(self, n: int, seed: int):
        """The first ``n`` shuffled, augmented training batches for seed ``seed`` (for scoring
        and warm-up passes outside the training loop)."""
        batch = self.params["train"]["batch_size"]
        return self.data.batches("train", batch, shuffle=True, augment=True,
                                 generator=torch.Generator().manual_seed(seed), device=self.device, limit=n * batch)

    def load_teacher(self) -> nn.Module:
        if not self.teacher_path:
            raise PqdError("this stage needs a teacher but none was given")
        teacher, _ = load_model(self.teacher_path)
        teacher.to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def fit(self, model: nn.Module, *, lr: float, loss_fn=trainer.cross_entropy, epoch_hooks=(),
            masks: Optional[dict] = None, epochs: Optional[int] = None) -> None:
        """Train with the shared optimiser settings. Pruning masks (given, or re-derived
        from the model's zeros) are re-applied after every step; a fake-quantized model
        gets its observers and BN statistics frozen for the last part of training."""
        from pqd import prune, quant

        if masks is None:
            masks = prune.masks_from_zeros(model)
        hooks = list(epoch_hooks)
        epochs = self.epochs if epochs is None else epochs
        if quant.is_qat(model):
            hooks.append(quant.freeze_hook(epochs, self.quant["freeze_at"]))
        t = self.params["train"]
        self.record.setdefault("train", [])
        self.record["train"] += trainer.fit(
            model, self.data, epochs=epochs, lr=lr, batch_size=t["batch_size"], momentum=t["momentum"],
            weight_decay=t["weight_decay"], nesterov=t["nesterov"], optimizer=t["optimizer"], seed=self.params["seed"],
            device=self.device,
            loss_fn=loss_fn, epoch_hooks=hooks, step_hooks=[prune.mask_hook(masks)],
            desc=self.params.get("label", "train"),
        )


def _meta(params: dict, form: str, history: list, accuracy: float, arch: Optional[dict] = None) -> dict:
    return {
        "experiment": params["experiment"], "backbone": params["backbone"], "dataset": params["dataset"],
        "num_classes": params["num_classes"], "width": params["width"], "form": form,
        **({"arch": arch} if arch else {}),
        "reduce_range": params.get("quant", {}).get("reduce_range", True), "accuracy": accuracy, "history": history,
        "code_version": code_version(),
    }


def run_dense(params: dict, data_path: str, output: str, checkpoint: Optional[str] = None) -> dict:
    """Train the dense FP32 model, or import ``checkpoint`` (bring your own model)."""
    data = data_for(params, data_path)
    params = {**params, "num_classes": data.num_classes}
    device = pick_device(params["device"])
    torch.manual_seed(params["seed"])
    model = build_model(params["backbone"], data.num_classes, params["width"])
    t0 = time.perf_counter()
    record: dict = {"stage": "dense", "settings": params["stage"], "epochs": params["epochs"], "config": params}
    if checkpoint:
        sd = foreign_state_dict(checkpoint)
        own = model.state_dict()
        # Checkpoints from older PyTorch lack BatchNorm's num_batches_tracked counters, which do
        # not affect inference or momentum-based statistics: take them from the fresh model.
        sd = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in sd}, **sd}
        missing, unexpected = sorted(own.keys() - sd.keys()), sorted(sd.keys() - own.keys())
        if missing or unexpected:
            detail = "; ".join(f"{len(keys)} {what} keys (e.g. {', '.join(keys[:2])})"
                               for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
            raise PqdError(f"checkpoint {checkpoint} does not fit backbone {params['backbone']!r} "
                           f"(width {params['width']}): {detail}; pick the backbone it was trained with")
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            raise PqdError(f"checkpoint {checkpoint} has tensors of the wrong shape for {params['backbone']!r} "
                           f"(width {params['width']}, {data.num_classes} classes): {str(e).splitlines()[-1].strip()}"
                           ) from None
        record["imported_from"] = str(checkpoint)
        record["epochs"] = 0
    else:
        StageContext(params, data, device, record=record).fit(model, lr=params["stage"]["lr"], masks={})
    acc = trainer.evaluate(model, data, device=device)
    record.update(wall_s=time.perf_counter() - t0, accuracy=acc)
    print(f"[dense] test accuracy {acc:.2f}%", file=sys.stderr)
    save_checkpoint(output, model.cpu().state_dict(), _meta(params, "fp32", [record], acc))
    return record


def run_stage(letter: str, params: dict, input_path: Optional[str], data_path: str, output: str,
              teacher: Optional[str] = None) -> dict:
    """Apply stage ``letter`` to the model at ``input_path`` and save it to ``output``.

    A starting stage (``StageSpec.starts``) gets no input: it is handed a freshly
    initialised backbone, seeded like dense training."""
    spec = STAGES.get(letter)
    data = data_for(params, data_path)
    if spec.starts:
        torch.manual_seed(params["seed"])
        model, meta = build_model(params["backbone"], data.num_classes, params["width"]), {
            "num_classes": data.num_classes, "history": []}
    elif input_path is None:
        raise PqdError(f"stage {letter!r} ({spec.name}) needs an input model (--input)")
    else:
        model, meta = load_model(input_path)
    params = {**params, "num_classes": meta["num_classes"]}
    device = pick_device(params["device"])
    torch.manual_seed(params["seed"])
    record: dict = {"stage": letter, "name": spec.name, "settings": params["stage"], "epochs": params["epochs"],
                    "config": params}
    ctx = StageContext(params, data, device, teacher_path=teacher, record=record)
    t0 = time.perf_counter()
    module = importlib.import_module(spec.module)
    model = module.run(model, ctx)
    from pqd.quant import is_qat

    acc = trainer.evaluate(model, data, device=device)
    record.update(wall_s=time.perf_counter() - t0, accuracy=acc)
    print(f"[{spec.name}] test accuracy {acc:.2f}%", file=sys.stderr)
    form = "qat" if is_qat(model) else "fp32"
    arch = meta.get("arch")
    if spec.structural:
        from pqd import arch as arch_mod

        arch = arch_mod.describe(model.cpu(), build_model(params["backbone"], meta["num_classes"], params["width"]))
    save_checkpoint(output, model.cpu().state_dict(), _meta(params, form, meta["history"] + [record], acc, arch))
    return record
