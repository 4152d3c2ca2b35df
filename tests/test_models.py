import pytest
import torch

from pqd.catalog import BACKBONES
from pqd.models import build_model


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_runs_on_32x32_at_reduced_width(name):
    m = build_model(name, num_classes=7, width=0.125).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_full_width_parameter_counts_match_the_reference_architectures():
    counts = {n: sum(p.numel() for p in build_model(n, 10).parameters()) for n in ("resnet20", "resnet56", "vgg16")}
    assert counts["resnet20"] == 269_722  # He et al.: 0.27M
    assert counts["resnet56"] == 853_018  # He et al.: 0.85M
    assert 14.7e6 < counts["vgg16"] < 14.8e6


def test_width_multiplier_scales_channels():
    small = sum(p.numel() for p in build_model("resnet18", 10, 0.25).parameters())
    full = sum(p.numel() for p in build_model("resnet18", 10, 1.0).parameters())
    assert small < full / 10
