"""Training throughput: pqd's training loop against a plain torchvision DataLoader + AMP loop.

    python bench/train_throughput.py                        # vgg16, resnet18, wrn28_10 on the best device
    python bench/train_throughput.py --precision fp32 --backbones resnet20
    python bench/train_throughput.py --smoke                # tiny, for CI

pqd: :func:`pqd.train.fit` itself (uint8 images resident on the device, crop and flip on the
device, channels-last on CUDA, loss and accuracy summed on the device and read once per epoch).
Plain: what a torchvision user writes (``references/classification/train.py`` in miniature):
``ImageFolder`` with PIL ``RandomCrop``/``RandomHorizontalFlip``/``ToTensor``/``Normalize``, a
``DataLoader`` (pinned memory on CUDA), ``torch.autocast`` with the same dtype, and ``loss.item()``
each step for its log. Same model, batch, optimiser, dtype, device and threads; the two loops
alternate in rounds in one process so speed drift hits both alike, and the median images/s
is reported. Data: the embedded digits set at 32x32 (what an image holds does not change the
cost of a step), written as PNG files for the PIL path as an ImageFolder dataset sits on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pqd.data import load_data, prepare
from pqd.measure import cpu_info
from pqd.models import build_model
from pqd.train import PRECISIONS, Callbacks, FitSettings, fit, memory_format


def torchvision_loader(root: Path, batch: int, workers: int, pin: bool):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize((0.3,) * 3, (0.3,) * 3)]
    )
    return torch.utils.data.DataLoader(
        ImageFolder(str(root), tf),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_images_per_s(model, loader, device: torch.device, dtype, steps: int) -> float:
    """Images per second over ``steps`` steps of the plain loop (one round of the loader)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    sync(device)
    n, t0, logged = 0, time.perf_counter(), 0.0
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logged += loss.item()
        n += len(y)
    sync(device)
    return n / (time.perf_counter() - t0)


def pqd_images_per_s(model, data, device: torch.device, precision: str, batch: int, seed: int) -> float:
    """Images per second of one epoch of :func:`pqd.train.fit` over ``data`` (already on the device)."""
    sync(device)
    t0 = time.perf_counter()
    fit(
        model,
        data,
        FitSettings(epochs=1, lr=0.01, batch_size=batch, precision=precision, seed=seed),
        device=device,
        callbacks=Callbacks(log=io.StringIO()),
    )
    sync(device)
    return len(data.train_y) // batch * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="vgg16,resnet18,wrn28_10")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="auto", help="auto = cuda when visible, else cpu")
    ap.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="training steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 = in the training process)")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.backbones, a.width, a.steps, a.rounds, a.batch = "resnet20", 0.25, 2, 1, 32
    device = torch.device(
        "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    )
    torch.set_num_threads(a.threads)
    dtype = PRECISIONS[a.precision]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "digits.pt"
        prepare("digits", {"kind": "digits"}, tmp, str(cache))
        data = load_data(str(cache), augment={"crop_pad": 4, "flip": True})
        root = Path(tmp) / "png"
        for i, (x, y) in enumerate(zip(data.train_x, data.train_y)):
            d = root / str(int(y))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.permute(1, 2, 0).numpy().astype(np.uint8)).save(d / f"{i}.png")
        n = a.steps * a.batch
        reps = -(-n // len(data.train_y))  # enough images for `steps` batches in one epoch
        sub = dataclasses.replace(
            data, train_x=data.train_x.repeat(reps, 1, 1, 1)[:n], train_y=data.train_y.repeat(reps)[:n]
        ).to(device)
        loader = torchvision_loader(root, a.batch, a.workers, pin=device.type == "cuda")
        for name in a.backbones.split(","):
            torch.manual_seed(0)
            ours_model = build_model(name, 10, a.width).to(device)
            theirs_model = build_model(name, 10, a.width).to(device)
            pqd_images_per_s(ours_model, sub, device, a.precision, a.batch, 0)  # warm-up (cuDNN, allocator)
            plain_images_per_s(theirs_model, loader, device, dtype, 2)
            ours, theirs = [], []
            for r in range(a.rounds):
                ours.append(pqd_images_per_s(ours_model, sub, device, a.precision, a.batch, r))
                theirs.append(plain_images_per_s(theirs_model, loader, device, dtype, a.steps))
            rows.append((name, statistics.median(ours), statistics.median(theirs)))
    cpu = cpu_info()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu['cpu']} ({' '.join(cpu['isa'])}), torch {cpu['torch']}"
    )
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {where}; {a.threads} CPU threads")
    print(
        f"# batch {a.batch}, width {a.width}, {a.precision}, memory format "
        f"{'channels_last' if memory_format('auto', device) == torch.channels_last else 'contiguous'} (pqd), "
        f"{a.steps} steps x {a.rounds} rounds alternating, median; DataLoader workers {a.workers}"
    )
    print("| backbone | pqd fit() images/s | DataLoader + autocast images/s | ratio pqd / torchvision |")
    print("|---|---|---|---|")
    for name, o, t in rows:
        print(f"| {name} | {o:.0f} | {t:.0f} | {o / t:.2f}x |")


if __name__ == "__main__":
    main()
