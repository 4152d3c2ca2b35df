"""Structured pruning to a measured latency target (stage s, target: latency): the curve, the
choice of channel ratio, the config errors, and the latency actually reached."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from helpers import ROOT, SCHEMA

from pqd import config as pc
from pqd.channels import prune_once
from pqd.checkpoint import save_checkpoint
from pqd.constants import LATENCY_TOLERANCE
from pqd.errors import PqdError
from pqd.latency_budget import monotone_keep, ratio_for_latency, target_keep
from pqd.latency_curve import measure_curve, per_round_keep
from pqd.measure import interleaved_latency
from pqd.models import build_model
from pqd.params import CurveParams, MeasureSettings


def curve(*keeps, ref_ms=2.0):
    return {
        "form": "fp32",
        "runtime": "torch",
        "threads": 1,
        "reference_ms": ref_ms,
        "points": [{"ratio": round(0.1 * i, 1), "keep": k} for i, k in enumerate(keeps)],
    }


def test_ratio_is_interpolated_between_the_points_that_bracket_the_target():
    c = curve(1.0, 0.8, 0.6, 0.4)
    ratio, predicted = ratio_for_latency(c, 0.7)
    assert ratio == pytest.approx(0.15) and predicted == 0.7
    assert ratio_for_latency(c, 0.4)[0] == pytest.approx(0.3)
    # a noisy, non-monotone curve is read through its monotone fit: 0.9 and 0.95 pool into 0.925
    assert ratio_for_latency(curve(1.0, 0.9, 0.95, 0.5), 0.7)[0] == pytest.approx(0.2 + 0.1 * 0.225 / 0.425)
    # a point timed slower than the reference (1.05: noise) is pooled, never above the reference's 1.0
    assert [k for _, k in monotone_keep(curve(1.0, 1.05, 0.95, 0.5))] == pytest.approx([1.0, 1.0, 0.95, 0.5])
    # latency_ms is read against the curve's unpruned milliseconds
    assert target_keep(c, {"latency_ms": 1.0}) == 0.5 and target_keep(c, {"latency_keep": 0.3}) == 0.3


def test_an_unreachable_target_names_the_fastest_point_and_the_setting_to_change():
    with pytest.raises(PqdError) as e:
        ratio_for_latency(curve(1.0, 0.9, 0.8, 0.86), 0.5)
    msg = str(e.value)  # the fastest point of the fit: 0.8 and 0.86 pool into 0.83
    assert "\n" not in msg and "keeps 0.83" in msg and "stages.s.latency_keep to 0.83" in msg


def cfg_with(s: dict, **top):
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["stages"]["s"].update(s)
    cfg.update(top)
    return cfg


@pytest.mark.parametrize(
    "s, top, says",
    [
        ({"target": "latency"}, {}, "set exactly one of stages.s.latency_keep"),
        ({"target": "latency", "latency_keep": 0.5, "latency_ms": 1.0}, {}, "set exactly one"),
        ({"latency_keep": 0.5}, {}, "stages.s.target is macs, so it would be ignored"),
    ],
)
def test_budget_settings_that_contradict_each_other_fail_at_dag_time(s, top, says):
    cfg = cfg_with(s, **top)
    exp = cfg["experiments"][0]
    with pytest.raises(PqdError, match=says.replace(".", r"\.")):
        pc.stage_params(pc.experiment(cfg, exp, SCHEMA), exp, "s")


def test_a_latency_target_asks_for_the_curve_and_the_reference_of_the_model_entering_s():
    cfg = cfg_with({"target": "latency", "latency_keep": 0.6})
    exp = cfg["experiments"][0]
    e = pc.experiment(cfg, exp, SCHEMA)
    assert pc.needs_curve(e, "ps") and not pc.needs_curve(e, "p")
    assert pc.latency_reference("psq") == "p" and pc.latency_reference("pq") is None
    p = pc.curve_params(e, "ps")
    assert p.form == "int8" and p.ratios[0] == 0 and p.measure.runtime == e["measure"]["runtime"]


def test_latency_targeted_pruning_lands_within_tolerance_of_its_target(tmp_path):
    """VGG-16-BN at width 0.25, FP32 in PyTorch, one thread (compute-bound enough at batch 1 for
    pruning to show): the ratio read off the measured curve for 0.6 of the latency gives a model
    that, timed beside the unpruned one, keeps 0.6 +- LATENCY_TOLERANCE of its latency. (0.6, not
    0.5: on an AVX2-only EPYC the curve's floor at 80% of the channels is about 0.5 (0.516 in one CI run), so a 0.5
    target sat on the curve's end and the test failed on timing noise alone.)"""
    torch.manual_seed(0)
    model = build_model("vgg16", 10, 0.25).eval()
    path = tmp_path / "in.pt"
    save_checkpoint(
        str(path),
        model.state_dict(),
        {"backbone": "vgg16", "dataset": "digits", "num_classes": 10, "width": 0.25, "form": "fp32"},
    )
    timing = MeasureSettings(runtime="torch", threads=1, runs=200, warmup=10, rounds=20)
    c = measure_curve(
        str(path),
        CurveParams(measure=timing, form="fp32", allocation="uniform", round_to=8, ratios=list(pc.CURVE_RATIOS)),
    )
    keeps = [p["keep"] for p in c["points"]]
    assert keeps[0] == pytest.approx(1.0) and min(keeps) < 0.6, keeps  # the curve reaches past the target
    ratio, predicted = ratio_for_latency(c, 0.6)
    pruned = prune_once(model, ratio, 32, "uniform", round_to=8).eval()
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths  # round_to holds under a latency target too
    res = interleaved_latency(
        {"pruned": pruned, "reference": copy.deepcopy(model)}, runs=200, warmup=10, rounds=20, image_size=32
    )
    measured = per_round_keep(res["pruned"]["round_ms"], res["reference"]["round_ms"])
    assert abs(measured - 0.6) <= LATENCY_TOLERANCE, (ratio, measured, keeps)
