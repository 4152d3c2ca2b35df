"""Training throughput: pqd's in-memory tensor batches vs a torchvision DataLoader with PIL transforms.

    python bench/train_throughput.py                  # resnet20, batch 128, 2 threads
    python bench/train_throughput.py --smoke          # tiny, for CI

Same model, batch size, optimiser and thread count; the two loaders alternate in rounds in
one process so CPU speed drift hits both alike. Data: the embedded digits set (the loader
cost per image does not depend on its content), stored as PNG files for the PIL path the way
an ImageFolder dataset sits on disk.
"""

from __future__ import annotations

import argparse
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


def torchvision_loader(root: Path, batch: int, workers: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomCrop(32, padding=2), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.3,) * 3, (0.3,) * 3)])
    return torch.utils.data.DataLoader(ImageFolder(str(root), tf), batch_size=batch, shuffle=True,
                                       num_workers=workers, drop_last=True, persistent_workers=workers > 0)


def step_images(model, opt, batches, limit: int) -> float:
    """Images per second over ``limit`` training steps drawn from ``batches``."""
    model.train()
    n, t0 = 0, time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == limit:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet20")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 = in the training process)")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.width, a.steps, a.rounds, a.batch = 0.25, 2, 1, 32
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "digits.pt"
        prepare("digits", {"kind": "digits"}, tmp, str(cache))
        data = load_data(str(cache), augment={"crop_pad": 2, "flip": True})
        root = Path(tmp) / "png"
        for i, (x, y) in enumerate(zip(data.train_x, data.train_y)):
            d = root / str(int(y))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.permute(1, 2, 0).numpy().astype(np.uint8)).save(d / f"{i}.png")
        loader = torchvision_loader(root, a.batch, a.workers)
        model = build_model(a.backbone, 10, a.width)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        ours, theirs = [], []
        step_images(model, opt, data.batches("train", a.batch, shuffle=True, augment=True, generator=gen), 2)
        for _ in range(a.rounds):
            ours.append(step_images(model, opt, data.batches("train", a.batch, shuffle=True, augment=True,
                                                               generator=gen), a.steps))
            theirs.append(step_images(model, opt, iter(loader), a.steps))
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {cpu_info()}")
    print(f"| loader | {a.backbone} w{a.width} batch {a.batch}, {a.threads} threads | images/s (median of {a.rounds}) |")
    print("|---|---|---|")
    print(f"| pqd in-memory uint8 + tensor augmentation | | {o:.0f} |")
    print(f"| torchvision ImageFolder + PIL transforms, {a.workers} workers | | {t:.0f} |")
    print(f"ratio pqd / torchvision: {o / t:.2f}x")


if __name__ == "__main__":
    main()
