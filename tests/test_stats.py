"""pqd.stats against cases with known answers: identical models, a constructed difference, Holm,
the minimum detectable effect and the latency intervals."""

import numpy as np
import pytest

from pqd import stats


def correctness(rng, seeds, n, p):
    return rng.random((seeds, n)) < p


def test_identical_predictions_differ_by_zero_with_p_one():
    rng = np.random.default_rng(0)
    a = correctness(rng, 3, 2000, 0.8)
    res = stats.Resampler(3, 2000, draws=500)
    c = stats.paired_comparison("a", "b", a, a.copy(), res)
    assert c.diff == 0.0 and c.low == 0.0 and c.high == 0.0 and c.p_value == 1.0
    assert stats.with_holm([c])[0].p_holm == 1.0 and not stats.with_holm([c])[0].significant


def test_a_constructed_difference_is_covered_by_the_ci_which_excludes_zero():
    """B = A with 3% of the images A gets right flipped to wrong: true difference 3 points."""
    rng = np.random.default_rng(1)
    n, seeds = 5000, 3
    a = correctness(rng, seeds, n, 0.85)
    b = a.copy()
    flip = rng.choice(n, size=int(0.03 * n / 0.85), replace=False)
    b[:, flip] &= False
    true = 100.0 * (a.mean() - b.mean())
    c = stats.paired_comparison("a", "b", a, b, stats.Resampler(seeds, n, draws=1000))
    assert c.low <= true <= c.high and c.low > 0 and c.p_value < 0.01
    assert abs(c.diff - true) < 1e-4
    # far below what 1000 resamples count (1e-3), so that Holm over 105 pairs still calls it
    assert c.p_value < 1e-6 and stats.holm([c.p_value] + [1.0] * 104)[0] < 0.05


def test_no_true_difference_gives_a_ci_that_covers_zero():
    rng = np.random.default_rng(2)
    a, b = correctness(rng, 2, 3000, 0.7), correctness(rng, 2, 3000, 0.7)
    c = stats.paired_comparison("a", "b", a, b, stats.Resampler(2, 3000, draws=1000))
    # independent draws of the same accuracy: the CI covers 0 unless the sample itself differs by chance
    assert c.low < 100 * (a.mean() - b.mean()) < c.high
    assert (c.low <= 0 <= c.high) == (c.p_value >= 0.05)


def test_accuracy_interval_matches_the_binomial_standard_error():
    rng = np.random.default_rng(3)
    a = correctness(rng, 1, 10000, 0.9)
    iv = stats.accuracy_interval(a, stats.Resampler(1, 10000, draws=2000))
    se = 100 * np.sqrt(0.9 * 0.1 / 10000)  # 0.3 points
    assert iv.low < iv.mean < iv.high
    assert abs((iv.high - iv.low) - 2 * 1.96 * se) < 0.25 * 2 * 1.96 * se


def test_holm_against_a_hand_computed_case():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_minimum_detectable_effect_shrinks_with_seeds_and_images():
    base = stats.minimum_detectable_effect(0.1, 10000, 1)
    # (1.96 + 0.84) * sqrt(0.1 / 10000) = 0.28 points
    assert base == pytest.approx(100 * 2.8016 * np.sqrt(0.1 / 10000), rel=1e-3)
    assert stats.minimum_detectable_effect(0.1, 10000, 4) == pytest.approx(base / 2)
    assert stats.minimum_detectable_effect(0.0, 10000, 4) == 0.0


def test_speedup_interval_is_the_paired_per_round_ratio():
    rng = np.random.default_rng(4)
    dense = [rng.normal(2.0, 0.2, 40).clip(1.0) for _ in range(3)]
    model = [d / 2.5 for d in dense]  # every round exactly 2.5x faster, however noisy the machine
    iv = stats.ratio_interval(dense, model)
    assert iv.mean == pytest.approx(2.5) and iv.low == pytest.approx(2.5) and iv.high == pytest.approx(2.5)
    lat = stats.ratio_interval(model, None)
    assert lat.low < lat.mean < lat.high


def test_a_distilling_stage_that_lowers_top1_is_warned_about_with_its_teacher():
    from pqd.report import student_warnings

    def rep(after_q, after_d):
        return {"stages": [{"stage": "dense", "name": "dense", "accuracy_after": 83.2},
                           {"stage": "q", "name": "qat", "accuracy_after": after_q},
                           {"stage": "d", "name": "distill", "accuracy_after": after_d,
                            "teacher": {"model": "dense", "accuracy": 83.2}}]}

    table = {"qd": {0: rep(87.7, 84.1), 1: rep(87.9, 84.0)}, "pd": {0: rep(86.0, 86.5), 1: rep(86.0, 86.4)}}
    warnings = student_warnings(table, [0, 1])
    assert len(warnings) == 1 and warnings[0].startswith("qd: stage d (distill) lowered top-1 from 87.80% to 84.05%")
    assert "its teacher (dense) scores 83.20%" in warnings[0]
