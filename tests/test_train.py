import math

import pytest
import torch

from pqd.models import build_model
from pqd.train import Callbacks, FitSettings, evaluate, fit


def _train(digits, seed):
    torch.manual_seed(seed)
    m = build_model("resnet20", 10, 0.25)
    hist = fit(m, digits, FitSettings(epochs=1, lr=0.05, batch_size=32, seed=seed))
    return m, hist


def test_training_is_deterministic_given_a_seed_and_learns(digits):
    a, ha = _train(digits, 1)
    b, hb = _train(digits, 1)
    c, _ = _train(digits, 2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.linear.weight, c.linear.weight)
    assert ha[0]["loss"] == hb[0]["loss"]
    assert evaluate(a, digits) > 20.0  # 10 classes; chance is 10%


def test_progress_lines_report_epoch_loss_accuracy_and_eta(digits, capsys):
    import sys

    m = build_model("resnet20", 10, 0.125)
    fit(m, digits, FitSettings(epochs=2, lr=0.05, batch_size=256), callbacks=Callbacks(desc="p:prune", log=sys.stdout))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[p:prune]")]
    assert len(lines) == 2
    assert all(k in lines[0] for k in ("epoch 1/2", "loss", "train-acc", "eta"))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the CUDA path runs wherever CUDA is


@pytest.mark.parametrize("device", DEVICES)
def test_device_resident_batches_equal_the_cpu_batches(digits, device):
    """Data moved once to the device gives, for a seed, exactly the batches the CPU path gives."""
    on_dev = digits.to(device)
    assert on_dev.train_x.device.type == device
    for (xa, ya), (xb, yb) in zip(
        digits.batches("train", 64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(4)),
        on_dev.batches(
            "train", 64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(4), device=device
        ),
    ):
        assert xb.device.type == device
        assert torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "precision,fmt", [("bf16", "contiguous"), ("fp32", "channels_last"), ("bf16", "channels_last")]
)
def test_bf16_and_channels_last_train_and_save_nchw_fp32_weights(digits, device, precision, fmt):
    torch.manual_seed(0)
    m = build_model("resnet20", 10, 0.25)
    hist = fit(
        m, digits, FitSettings(epochs=2, lr=0.05, batch_size=32, precision=precision, memory_format=fmt), device=device
    )
    assert all(math.isfinite(h["loss"]) for h in hist) and hist[1]["loss"] < hist[0]["loss"]
    for name, p in m.state_dict().items():
        assert p.is_contiguous(), name  # checkpoints keep NCHW whatever the training layout
        assert not p.is_floating_point() or p.dtype == torch.float32, name
    assert evaluate(m, digits, device=device) > 20.0


@pytest.mark.parametrize("device", DEVICES)
def test_qat_trains_under_bf16_autocast_and_converts_to_int8(digits, device):
    from pqd import qat

    torch.manual_seed(0)
    q = qat.prepare_qat(build_model("resnet20", 10, 0.25), 32)
    fit(q, digits, FitSettings(epochs=1, lr=0.02, batch_size=32, precision="bf16", memory_format="auto"), device=device)
    int8 = qat.convert(q)
    assert qat.int8_layers(int8) and evaluate(int8, digits) > 20.0


def test_the_training_loop_reads_the_device_twice_per_epoch_not_per_step(digits, monkeypatch):
    """On a GPU every ``.item()``, ``bool()``, ``int()`` or ``float()`` of a tensor waits for all
    queued kernels: the loop sums loss and accuracy where they are computed and reads them once
    per epoch (counted on CPU tensors, where the calls are the same)."""
    calls = []
    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=orig, _n=name: calls.append(_n) or _o(self, *a))
    m = build_model("resnet20", 10, 0.125)
    steps = len(digits.train_y) // 32
    fit(m, digits, FitSettings(epochs=2, lr=0.05, batch_size=32))
    assert steps >= 40 and calls == ["item", "item"] * 2, calls[:10]  # loss and accuracy, 2 epochs
