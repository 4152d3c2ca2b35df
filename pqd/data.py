"""Datasets decoded once into a uint8 tensor cache, then served from memory.

Decoding JPEGs/PNGs and running PIL transforms per image costs more than the
forward pass of a small CNN on a 2-core CPU, so each dataset is decoded once per
input size (by the ``prepare_data`` rule) into ``N x 3 x S x S`` uint8 tensors, S the
backbone's ``image_size``, and training batches are cut from memory with augmentation
done on whole tensors (random crop with zero padding, random resized crop, horizontal flip).
Pictures of another size are resized once, at decoding, from their full resolution (shorter
side to S, then the centre S x S, as torchvision's evaluation transforms do), so a 64 px model
sees the detail of a 500 px photo; the decoding log counts resized and converted images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pqd.catalog import DATASET_KINDS, resolve
from pqd.checkpoint import atomic_path, load_file
from pqd.errors import PqdError
from pqd.params import DataSettings

Arrays = dict  # {"train_x", "train_y", "test_x", "test_y", "classes"}


def _resize_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``N x 3 x H x W`` images resized to ``size`` (antialiased bilinear), in chunks."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = [
        F.interpolate(x[i : i + 1024].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for i in range(0, len(x), 1024)
    ]
    return torch.cat(out)


def _torchvision_cifar(cls_name: str, name: str, spec: dict, root: str, size: int) -> Arrays:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    out: Arrays = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=root, train=train, download=spec.get("download", True))
        except Exception as e:  # URLError offline, RuntimeError for a broken copy
            raise PqdError(
                f"dataset {name!r} ({cls_name}) is not under {root!r} and could not be downloaded "
                f"({type(e).__name__}); put torchvision's extracted copy there or set data_root in the config"
            ) from None
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_x"] = _resize_tensor(x, size)
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
        out["classes"] = list(ds.classes)
        out.setdefault("decoded", {"resized": 0, "converted": 0})["resized"] += len(x) if size != 32 else 0
    return out


def load_cifar10(name: str, spec: dict, root: str, size: int) -> Arrays:
    return _torchvision_cifar("CIFAR10", name, spec, root, size)


def load_cifar100(name: str, spec: dict, root: str, size: int) -> Arrays:
    return _torchvision_cifar("CIFAR100", name, spec, root, size)


def load_digits(name: str, spec: dict, root: str, size: int) -> Arrays:
    """scikit-learn's bundled 8x8 digits, upsampled to ``size`` RGB: works offline, tiny."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    idx_tr, idx_te = train_test_split(
        np.arange(len(y)),
        test_size=spec.get("test_fraction", 0.2),
        random_state=spec.get("split_seed", 0),
        stratify=d.target,
    )
    idx_tr, idx_te = torch.from_numpy(idx_tr), torch.from_numpy(idx_te)
    return {
        "train_x": x[idx_tr],
        "train_y": y[idx_tr],
        "test_x": x[idx_te],
        "test_y": y[idx_te],
        "classes": [str(c) for c in d.target_names],
        "decoded": {"resized": len(y), "converted": len(y)},
    }


def fit_square(im, size: int):
    """A PIL image as ``size`` x ``size``: shorter side resized to ``size`` (antialiased bilinear,
    from full resolution), then the centre square (no stretching of non-square pictures)."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_imagefolder(name: str, spec: dict, root: str, size: int) -> Arrays:
    """``{root}/{train,test}/{class}/*.{jpg,png}``; class order = sorted folder names. Pictures not
    RGB are converted, pictures of another size resized once (:func:`fit_square`), both counted."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    base = Path(spec.get("root") or "")
    out: Arrays = {"decoded": {"resized": 0, "converted": 0}}
    for split in ("train", "test"):
        folder = base / spec.get(split, split)
        if not folder.is_dir():
            raise PqdError(
                f"imagefolder dataset {name!r}: folder {folder} not found; put images under "
                f"{folder}/<class>/ or set datasets.{name}.root in the config"
            )
        ds = _image_folder(name, folder, ImageFolder)
        if "classes" in out and list(ds.classes) != out["classes"]:
            raise PqdError(
                f"imagefolder dataset {name!r}: {folder} has classes {ds.classes} but the training "
                f"split has {out['classes']}; both splits need the same class folders"
            )
        xs = np.empty((len(ds.samples), size, size, 3), dtype=np.uint8)
        counts = out["decoded"]
        for i, (path, _) in enumerate(ds.samples):
            try:
                with Image.open(path) as im:
                    if im.mode != "RGB":
                        counts["converted"] += 1
                        im = im.convert("RGB")
                    if im.size != (size, size):
                        counts["resized"] += 1
                        im = fit_square(im, size)
                    xs[i] = np.asarray(im)
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # truncated, not an image, ...
                raise PqdError(
                    f"imagefolder dataset {name!r}: cannot decode {path} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:80]}); delete or replace that file"
                ) from None
        out[f"{split}_x"] = torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor([t for _, t in ds.samples], dtype=torch.int64)
        out["classes"] = list(ds.classes)
    return out


def _image_folder(name: str, folder: Path, image_folder_cls):
    """torchvision's ImageFolder over ``folder``, with an empty class folder (or none at all) as
    one line naming it rather than torchvision's traceback."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise PqdError(
            f"imagefolder dataset {name!r}: {folder} has no class folders; put images under {folder}/<class>/"
        )
    for d in classes:
        if not any(f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS) for f in d.rglob("*")):
            raise PqdError(
                f"imagefolder dataset {name!r}: class folder {d} holds no images "
                f"({', '.join(IMG_EXTENSIONS[:4])}, ...); add images or remove the folder"
            )
    return image_folder_cls(str(folder))


def prepare(name: str, spec: dict, root: str, output: str, image_size: int = 32) -> dict:
    """Decode dataset ``name`` (config entry ``spec``) at ``image_size`` pixels into the uint8 cache
    file ``output``; returns the split sizes and how many images were resized or converted."""
    arrays = resolve(DATASET_KINDS.get(spec["kind"]).loader)(name, spec, root, image_size)
    decoded = arrays.pop("decoded", {"resized": 0, "converted": 0})
    x = arrays["train_x"].float() / 255.0
    arrays["mean"] = x.mean(dim=(0, 2, 3))
    arrays["std"] = x.std(dim=(0, 2, 3))
    arrays["name"] = name
    with atomic_path(output) as tmp:
        torch.save(arrays, tmp)
    return {
        "train": len(arrays["train_y"]),
        "test": len(arrays["test_y"]),
        "classes": len(arrays["classes"]),
        "image_size": image_size,
        **decoded,
    }


@dataclass
class Data:
    """An in-memory image dataset with its normalisation and augmentation settings."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    mean: torch.Tensor
    std: torch.Tensor
    crop_pad: int = 0
    flip: bool = False
    resized_crop: Optional[tuple] = None
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device | str) -> "Data":
        """This dataset with its images, labels and statistics resident on ``device``.

        A training job moves its data once (CIFAR-10 is 150 MB as uint8), so that batches are cut,
        augmented and normalised where the model runs: no host-to-device copy of images per step
        and no CPU-side augmentation for the GPU to wait on."""
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y", "mean", "std")}
        return dataclasses.replace(self, **move)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        return (x - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero padding ``crop_pad``), random resized crop (``resized_crop``: the
        range of the crop's share of the image area, aspect ratio 3/4 to 4/3, resampled to the
        image size: the usual augmentation of larger pictures) and horizontal flip on a uint8 batch.

        The random draws come from ``generator`` (a CPU generator: a seed gives the same crops on
        every device) and are a few integers per image; padding, gathering and flipping run on the
        batch's own device."""
        n, c, h, w = x.shape
        dev = x.device
        if self.crop_pad:
            p = self.crop_pad
            padded = F.pad(x, (p, p, p, p))
            di = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev, non_blocking=True)
            dj = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev, non_blocking=True)
            rows = (di[:, None] + torch.arange(h, device=dev)[None]).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
            cols = (dj[:, None] + torch.arange(w, device=dev)[None]).view(n, 1, 1, w).expand(n, c, h, w)
            x = padded.gather(2, rows).gather(3, cols)
        if self.resized_crop:
            lo, hi = self.resized_crop
            area = torch.empty(n).uniform_(lo, hi, generator=generator)
            ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator).exp()
            sw, sh = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
            cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw)
            cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh)
            zero = torch.zeros(n)
            theta = torch.stack([torch.stack([sw, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1).to(dev)
            grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
            x = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=False).round_().clamp_(0, 255).to(x.dtype)
        if self.flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(dev, non_blocking=True)
            x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
        return x

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: Optional[torch.Generator] = None,
        device: torch.device | str = "cpu",
        limit: Optional[int] = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of normalised images and labels on ``device``. Data already resident there
        (:meth:`to`) is cut, augmented and normalised in place; CPU data is prepared on the CPU and
        copied per batch (the path for evaluation callables and one-off passes)."""
        x_all, y_all = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        n = len(y_all) if limit is None else min(limit, len(y_all))
        order = torch.randperm(len(y_all), generator=generator)[:n] if shuffle else torch.arange(n)
        order = order.to(x_all.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = x_all[idx]
            if augment:
                x = self.augment(x, generator)
            yield self.normalize(x).to(device, non_blocking=True), y_all[idx].to(device, non_blocking=True)


def class_balanced_subset(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` training images, as equal a share per class as possible, fixed by ``seed``.

    Reduced protocols train on part of a large dataset; a balanced draw keeps the class prior
    of the full set so accuracies stay comparable with the whole test split."""
    if n >= len(y):
        return torch.arange(len(y))
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per_class = [torch.nonzero(y == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    share, extra = divmod(n, len(classes))
    picked = [idx[: share + (1 if i < extra else 0)] for i, idx in enumerate(per_class)]
    return torch.sort(torch.cat(picked)).values


def load_data(
    path: str, *, normalize: Optional[dict] = None, augment: Optional[dict] = None, train_subset: Optional[int] = None
) -> Data:
    """Load a cache written by :func:`prepare`; ``normalize`` overrides the train statistics,
    ``train_subset`` keeps a fixed class-balanced part of the training split."""
    blob = load_file(path)
    mean, std = blob["mean"], blob["std"]
    if train_subset:
        keep = class_balanced_subset(blob["train_y"], int(train_subset))
        blob["train_x"], blob["train_y"] = blob["train_x"][keep], blob["train_y"][keep]
    if normalize:
        mean = torch.tensor(normalize["mean"], dtype=torch.float32)
        std = torch.tensor(normalize["std"], dtype=torch.float32)
    augment = augment or {}
    return Data(
        blob["train_x"],
        blob["train_y"],
        blob["test_x"],
        blob["test_y"],
        list(blob["classes"]),
        mean,
        std,
        crop_pad=int(augment.get("crop_pad", 0)),
        flip=bool(augment.get("flip", False)),
        resized_crop=tuple(augment["resized_crop"]) if augment.get("resized_crop") else None,
        name=blob.get("name", ""),
    )


def data_for(settings: DataSettings, path: str) -> Data:
    """The cache at ``path`` loaded with a job's data settings (normalisation, augmentation, subset)."""
    return load_data(path, normalize=settings.normalize, augment=settings.augment, train_subset=settings.train_subset)
