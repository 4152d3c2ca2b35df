import os

import pytest
import torch

from pqd.checkpoint import atomic_path, foreign_state_dict, load_checkpoint, save_checkpoint
from pqd.errors import PqdError
from pqd.models import build_model


def test_missing_corrupt_and_foreign_files_fail_with_one_clear_line(tmp_path):
    with pytest.raises(PqdError, match="checkpoint not found: .*nope.pt") as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(PqdError, match="corrupt or unsafe checkpoint") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(PqdError, match="not a pqd checkpoint"):
        load_checkpoint(plain)


def test_pickled_objects_are_refused_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(PqdError, match="corrupt or unsafe"):
        foreign_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_atomic_write_leaves_nothing_when_the_writer_dies(tmp_path):
    target = tmp_path / "out.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_metadata_is_plain_data_and_reloads_with_weights_only(tmp_path):
    m = build_model("resnet20", 10, 0.25)
    save_checkpoint(tmp_path / "m.pt", m.state_dict(), {"backbone": "resnet20", "torch": torch.__version__})
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert type(blob["meta"]["torch"]) is str


def test_bring_your_own_module_prefixed_state_dict(tmp_path):
    m = build_model("resnet20", 10)
    path = tmp_path / "foreign.th"
    torch.save({"best_prec1": 90.0, "state_dict": {"module." + k: v for k, v in m.state_dict().items()}}, path)
    sd = foreign_state_dict(path)
    fresh = build_model("resnet20", 10)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.linear.weight, m.linear.weight)


def test_import_fills_batchnorm_counters_and_shortcut_maps_that_foreign_checkpoints_lack(tmp_path, digits_cache):
    """Foreign checkpoints from older PyTorch and other code (like the public CIFAR ResNet-20) have
    no num_batches_tracked buffers and no option-A shortcut channel maps; a missing conv weight is
    still an error."""
    from helpers import stage_params

    from pqd.runner import run_stage

    m = build_model("resnet20", 10, 0.25)
    sd = {
        "module." + k: v
        for k, v in m.state_dict().items()
        if not k.endswith("num_batches_tracked") and not k.endswith("shortcut.source")
    }
    assert len(sd) < len(m.state_dict()) - 9  # the public checkpoint's keys: no counters, no maps
    torch.save({"state_dict": sd}, tmp_path / "old.th")
    params = stage_params("", width=0.25, epochs=5, checkpoint=str(tmp_path / "old.th"))
    rec = run_stage(params, digits_cache, str(tmp_path / "dense.pt"))
    assert rec["epochs"] == 0 and rec["imported_from"].endswith("old.th")
    loaded = load_checkpoint(tmp_path / "dense.pt")["state_dict"]
    assert torch.equal(loaded["linear.weight"], m.linear.weight)
    del sd["module.conv1.weight"]
    torch.save({"state_dict": sd}, tmp_path / "broken.th")
    with pytest.raises(
        PqdError, match=r"does not fit backbone 'resnet20' \(width 0.25\): 1 missing keys \(e.g. conv1.weight\)"
    ):
        run_stage(
            stage_params("", width=0.25, checkpoint=str(tmp_path / "broken.th")), digits_cache, str(tmp_path / "d2.pt")
        )
    assert not (tmp_path / "d2.pt").exists()
