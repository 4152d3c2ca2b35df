import numpy as np
import pytest
import torch
from PIL import Image

from pqd.data import load_data, prepare
from pqd.errors import PqdError


def test_digits_is_embedded_32x32_rgb_uint8_with_a_stratified_split(digits):
    assert digits.train_x.shape[1:] == (3, 32, 32) and digits.train_x.dtype == torch.uint8
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert digits.num_classes == 10
    assert set(digits.test_y.tolist()) == set(range(10))


def test_random_crop_shifts_with_zero_padding_and_flip_mirrors(digits):
    x = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6).to(torch.uint8)
    data = type(digits)(x, torch.zeros(2), x, torch.zeros(2), ["a"], digits.mean, digits.std, crop_pad=2)
    out = data.augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for i in range(2):  # each output is a shifted window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(out[i], padded[:, r : r + 6, c : c + 6]) for r in range(5) for c in range(5))
    data.crop_pad, data.flip = 0, True
    flips = [data.augment(x, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)


def test_batches_are_deterministic_given_a_seed(digits):
    a = next(digits.batches("train", 32, shuffle=True, augment=True, generator=torch.Generator().manual_seed(3)))
    b = next(digits.batches("train", 32, shuffle=True, augment=True, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_imagefolder_reads_class_folders_and_resizes(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    out = tmp_path / "cache.pt"
    assert prepare("tiny", {"kind": "imagefolder", "root": str(tmp_path)}, "unused", str(out)) == {
        "train": 6,
        "test": 4,
        "classes": 2,
        "image_size": 32,
        "resized": 10,
        "converted": 0,
    }
    data = load_data(str(out))
    assert data.classes == ["cat", "dog"] and data.train_x.shape == (6, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]


def test_larger_pictures_keep_their_detail_at_the_models_size_and_are_counted(tmp_path):
    """A 64 px model's cache: a wide 200x100 picture becomes its centre square resized from full
    resolution (not stretched, not first shrunk to 32), a grayscale one is converted; both counted."""
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
    wide = np.zeros((100, 200, 3), dtype=np.uint8)
    wide[:, 50:150] = 255  # the centre square is white, the sides black
    Image.fromarray(wide).save(tmp_path / "train/a/wide.png")
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(tmp_path / "train/a/gray.png")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "test/a/ok.png")
    out = tmp_path / "cache64.pt"
    res = prepare("t", {"kind": "imagefolder", "root": str(tmp_path)}, "unused", str(out), image_size=64)
    assert res == {"train": 2, "test": 1, "classes": 1, "image_size": 64, "resized": 1, "converted": 1}
    data = load_data(str(out))
    assert data.train_x.shape == (2, 3, 64, 64)
    gray, wide_img = data.train_x[0], data.train_x[1]  # sorted file names: gray.png, wide.png
    # stretched, a quarter of each side would be black; resized from the centre square, only the
    # antialiasing filter at its border touches the black sides
    assert int(wide_img[:, :, 1:-1].min()) == 255 and int(wide_img.min()) > 200 and int(gray.float().mean()) == 128


def test_random_resized_crop_is_seeded_and_keeps_the_size(tmp_path):
    from pqd.data import Data

    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16).remainder(256).to(torch.uint8)
    d = Data(
        x,
        torch.zeros(2, dtype=torch.int64),
        x,
        torch.zeros(2, dtype=torch.int64),
        ["a"],
        torch.zeros(3),
        torch.ones(3),
        resized_crop=(0.3, 0.6),
    )
    a = d.augment(x, torch.Generator().manual_seed(1))
    b = d.augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, x)


def test_missing_imagefolder_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(PqdError, match="folder .*train not found"):
        prepare("c10jpg", {"kind": "imagefolder", "root": str(tmp_path / "nowhere")}, "x", str(tmp_path / "o.pt"))
    assert not (tmp_path / "o.pt").exists()


def test_cifar_offline_without_a_copy_stops_with_one_line(tmp_path):
    with pytest.raises(PqdError) as e:
        prepare("c10", {"kind": "c10", "download": False}, str(tmp_path), str(tmp_path / "c10.pt"))
    msg = str(e.value)
    assert "not under" in msg and "data_root" in msg and "\n" not in msg
    assert not (tmp_path / "c10.pt").exists()


def test_train_subset_is_class_balanced_fixed_and_leaves_the_test_split_whole(digits_cache):
    full = load_data(digits_cache)
    a = load_data(digits_cache, train_subset=205)
    b = load_data(digits_cache, train_subset=205)
    assert len(a.train_y) == 205 and torch.equal(a.train_y, b.train_y) and torch.equal(a.train_x, b.train_x)
    counts = torch.bincount(a.train_y, minlength=10)
    assert counts.max() - counts.min() <= 1  # 20 or 21 per class
    assert torch.equal(a.test_y, full.test_y)
    assert len(load_data(digits_cache, train_subset=10**6).train_y) == len(full.train_y)
