"""The one training loop every stage uses: SGD + momentum (or AdamW), cosine schedule, hooks.

Stages differ only in what they hand to :func:`fit`: its :class:`FitSettings`, a loss (KD wraps the teacher),
and :class:`Callbacks`: epoch hooks (gradual pruning, QAT observer freezing), step hooks (re-applying
pruning masks), resume and deadline, so that a stage module stays a few lines of policy.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.data import Data
from pqd.errors import PqdError

if TYPE_CHECKING:
    from pqd.resume import ResumeFile

# Seconds between progress lines within an epoch (job logs are files, not terminals).
PROGRESS_S = float(os.environ.get("PQD_PROGRESS_S", "30"))

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpochHook = Callable[[nn.Module, int], None]
StepHook = Callable[[nn.Module], None]


def _sgd(params, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0
    )


def _adamw(params, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.Optimizer:
    # momentum plays beta1, so one `train` block configures either optimiser
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


# SGD is what the CNN papers train with; a ViT barely moves under SGD in a short CPU schedule
# (29% on digits after 8 epochs) and needs AdamW, so the optimiser is a `train.optimizer` setting.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adamw": _adamw}


def make_optimizer(
    params, name: str = "sgd", *, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = True
) -> torch.optim.Optimizer:
    """The configured optimiser: every stage and warm-up builds its optimiser here."""
    return OPTIMIZERS[name](params, lr, momentum, weight_decay, nesterov)


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with gradients off, in place: a teacher is read, never trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Progress:
    """A line every ``interval_s`` seconds: step, percentage, images/s, elapsed and ETA of the
    epoch, so that a slow job can be told from a hung one while it runs."""

    def __init__(self, prefix: str, steps: int, batch_size: int, interval_s: float, log) -> None:
        self.prefix, self.steps, self.batch_size, self.interval_s, self.log = prefix, steps, batch_size, interval_s, log
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last < self.interval_s or self.done >= self.steps:
            return
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / self.done * (self.steps - self.done)
        print(
            f"{self.prefix} step {self.done}/{self.steps} ({100 * self.done / self.steps:.0f}%) "
            f"{self.done * self.batch_size / elapsed:.0f} img/s elapsed {elapsed:.0f}s eta {eta:.0f}s",
            file=self.log,
            flush=True,
        )


# Numeric formats of the forward/backward pass (config ``train.precision``). bf16 autocast
# halves activation traffic on tensor-core GPUs and needs no loss scaling (bf16 has fp32's
# exponent range); weights, optimiser state and BN statistics stay fp32, so checkpoints do not
# depend on it beyond rounding.
PRECISIONS: dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16}


def memory_format(name: str, device: torch.device) -> torch.memory_format:
    """``train.memory_format``: ``auto`` is channels-last on CUDA (cuDNN's tensor-core convolutions
    are NHWC; NCHW costs a transpose per layer) and contiguous NCHW elsewhere, where pqd's CPU
    results were produced and stay bit-identical."""
    if name == "auto":
        name = "channels_last" if device.type == "cuda" else "contiguous"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


class TimeLimitNear(PqdError):
    """The job's scheduler time limit would end the next epoch: stop after saving this one
    (a failed job to Snakemake, whose retry resumes from the saved epoch)."""


def _rng_state(device: torch.device) -> dict:
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":  # dropout on CUDA draws from the device's own generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


@dataclass(frozen=True)
class FitSettings:
    """How to train: epochs, learning rate (one cosine cycle), the optimiser and its settings (config
    ``train``: :class:`pqd.params.TrainSettings` has the same fields), numerics and the data-order seed."""

    epochs: int
    lr: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    optimizer: str = "sgd"
    precision: str = "fp32"
    memory_format: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class Callbacks:
    """What a stage hangs on the loop: ``epoch`` hooks run before each epoch (a pruning schedule, QAT's
    observer freezing), ``step`` hooks after each optimiser step (re-applying pruning masks);
    ``resume`` saves the whole state every epoch and continues from it; ``deadline`` (a wall-clock
    time, e.g. the SLURM job's end) stops cleanly before an epoch that would not finish; progress
    lines (``desc``) go to ``log`` every ``progress_s`` seconds and once per epoch."""

    epoch: Sequence[EpochHook] = ()
    step: Sequence[StepHook] = ()
    resume: Optional["ResumeFile"] = None
    deadline: Optional[float] = None
    desc: str = "train"
    log: Any = None  # None: stderr at call time (a test may swap sys.stderr)
    progress_s: float = PROGRESS_S


def fit(
    model: nn.Module,
    data: Data,
    settings: FitSettings,
    *,
    device: torch.device | str = "cpu",
    loss_fn: LossFn = cross_entropy,
    callbacks: Callbacks = Callbacks(),
) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, accuracy, seconds).

    With ``callbacks.resume``, the whole state is saved at the end of every epoch and, when the file
    holds this call's state, training continues from it. The loop never waits for the device within
    an epoch: loss and accuracy are summed on the device and read once per epoch. With
    ``callbacks.deadline``, training stops with :class:`TimeLimitNear` after saving an epoch when the
    next one would not end before it."""
    s, cb = settings, callbacks
    epochs, lr, batch_size, seed = s.epochs, s.lr, s.batch_size, s.seed
    epoch_hooks, step_hooks = list(cb.epoch), list(cb.step)
    resume, deadline, desc, progress_s = cb.resume, cb.deadline, cb.desc, cb.progress_s
    log = cb.log if cb.log is not None else sys.stderr
    device = torch.device(device)
    fmt = memory_format(s.memory_format, device)
    model.to(device=device, memory_format=fmt)
    history: list[dict] = []
    if epochs <= 0:
        for hook in step_hooks:
            hook(model)
        return history
    if data.device != device:
        data = data.to(device)
    opt = make_optimizer(
        model.parameters(), s.optimizer, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.nesterov
    )
    steps_per_epoch = max(1, len(data.train_y) // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    autocast_dtype = PRECISIONS[s.precision]
    start = 0
    state = resume.next_call() if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["data_rng"])
        _set_rng_state(state, device)
        history, start = list(state["history"]), int(state["epoch"])
    t0 = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    for epoch in range(start, epochs):
        t_epoch = time.perf_counter()
        for hook in epoch_hooks:
            hook(model, epoch)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        progress = Progress(f"[{desc}] epoch {epoch + 1}/{epochs}", steps_per_epoch, batch_size, progress_s, log)
        for x, y in data.batches(
            "train",
            batch_size,
            shuffle=True,
            augment=True,
            generator=gen,
            device=device,
            limit=steps_per_epoch * batch_size,
        ):
            x = x.contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = model(x)
                loss = loss_fn(logits, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for hook in step_hooks:
                hook(model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            progress.step()
        elapsed = time.perf_counter() - t0
        rec = {
            "epoch": epoch + 1,
            "loss": loss_sum.item() / seen,
            "train_acc": 100.0 * correct.item() / seen,
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": elapsed,
        }
        history.append(rec)
        if resume is not None:  # before the epoch line: once a user sees it, the epoch is safe
            resume.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "data_rng": gen.get_state(),
                    **_rng_state(device),
                    "history": history,
                    "epoch": epoch + 1,
                }
            )
        eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
        print(
            f"[{desc}] epoch {epoch + 1}/{epochs} loss {rec['loss']:.4f} train-acc {rec['train_acc']:.2f}% "
            f"lr {rec['lr']:.4g} elapsed {elapsed:.0f}s eta {eta:.0f}s",
            file=log,
            flush=True,
        )
        epoch_s = time.perf_counter() - t_epoch
        if deadline is not None and epoch + 1 < epochs and time.time() + 1.5 * epoch_s + 30 > deadline:
            where = f"; state saved in {resume.path}, a rerun resumes at epoch {epoch + 2}" if resume else ""
            raise TimeLimitNear(
                f"stopped after epoch {epoch + 1}/{epochs}: the next epoch (~{epoch_s:.0f}s) would "
                f"run past the job's time limit in {deadline - time.time():.0f}s{where}"
            )
    model.to(memory_format=torch.contiguous_format)  # checkpoints are NCHW whatever the training layout
    return history


@torch.inference_mode()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: Data,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    limit: Optional[int] = None,
) -> torch.Tensor:
    """The predicted class of every test image (the first ``limit``), in test-split order (on the
    CPU): what paired comparisons of two pipelines score image by image (pqd.stats), and what
    :func:`evaluate` counts. Works on a module or on any runtime's callable."""
    if isinstance(model, nn.Module):
        model.to(device).eval()
    preds = [model(x).argmax(1) for x, _ in data.batches("test", batch_size, device=device, limit=limit)]
    return torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)


def evaluate(model: Callable[[torch.Tensor], torch.Tensor], data: Data, **predict_kw) -> float:
    """Top-1 accuracy (%) on the test split, of a module or of any runtime's callable, over the
    images :func:`predict` scores with the same keywords (``limit``: the first that many)."""
    pred = predict(model, data, **predict_kw)
    return 100.0 * (pred == data.test_y[: len(pred)].cpu()).sum().item() / max(1, len(pred))
