"""Depth pruning (stage ``b``): which blocks count as removable, that the least important goes first,
that the shallower model reloads with weights_only=True and trains on through s, q and d into a
real INT8 model, and that a model without residual blocks is refused by the probe."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import stage_params as params

from pqd import arch as arch_mod
from pqd import blocks
from pqd.catalog import BackboneSpec
from pqd.checkpoint import save_checkpoint
from pqd.macs import macs
from pqd.measure import deploy, deployed_macs
from pqd.model_io import load_model
from pqd.models import build_model
from pqd.probe import probe
from pqd.runner import run_stage


class Plain(nn.Module):
    """Same-shape layers but no shortcut: nothing to remove whole."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class AddsConstant(nn.Module):
    """Shape-preserving and adds its input, but to a constant, before a layer: removing it is no bypass."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 8, 1, 1))
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x + self.pos)


class Decoys(nn.Module):
    """A residual add computed inline (no module of its own to remove), a decoy that adds its input to a
    constant, and plain shape-preserving layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.decoy = AddsConstant()
        self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.twice = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.decoy(self.stem(x))
        x = x + self.res(x)
        x = self.twice(x)  # a plain shape-preserving layer: never a block
        return self.head(x.mean((2, 3)))


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(self.inner(x).mean((2, 3)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.expand = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.expand(torch.relu(x + self.conv(x)))  # a residual add, then a layer: not removable


@pytest.mark.parametrize(
    "model, size, expected",
    [
        # He et al.'s ResNet-20: 3 blocks per stage, the first of stages 2 and 3 changes shape
        (
            build_model("resnet20", 10, 0.25),
            32,
            [f"layer{s}.{b}" for s, n in ((1, 3), (2, 3), (3, 3)) for b in range(n) if (s, b) not in ((2, 0), (3, 0))],
        ),
        # torchvision's inverted residuals with use_res_connect (an nn.Module's own add)
        (
            torchvision.models.mobilenet_v3_small(num_classes=10),
            64,
            ["features.3", "features.5", "features.6", "features.8", "features.10", "features.11"],
        ),
        (torchvision.models.resnet18(num_classes=10), 64, ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]),
        (Plain(), 32, []),
        (Decoys(), 32, []),  # x + res(x) is computed inline by Decoys, not by a module of its own
        (Wrapped(), 32, []),
        (build_model("vit", 10, 0.25), 32, ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]),
        (build_model("vgg16", 10, 0.125), 32, []),
    ],
    ids=["resnet20", "mobilenet_v3_small", "torchvision_resnet18", "plain", "decoys", "add_then_layer", "vit", "vgg16"],
)
def test_removable_blocks_are_the_identity_shortcut_residuals(model, size, expected):
    assert blocks.removable_blocks(model, size) == expected


def test_greedy_removal_takes_the_block_that_moves_the_outputs_least_and_reloads_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 0.25).eval()
    batches = [torch.randn(16, 3, 32, 32) for _ in range(2)]
    before = blocks.bypass_scores(model, blocks.removable_blocks(model, 32), batches)
    removed = blocks.greedy_removal(model, 3, batches, 32)
    assert len(removed) == 3 and removed[0]["block"] == min(before, key=before.get)
    assert removed[0]["kl"] == pytest.approx(before[removed[0]["block"]])
    names = [r["block"] for r in removed]
    assert all(isinstance(model.get_submodule(n), nn.Identity) for n in names)
    assert blocks.removable_blocks(model, 32) == [n for n in before if n not in names]
    assert macs(model, 32) < macs(build_model("resnet20", 10, 0.25), 32)
    # the architecture records the removed blocks; a fresh build plus it loads with weights_only=True
    arch = arch_mod.describe(model, build_model("resnet20", 10, 0.25))
    assert sorted(arch["removed"]) == sorted(names)
    meta = {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "fp32", "arch": arch}
    save_checkpoint(tmp_path / "shallow.pt", model.state_dict(), meta)
    rebuilt, _ = load_model(str(tmp_path / "shallow.pt"))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(rebuilt.eval()(x), model(x), atol=1e-5)


def test_depth_stage_combines_with_s_q_and_d_into_a_real_int8_model(resnet20_dense, digits_cache, tmp_path):
    """``b`` then ``s`` (width on what depth left), ``q`` and ``d``: the deployed INT8 model has the
    removed blocks' MACs and the thinned channels gone, reloads from its checkpoint alone, and runs
    in OpenVINO with PyTorch's predictions."""
    from pqd.runtimes import export_onnx, make_runner

    b = str(tmp_path / "shallow.pt")
    rec = run_stage(params("b", "resnet20", 0.5, blocks_keep=0.5, score_batches=2), digits_cache, b, resnet20_dense)
    d = rec["depth"]
    assert d["blocks_before"] == 7 and d["blocks_after"] == 4 and len(d["removed"]) == 3
    assert d["macs_after"] < d["macs_before"] and d["budget"] == {"target": {"blocks_keep": 0.5}}
    assert rec["accuracy"] > 50.0  # digits: far above chance after the fine-tuning with KD
    shallow, meta = load_model(b)
    assert sorted(meta["arch"]["removed"]) == sorted(r["block"] for r in d["removed"])
    bs, bsq, bsqd = (str(tmp_path / f"{c}.pt") for c in ("bs", "bsq", "bsqd"))
    s = run_stage(params("bs", "resnet20", 0.5, epochs=1, macs_keep=0.7, steps=1), digits_cache, bs, b)["structured"]
    assert s["macs_before"] == d["macs_after"] and s["macs_after"] < s["macs_before"]
    run_stage(params("bsq", "resnet20", 0.5, epochs=1), digits_cache, bsq, bs)
    run_stage(params("bsqd", "resnet20", 0.5, epochs=1), digits_cache, bsqd, bsq, teacher=resnet20_dense)
    deployed = str(tmp_path / "deployed.pt")
    deploy(bsqd, deployed)
    int8, dmeta = load_model(deployed)
    assert dmeta["form"] == "int8" and deployed_macs(deployed) == s["macs_after"]
    assert sorted(dmeta["arch"]["removed"]) == sorted(meta["arch"]["removed"])
    x = torch.randn(8, 3, 32, 32)
    export_onnx(deployed, str(tmp_path / "deployed.onnx"))
    ov = make_runner("openvino", deployed, str(tmp_path / "deployed.onnx"), 1)
    assert (ov(x).argmax(1) == int8(x).argmax(1)).float().mean().item() >= 0.75


def test_the_probe_refuses_depth_pruning_where_there_is_no_residual_block():
    plain = BackboneSpec("plain", f"{Path(__file__).stem}:Plain", image_size=32)
    out = probe(plain, 1.0, "torch")
    assert not out["depth"]["ok"] and "no residual block with an identity shortcut" in out["depth"]["what"]
    assert "drop 'b'" in out["depth"]["fix"] and out["build"]["ok"]
    assert probe(BackboneSpec("r20", "pqd.models.resnet_cifar:resnet20", takes_width=True), 0.25, "torch")["depth"][
        "ok"
    ]
