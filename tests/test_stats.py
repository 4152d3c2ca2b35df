"""pqd.stats against cases with known answers (identical models, a constructed difference, exact
McNemar, Holm with NaN, Wilson at 100%, letter groups, mismatched inputs), and its calibration by
simulation with a known truth (bench/stats_calibration.py --quick, targets of issue 21)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pqd import stats

ROOT = Path(__file__).resolve().parents[1]


def correctness(rng, seeds, n, p):
    return rng.random((seeds, n)) < p


def test_identical_predictions_differ_by_zero_with_p_one():
    a = correctness(np.random.default_rng(0), 3, 2000, 0.8)
    c = stats.with_holm([stats.paired_comparison("a", "b", a, a.copy())])[0]
    assert c.diff == 0.0 and c.low == 0.0 and c.high == 0.0 and c.p_value == 1.0
    assert c.p_holm == 1.0 and not c.significant


def test_a_constructed_difference_is_covered_by_the_ci_which_excludes_zero():
    """B = A with 3% of the images A gets right (in every seed) flipped to wrong; seeds differ by
    training noise of their own: true difference 3 points."""
    rng = np.random.default_rng(1)
    n, seeds = 5000, 3
    a = correctness(rng, seeds, n, 0.85)
    b = a.copy()
    flip = rng.choice(n, size=int(0.03 * n), replace=False)
    b[:, flip] = False
    true = 100.0 * (a.mean() - b.mean())
    c = stats.paired_comparison("a", "b", a, b)
    assert c.low <= true <= c.high and c.low > 0
    c = stats.with_holm([c] + [stats.paired_comparison("a", "a2", a, a.copy())])[0]
    assert abs(c.diff - true) < 1e-9 and c.p_value < 0.01 and c.significant  # t with 2 df: seeds agree here


def test_one_seed_never_calls_a_difference_significant():
    """With one seed training noise is unseen: even a 5-point gap on 10,000 images gets no verdict."""
    rng = np.random.default_rng(2)
    a, b = correctness(rng, 1, 10000, 0.9), correctness(rng, 1, 10000, 0.85)
    c = stats.with_holm([stats.paired_comparison("a", "b", a, b)])[0]
    assert c.p_value < 1e-10 and not c.judged and not c.significant and "training noise unseen" in c.noise
    assert stats.minimum_detectable_effect(c.components) is None and stats.seeds_needed(c.components, 1.0) is None


def test_three_discordant_images_against_none_give_exact_mcnemars_p():
    """The normal approximation gives p = 0.08 for 3 vs 0 differing images; exact McNemar 0.25."""
    a = np.ones((1, 500), bool)
    b = a.copy()
    b[0, :3] = False
    assert stats.paired_comparison("a", "b", a, b).p_value == pytest.approx(0.25)
    assert stats.exact_mcnemar(3, 0) == pytest.approx(0.25) and stats.exact_mcnemar(0, 0) == 1.0


def test_identical_seeds_count_the_images_once():
    """Three seeds with exactly the same predictions: the variance of the mean is the image
    variance over N (image noise is shared by the seeds, not divided by S x N)."""
    row = correctness(np.random.default_rng(3), 1, 4000, 0.8)
    comp = stats.components(np.repeat(row, 3, axis=0).astype(float))
    assert comp.variance == pytest.approx(row.astype(float).var(ddof=1) / 4000, rel=1e-9)
    assert comp.ms_seed == 0.0
    # ... and identical seeds are one model (an import, a stage that ignores the seed): its training
    # noise is absent, not unseen, so its test is that of its images, as for one seed; seeds one
    # image apart are nearly that (Satterthwaite's df follow the image term that dominates)
    other = row.copy()
    other[0, :60] = ~other[0, :60]
    assert stats.components(np.repeat(row ^ other, 3, axis=0).astype(float)).df == 3999
    one, three = stats.accuracy_interval(row), stats.accuracy_interval(np.repeat(row, 3, axis=0))
    assert (three.low, three.high) == pytest.approx((one.low, one.high), rel=1e-3)
    near = np.repeat(row ^ other, 3, axis=0)
    near[1, 100] = ~near[1, 100]
    assert stats.components(near.astype(float)).df > 1000


def test_seeds_with_equal_means_that_disagree_are_not_noise_free():
    """Two seeds whose A - B means are exactly equal (10 images each, different ones): the seed term
    is 0, yet the cells disagree. It was a zero-width CI and p 2e-6; now the residual's noise counts."""
    a, b = np.zeros((2, 1000)), np.zeros((2, 1000))
    a[0, :10], a[1, 10:20] = 1, 1
    c = stats.with_holm([stats.paired_comparison("a", "b", a, b)])[0]
    assert c.low < 0 < c.high and c.p_value > 0.05 and not c.significant
    b[0, 20:30], b[1, 30:40] = 1, 1
    c = stats.paired_comparison("a", "b", a, b)
    assert c.diff == 0 and c.high - c.low > 1.0 and stats.minimum_detectable_effect(c.components) is not None


def test_detectable_effect_shrinks_with_every_seed_added():
    """The same estimator at the observed and at projected seed counts (it printed 3.86, 0.31, 0.81,
    0.64 points for 2, 3, 4, 5 seeds when only the projection floored the seed term)."""
    comp = stats.Components(0.0, 3, 2000, ms_seed=0.002, ms_image=0.03, ms_resid=0.03)
    mdes = [stats.minimum_detectable_effect(comp, n_seeds=s) for s in range(2, 9)]
    assert all(x > y for x, y in zip(mdes, mdes[1:])), mdes


def test_accuracy_interval_is_wilson_with_one_seed():
    a = np.zeros((1, 1000), bool)
    a[0, :900] = True
    iv = stats.accuracy_interval(a)
    low, high = stats.wilson(0.9, 1000, 1.959963984540054)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((90.0, 100 * low, 100 * high))
    # hand-computed Wilson 95% interval of 900 / 1000: [87.99, 91.70]
    assert iv.low == pytest.approx(87.99, abs=0.01) and iv.high == pytest.approx(91.70, abs=0.01)


def test_a_pipeline_right_on_every_image_keeps_a_lower_bound():
    """At 100% observed a percentile interval is [100, 100]; Wilson's lower end is n / (n + z^2)."""
    for seeds in (1, 3):
        iv = stats.accuracy_interval(np.ones((seeds, 360), bool))
        assert iv.mean == 100.0 and iv.high == 100.0
        assert iv.low == pytest.approx(100 * 360 / (360 + 1.959963984540054**2), abs=1e-6)


def test_holm_against_hand_computed_cases_and_nan():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # a NaN sorted first used to turn every later p into 1; now it stays NaN, outside the family
    out = stats.holm([math.nan, 0.01, 0.02])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.02])


def test_letter_groups_do_not_claim_an_order_the_tests_do_not_give():
    """A > C significant, A ~ B, B ~ C: B shares a letter with each (the old rank gave 1, 1, 2)."""

    def comp(a, b, p):
        return stats.Comparison(a, b, 1.0, 0.5, 1.5, p, p_holm=p, n_seeds=3)

    groups = stats.letter_groups(
        {"A": 85.0, "B": 84.5, "C": 84.0}, [comp("A", "B", 0.5), comp("A", "C", 0.01), comp("B", "C", 0.4)]
    )
    assert groups == {"A": "a", "B": "ab", "C": "b"}
    assert stats.letter_groups({"A": 1.0, "B": 0.0}, [comp("A", "B", 0.5)]) == {"A": "a", "B": "a"}


def test_minimum_detectable_effect_follows_the_observed_noise_and_the_family():
    rng = np.random.default_rng(5)
    a, b = correctness(rng, 3, 10000, 0.85), correctness(rng, 3, 10000, 0.85)
    comp = stats.paired_comparison("a", "b", a, b).components
    one, family = stats.minimum_detectable_effect(comp), stats.minimum_detectable_effect(comp, family=15)
    more = stats.minimum_detectable_effect(comp, n_seeds=10)
    assert one is not None and family > one > more > 0
    need = stats.seeds_needed(comp, 1.0)
    assert need is not None and stats.minimum_detectable_effect(comp, n_seeds=need) <= 1.0
    assert need == 2 or stats.minimum_detectable_effect(comp, n_seeds=need - 1) > 1.0
    same = stats.paired_comparison("a", "b", a, a.copy()).components
    assert stats.minimum_detectable_effect(same) is None  # never disagree: cannot be estimated, not 0


def test_speedup_interval_is_the_paired_per_round_ratio():
    rng = np.random.default_rng(4)
    dense = [rng.normal(2.0, 0.2, 40).clip(1.0) for _ in range(3)]
    model = [d / 2.5 for d in dense]  # every round exactly 2.5x faster, however noisy the machine
    iv = stats.ratio_interval(dense, model)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((2.5, 2.5, 2.5))
    lat = stats.ratio_interval(model[:1])  # one seed: batch medians of its rounds
    assert lat.low < lat.mean < lat.high


def test_mismatched_inputs_are_errors_not_truncations():
    with pytest.raises(ValueError, match="3 seeds .* but 2"):
        stats.ratio_interval([np.ones(40)] * 3, [np.ones(40)] * 2)
    with pytest.raises(ValueError, match="40 timing rounds of the model but 39"):
        stats.ratio_interval([np.ones(40)], [np.ones(39)])
    with pytest.raises(ValueError, match="NaN"):
        stats.ratio_interval([np.array([1.0, np.nan])])
    with pytest.raises(ValueError, match="seed 1: no timing rounds recorded"):
        stats.ratio_interval([np.ones(40), None])
    with pytest.raises(ValueError, match="compare the same seeds and images"):
        stats.paired_comparison("a", "b", np.ones((3, 10)), np.ones((2, 10)))


def test_calibration_by_simulation_meets_its_targets():
    """Simulated experiments with a known truth through the summary's own functions (issue 21):
    false positives and family-wise error at 3 seeds, coverage of the accuracy interval from 85%
    to 99.7% top-1 and 360 to 10,000 images."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench/stats_calibration.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    m = re.fullmatch(
        r"calibration: type1_3seeds=(\S+) fwer15_3seeds=(\S+) coverage_acc=(\S+) "
        r"coverage_ceiling=(\S+) power05_5seeds=(\S+)",
        last,
    )
    assert m, last
    type1, fwer, cov, cov_ceiling, power = map(float, m.groups())
    assert type1 <= 0.06 and fwer <= 0.06 and cov >= 0.93 and cov_ceiling >= 0.93, res.stdout
    assert 0.0 <= power <= 1.0
