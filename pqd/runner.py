"""Run one stage: load (or build) its input model, apply the stage's policy, save the result.

Every stage, dense training included, goes through :func:`run_stage`: the spec says whether
the stage starts from a fresh backbone (``starts``) or from the model after the chain's prefix;
the stage module (named by the spec, imported by name so that the runner never imports a stage
itself) implements ``run(model, ctx) -> model``. What stages share lives here: the
:class:`StageContext` with the data, settings and the training loop pre-wired with pruning masks
and QAT freezing, and the provenance written into each checkpoint.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from pqd import arch as arch_mod
from pqd import interrupts, qat
from pqd import masks as masks_mod
from pqd import train as trainer
from pqd.checkpoint import code_version, read_json, save_checkpoint
from pqd.data import Data, data_for
from pqd.errors import PqdError
from pqd.model_io import load_model
from pqd.models import build_model
from pqd.params import StageParams
from pqd.pipeline import DENSE, stage_spec
from pqd.resume import ResumeFile


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PqdError("device 'cuda' requested but no CUDA device is visible; set device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class StageContext:
    """What a stage needs: its settings and epochs, the data, and a ready training loop."""

    params: StageParams
    data: Data
    device: torch.device
    teacher_path: Optional[str] = None
    curve_path: Optional[str] = None
    record: dict = field(default_factory=dict)
    resume: Optional[ResumeFile] = None
    deadline: Optional[float] = None

    @property
    def settings(self) -> dict:
        return self.params.settings

    @property
    def epochs(self) -> int:
        return self.params.epochs

    @property
    def image_size(self) -> int:
        """The input size of the model (its backbone entry's): tracing, MACs, example batches."""
        return self.params.backbone.image_size

    @property
    def quant(self) -> dict:
        if self.params.quant is None:
            raise PqdError(f"stage {self.params.stage!r} needs QAT settings but its chain is not quantized")
        return self.params.quant

    def train_batches(self, n: int, seed: int):
        """The first ``n`` shuffled, augmented training batches for seed ``seed`` (for scoring
        and warm-up passes outside the training loop)."""
        batch = self.params.train.batch_size
        return self.data.batches(
            "train",
            batch,
            shuffle=True,
            augment=True,
            generator=torch.Generator().manual_seed(seed),
            device=self.device,
            limit=n * batch,
        )

    def load_teacher(self) -> nn.Module:
        """The stage's second input model (see ``StageSpec.teacher``), frozen on the device."""
        if not self.teacher_path:
            raise PqdError(f"stage {self.params.stage!r} needs a teacher but none was given (--teacher)")
        teacher, _ = load_model(self.teacher_path)
        return trainer.freeze(teacher.to(self.device))

    def load_curve(self) -> dict:
        """The latency curve of the input model (``StageSpec.latency_curve``), measured where latency is."""
        if not self.curve_path:
            raise PqdError(f"stage {self.params.stage!r} prunes to a latency target but got no latency curve (--curve)")
        return read_json(self.curve_path)

    def fit(
        self,
        model: nn.Module,
        *,
        lr: float,
        loss_fn: trainer.LossFn = trainer.cross_entropy,
        epoch_hooks=(),
        masks: Optional[dict] = None,
        epochs: Optional[int] = None,
    ) -> None:
        """Train with the shared optimiser settings. Pruning masks (given, or re-derived
        from the model's zeros) are re-applied after every step; a fake-quantized model
        gets its observers and BN statistics frozen for the last part of training."""
        if masks is None:
            masks = masks_mod.masks_from_zeros(model)
        hooks = list(epoch_hooks)
        epochs = self.epochs if epochs is None else epochs
        if qat.is_qat(model):
            hooks.append(qat.freeze_hook(epochs, self.quant["freeze_at"]))
        settings = trainer.FitSettings(epochs=epochs, lr=lr, seed=self.params.seed, **asdict(self.params.train))
        callbacks = trainer.Callbacks(
            epoch=hooks,
            step=[masks_mod.mask_hook(masks)],
            resume=self.resume,
            deadline=self.deadline,
            desc=self.params.label,
        )
        self.record.setdefault("train", [])
        self.record["train"] += trainer.fit(
            model, self.data, settings, device=self.device, loss_fn=loss_fn, callbacks=callbacks
        )


def _meta(
    params: StageParams, num_classes: int, form: str, history: list, accuracy: float, arch: Optional[dict] = None
) -> dict:
    return {
        "experiment": params.experiment,
        "backbone": params.backbone.name,
        "model": params.backbone.to_dict(),
        "dataset": params.dataset,
        "num_classes": num_classes,
        "width": params.width,
        "form": form,
        **({"arch": arch} if arch else {}),
        "reduce_range": (params.quant or {}).get("reduce_range", True),
        "accuracy": accuracy,
        "history": history,
        "code_version": code_version(),
    }


def run_stage(
    params: StageParams,
    data_path: str,
    output: str,
    input_path: Optional[str] = None,
    teacher: Optional[str] = None,
    resume_key: Optional[str] = None,
    curve: Optional[str] = None,
) -> dict:
    """Apply stage ``params.stage`` to the model at ``input_path`` and save it to ``output``.

    A starting stage (``StageSpec.starts``: dense training, EPSD) gets no input: it is handed a
    freshly initialised backbone, seeded by ``params.seed``. With ``resume_key`` (the job's
    identity, :func:`pqd.resume.job_key`), training state is saved every epoch and a rerun of
    the same job continues from it."""
    spec = stage_spec("" if params.stage == DENSE else params.stage)
    device = pick_device(params.device)
    data = data_for(params.data, data_path).to(device)  # resident where the model trains
    if spec.starts:
        torch.manual_seed(params.seed)
        model, meta = (
            build_model(params.backbone, data.num_classes, params.width),
            {"num_classes": data.num_classes, "history": []},
        )
    elif input_path is None:
        raise PqdError(f"stage {spec.key!r} ({spec.name}) needs an input model (--input)")
    else:
        model, meta = load_model(input_path)
    if data.train_x.shape[-1] != params.backbone.image_size:
        raise PqdError(
            f"{data_path} holds {data.train_x.shape[-1]}px images but backbone {params.backbone.name!r} "
            f"takes {params.backbone.image_size}px; pass the data cache decoded at its image_size"
        )
    torch.manual_seed(params.seed)
    record: dict = {
        "stage": spec.key,
        "name": spec.name,
        "settings": params.settings,
        "epochs": params.epochs,
        "threads": params.threads,
        "config": params.to_dict(),
        "reported": list(spec.record),
    }
    resume = ResumeFile(output, resume_key) if resume_key else None
    ctx = StageContext(
        params,
        data,
        device,
        teacher_path=teacher,
        curve_path=curve,
        record=record,
        resume=resume,
        deadline=interrupts.job_deadline(),
    )
    t0 = time.perf_counter()
    model = importlib.import_module(spec.module).run(model, ctx)
    acc = trainer.evaluate(model, data, device=device)
    record.update(wall_s=time.perf_counter() - t0, accuracy=acc)
    print(f"[{spec.name}] test accuracy {acc:.2f}%", file=sys.stderr)
    form = "qat" if qat.is_qat(model) else "fp32"
    arch = meta.get("arch")
    if spec.structural:
        arch = arch_mod.describe(model.cpu(), build_model(params.backbone, meta["num_classes"], params.width))
    save_checkpoint(
        output,
        model.cpu().state_dict(),
        _meta(params, meta["num_classes"], form, meta["history"] + [record], acc, arch),
    )
    if resume is not None:
        resume.done()
    return record
