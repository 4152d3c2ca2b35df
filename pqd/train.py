"""The one training loop every stage uses: SGD + momentum (or AdamW), cosine schedule, hooks.

Stages differ only in what they hand to :func:`fit`: a loss (KD wraps the teacher),
epoch hooks (gradual pruning, QAT observer freezing) and step hooks (re-applying
pruning masks), so that a stage module stays a few lines of policy.
"""

from __future__ import annotations

import math
import sys
import time
import os
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.data import Data

if TYPE_CHECKING:
    from pqd.resume import ResumeFile

# Seconds between progress lines within an epoch (job logs are files, not terminals).
PROGRESS_S = float(os.environ.get("PQD_PROGRESS_S", "30"))

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpochHook = Callable[[nn.Module, int], None]
StepHook = Callable[[nn.Module], None]


def _sgd(params, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def _adamw(params, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.Optimizer:
    # momentum plays beta1, so one `train` block configures either optimiser
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


# SGD is what the CNN papers train with; a ViT barely moves under SGD in a short CPU schedule
# (29% on digits after 8 epochs) and needs AdamW, so the optimiser is a `train.optimizer` setting.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adamw": _adamw}


def make_optimizer(params, name: str = "sgd", *, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                   nesterov: bool = True) -> torch.optim.Optimizer:
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
        print(f"{self.prefix} step {self.done}/{self.steps} ({100 * self.done / self.steps:.0f}%) "
              f"{self.done * self.batch_size / elapsed:.0f} img/s elapsed {elapsed:.0f}s eta {eta:.0f}s",
              file=self.log, flush=True)


def fit(
    model: nn.Module,
    data: Data,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    optimizer: str = "sgd",
    seed: int = 0,
    device: torch.device | str = "cpu",
    loss_fn: LossFn = cross_entropy,
    epoch_hooks: Iterable[EpochHook] = (),
    step_hooks: Iterable[StepHook] = (),
    desc: str = "train",
    log=sys.stderr,
    resume: Optional["ResumeFile"] = None,
    progress_s: float = PROGRESS_S,
) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, accuracy, seconds).

    With ``resume``, the whole state is saved at the end of every epoch and, when the file holds
    this call's state, training continues from it. A progress line goes to ``log`` every
    ``progress_s`` seconds within an epoch, and one line per epoch."""
    epoch_hooks, step_hooks = list(epoch_hooks), list(step_hooks)
    model.to(device)
    history: list[dict] = []
    if epochs <= 0:
        for hook in step_hooks:
            hook(model)
        return history
    opt = make_optimizer(model.parameters(), optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov)
    steps_per_epoch = max(1, len(data.train_y) // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    start = 0
    state = resume.next_call() if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        history, start = list(state["history"]), int(state["epoch"])
    t0 = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    for epoch in range(start, epochs):
        for hook in epoch_hooks:
            hook(model, epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        progress = Progress(f"[{desc}] epoch {epoch + 1}/{epochs}", steps_per_epoch, batch_size, progress_s, log)
        for x, y in data.batches("train", batch_size, shuffle=True, augment=True, generator=gen, device=device,
                                 limit=steps_per_epoch * batch_size):
            logits = model(x)
            loss = loss_fn(logits, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for hook in step_hooks:
                hook(model)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            progress.step()
        elapsed = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
               "lr": opt.param_groups[0]["lr"], "elapsed_s": elapsed}
        history.append(rec)
        if resume is not None:  # before the epoch line: once a user sees it, the epoch is safe
            resume.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "data_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                         "epoch": epoch + 1})
        eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
        print(f"[{desc}] epoch {epoch + 1}/{epochs} loss {rec['loss']:.4f} train-acc {rec['train_acc']:.2f}% "
              f"lr {rec['lr']:.4g} elapsed {elapsed:.0f}s eta {eta:.0f}s", file=log, flush=True)
    return history


@torch.inference_mode()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], data: Data, *, batch_size: int = 256,
             device: torch.device | str = "cpu", limit: Optional[int] = None) -> float:
    """Top-1 accuracy (%) on the test split, of a module or of any runtime's callable."""
    if isinstance(model, nn.Module):
        model.to(device).eval()
    correct, seen = 0, 0
    for x, y in data.batches("test", batch_size, device=device, limit=limit):
        correct += (model(x).argmax(1) == y).sum().item()
        seen += len(y)
    return 100.0 * correct / max(1, seen)
