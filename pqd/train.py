"""The one training loop every stage uses: SGD + momentum (or AdamW), cosine schedule, hooks.

Stages differ only in what they hand to :func:`fit`: a loss (KD wraps the teacher),
epoch hooks (gradual pruning, QAT observer freezing) and step hooks (re-applying
pruning masks), so that a stage module stays a few lines of policy.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pqd.data import Data

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
) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, accuracy, seconds)."""
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
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for hook in epoch_hooks:
            hook(model, epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(data.batches("train", batch_size, shuffle=True, augment=True, generator=gen, device=device,
                                limit=steps_per_epoch * batch_size),
                   total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{epochs}", file=log, mininterval=30,
                   leave=False, disable=None)
        for x, y in bar:
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
        elapsed = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
               "lr": opt.param_groups[0]["lr"], "elapsed_s": elapsed}
        history.append(rec)
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
