import torch

from pqd.models import build_model
from pqd.train import evaluate, fit


def _train(digits, seed):
    torch.manual_seed(seed)
    m = build_model("resnet20", 10, 0.25)
    hist = fit(m, digits, epochs=1, lr=0.05, batch_size=32, seed=seed)
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
    fit(m, digits, epochs=2, lr=0.05, batch_size=256, desc="p:prune", log=sys.stdout)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[p:prune]")]
    assert len(lines) == 2
    assert all(k in lines[0] for k in ("epoch 1/2", "loss", "train-acc", "eta"))
