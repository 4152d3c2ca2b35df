"""The verdict that opens summary.md (pqd.verdict) on constructed summaries with a known answer: a
clear winner, a tie, nothing within the tolerance, one seed; and the frontier plot's labels, which
must not overlap however close the points are."""

from __future__ import annotations

import pandas as pd
import pytest

from pqd import verdict
from pqd.report import frontier_figure
from pqd.stats import Comparison


def row(p, acc, speed, size_ratio, form="int8", group="a", spread=0.1):
    return {
        "pipeline": p,
        "deployed_form": form,
        "runtime": "openvino",
        "group": group,
        "accuracy_mean": acc,
        "accuracy_ci95_low": acc - 0.7,
        "accuracy_ci95_high": acc + 0.7,
        "size_bytes": int(1e6 / size_ratio),
        "size_gzip_bytes": int(0.9e6 / size_ratio),
        "size_ratio": size_ratio,
        "speedup_same_runtime_mean": speed,
        "speedup_same_runtime_ci95_low": speed * (1 - spread),
        "speedup_same_runtime_ci95_high": speed * (1 + spread),
    }


def comp(a, b, diff, half, p):
    return Comparison(a, b, diff, diff - half, diff + half, p, p_holm=p, n_seeds=3)


def summary_of(rows):
    return pd.DataFrame(rows)


DENSE = row("dense", 85.0, 1.0, 1.0, form="fp32")
CTL = row("ctl-dpq", 85.1, 1.0, 1.0, form="fp32")


def test_a_clear_winner_is_named_with_its_cost_control_and_what_fails():
    df = summary_of(
        [
            DENSE,
            row("q", 84.8, 1.5, 3.4, spread=0.03),
            row("pqd", 84.9, 1.9, 3.4, spread=0.03),
            row("sqd", 80.0, 3.0, 8.0, group="b"),
            CTL,
        ]
    )
    vs_dense = {
        "q": comp("q", "dense", -0.2, 0.5, 0.4),
        "pqd": comp("pqd", "dense", -0.1, 0.4, 0.6),
        "sqd": comp("sqd", "dense", -5.0, 1.0, 1e-4),
        "ctl-dpq": comp("ctl-dpq", "dense", 0.1, 0.3, 0.5),
    }
    vs_control = {"pqd": comp("pqd", "ctl-dpq", -0.2, 0.4, 0.3)}
    d = verdict.decide(df, vs_dense, 3, max_loss=1.0)
    assert (d.fastest, d.smallest, d.qualifying) == ("pqd", "pqd", ["q", "pqd"])
    assert d.as_fast == []  # q's speedup CI [1.46, 1.55] is below pqd's [1.84, 1.96]
    text = verdict.verdict_markdown(df, d, vs_dense, vs_control)
    assert text[0].startswith("**Verdict** (3 seeds; a pipeline qualifies when it loses at most 1 point(s)")
    assert (
        "ship **pqd**, the fastest that qualifies: 1.90x [1.84, 1.96] faster than dense FP32 in openvino, "
        "3.40x smaller, top-1 84.90% (-0.10 points [-0.50, +0.30] against dense)" in text[0]
    )
    assert "cannot be told apart from its equal-budget control ctl-dpq" in text[0]
    assert "It is also the smallest that qualifies." in text[0] and "Do not qualify: sqd." in text[0]
    table = {r.split(" | ")[1]: r for r in text if r.startswith("| ") and "---" not in r}
    assert table["pqd"].endswith("| yes: fastest and smallest |") and table["sqd"].endswith("| no |")
    assert table["dense"].endswith("| - |") and "ctl-dpq: -0.20 [-0.60, +0.20], cannot be told apart" in table["pqd"]
    # sqd is 3x faster but loses 4-6 points: never the answer at a 1-point tolerance; at 6 points it is
    assert verdict.decide(df, vs_dense, 3, max_loss=6.0).fastest == "sqd"


def test_a_tie_in_speed_is_said_and_the_smallest_can_differ():
    df = summary_of([DENSE, row("pqd", 84.9, 1.90, 3.4), row("qpd", 85.0, 1.85, 3.4), row("sq", 84.5, 1.7, 6.0)])
    vs_dense = {
        "pqd": comp("pqd", "dense", -0.1, 0.4, 0.6),
        "qpd": comp("qpd", "dense", 0.0, 0.4, 1.0),
        "sq": comp("sq", "dense", -0.5, 0.4, 0.04),
    }
    d = verdict.decide(df, vs_dense, 3, max_loss=1.0)
    assert (d.fastest, d.smallest) == ("pqd", "sq") and d.as_fast == ["qpd", "sq"]
    assert d.same_group == ["qpd", "sq"]  # every row shares group a; dense and controls are yardsticks
    text = verdict.verdict_sentences(df, d, vs_dense, {})[0]
    assert "As fast within the timing noise (speedup CIs overlap): qpd, sq." in text
    assert "The smallest that qualifies is **sq**: 1.70x" in text
    # without a tolerance only what cannot be told from dense qualifies: sq is significantly worse
    strict = verdict.decide(df, vs_dense, 3, max_loss=None)
    assert strict.qualifying == ["pqd", "qpd"] and strict.smallest in ("pqd", "qpd")


def test_nothing_within_the_tolerance_names_the_closest_and_what_to_do():
    df = summary_of([DENSE, row("pqd", 83.0, 1.9, 3.4), row("sqd", 80.0, 3.0, 8.0)])
    vs_dense = {"pqd": comp("pqd", "dense", -2.0, 0.5, 1e-3), "sqd": comp("sqd", "dense", -5.0, 1.0, 1e-4)}
    d = verdict.decide(df, vs_dense, 3, max_loss=1.0)
    assert d.fastest is None and d.qualifying == [] and d.closest == "pqd"
    text = verdict.verdict_sentences(df, d, vs_dense, {})[0]
    assert "**no compressed pipeline qualifies.** The closest is **pqd**" in text
    assert "a loss of up to 2.50 points at its CI's far end" in text and "Loosen `report.max_loss`" in text


def test_one_seed_is_worded_as_a_reading_not_a_verdict():
    df = summary_of([DENSE, row("pqd", 84.9, 1.9, 3.4)])
    c = Comparison("pqd", "dense", -0.1, -0.5, 0.3, 0.6, p_holm=0.6, n_seeds=1)
    d = verdict.decide(df, {"pqd": c}, 1, max_loss=1.0)
    text = verdict.verdict_sentences(df, d, {"pqd": c}, {})[0]
    assert text.startswith("**Verdict** (1 seed;") and "**one seed: training noise is unseen**" in text
    assert "run 3 or more seeds" in text and "before shipping on it. Ship **pqd**, the fastest" in text
    page = verdict.verdict_html("x", df, d, {"pqd": c}, {}, ["a note"])
    assert "<b>one seed: training noise is unseen</b>" in page and "<td>pqd</td>" in page


@pytest.mark.parametrize("spread", [False, True])
def test_frontier_labels_do_not_overlap_and_stay_by_their_points(spread):
    """Eight INT8 points within 2% of each other on both axes (the quick start's six orders lay
    within 0.05 and printed their names over each other), and points far apart (each label beside
    its own point, not pushed away by the boxes of labels that are elsewhere)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.text import Text

    if spread:
        rows = [DENSE] + [row(f"p{i}", 80.0 + i, 1.2 + 0.4 * i, 2.0 + i) for i in range(5)]
    else:
        rows = [DENSE] + [row(f"p{i}", 84.9 + 0.02 * i, 1.90 + 0.005 * i, 3.4 + 0.001 * i) for i in range(8)] + [CTL]
    fig = frontier_figure(summary_of(rows), [], "exp", recommended="p3")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for t in ax.texts:
            t.update_positions(renderer)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the label, without its leader line
        assert len(boxes) == len(rows)
        overlaps = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
        assert overlaps == [], overlaps
        assert sorted(t.get_text() for t in ax.texts) == sorted(str(i + 1) for i in range(len(rows)))
        far = [np.hypot(*(np.array(b.p0) - ax.transData.transform(t.xy))) for t, b in zip(ax.texts, boxes)]
        assert max(far) < (12 if spread else 40), far  # pixels from its point to the label's corner
    key = [t.get_text() for t in fig.texts if "1 dense" in t.get_text()]
    assert key and "5 p3" in key[0]
    assert any("recommended: p3" in t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    plt.close(fig)


@pytest.mark.parametrize("max_loss", [0.0, 0.5])
def test_a_pipeline_better_than_dense_qualifies_at_any_tolerance(max_loss):
    c = comp("pqd", "dense", 0.8, 0.3, 0.001)
    assert verdict.qualifies(c, max_loss) and verdict.qualifies(c, None)


def test_a_pipeline_that_loses_more_than_the_tolerance_is_warned_with_its_budget():
    from pqd.report import accuracy_loss_warnings

    stages = [
        {"stage": "dense", "settings": {}},
        {"stage": "s", "settings": {"target": "latency", "latency_keep": 0.6, "macs_keep": 0.5, "lr": 0.01}},
        {"stage": "q", "settings": {"lr": 0.01}},
    ]
    table = {
        "dense": {0: {"stages": stages[:1]}},
        "sq": {0: {"stages": stages}},
        "q": {0: {"stages": [stages[0], stages[2]]}},
        "ctl-dq": {0: {"stages": stages[:1]}},
    }
    vs_dense = {"sq": comp("sq", "dense", -51.4, 5.0, 1e-4), "q": comp("q", "dense", -0.3, 0.4, 0.3)}
    vs_control = {"sq": comp("sq", "ctl-dq", -52.0, 5.0, 1e-4)}
    out = accuracy_loss_warnings(table, [0], vs_dense, vs_control, 1.0)
    assert out == [
        "sq: top-1 -51.40 points [-56.40, -46.40] against dense; -52.00 points [-57.00, -47.00] against "
        "ctl-dq, more than the 1 point(s) allowed (report.max_loss); its budget: s (target latency, "
        "latency_keep 0.6). Loosen it, train longer (protocols), or ship another pipeline."
    ]
    assert accuracy_loss_warnings(table, [0], vs_dense, vs_control, 60.0) == []
    vs_dense["q"] = comp("q", "dense", -2.0, 0.4, 1e-3)
    assert "q: top-1 -2.00 points" in accuracy_loss_warnings(table, [0], vs_dense, {}, None)[1]
    assert "none of its stages removes weights" in accuracy_loss_warnings(table, [0], vs_dense, {}, None)[1]


def test_the_verdict_names_the_speedup_over_the_fastest_untrained_baseline():
    """On a BF16 CPU OpenVINO's default runs dense about 1.8x faster than forced f32: the verdict says
    what compression buys over that too, and the table has its column."""
    base = {
        "baseline": "dense_default (bf16)",
        "speedup_vs_baseline_mean": 1.05,
        "speedup_vs_baseline_ci95_low": 0.98,
        "speedup_vs_baseline_ci95_high": 1.12,
    }
    df = summary_of([{**DENSE, **base, "speedup_vs_baseline_mean": 0.55}, {**row("pqd", 84.9, 1.9, 3.4), **base}])
    vs_dense = {"pqd": comp("pqd", "dense", -0.1, 0.4, 0.6)}
    d = verdict.decide(df, vs_dense, 3, max_loss=1.0)
    text = verdict.verdict_sentences(df, d, vs_dense, {})[0]
    assert (
        "1.90x [1.71, 2.09] faster than dense FP32 in openvino and 1.05x [0.98, 1.12] the speed of the fastest "
        "untrained dense form (dense_default (bf16): what the runtime gives without pqd), not told apart from it"
    ) in text
    rows = verdict.headline_rows(df, d, vs_dense, {})
    assert rows[1][verdict.HEADLINE.index("speedup vs fastest untrained dense [95% CI]")] == (
        "1.05x [0.98, 1.12] (dense_default (bf16))"
    )
    # faster with confidence, and slower with confidence (an INT8 ResNet-20 against bf16 dense on an AMX
    # Xeon, 0.81x): said so, and then compression is shipped for its size, not its speed
    for (lo, mean, hi), said in (
        ((1.1, 1.2, 1.3), "and 1.20x [1.10, 1.30] faster than the fastest untrained dense form"),
        ((0.72, 0.81, 0.93), "but only 0.81x [0.72, 0.93] the speed of the fastest untrained dense form"),
    ):
        df.loc[1, ["speedup_vs_baseline_ci95_low", "speedup_vs_baseline_mean", "speedup_vs_baseline_ci95_high"]] = [
            lo,
            mean,
            hi,
        ]
        text = verdict.verdict_sentences(df, d, vs_dense, {})[0]
        assert said in text
        assert ("ship pqd for its size (3.40x smaller), or that dense form for speed" in text) == (hi < 1)


def test_a_pipeline_faster_at_batch_1_but_slower_at_throughput_gets_the_caveat():
    """Batch-1 latency and images/s on busy cores can rank models differently (OpenVINO's bf16 dense
    outran an INT8 ResNet-20 at its throughput setting on an AMX CPU): the verdict says so when the
    recommended pipeline's throughput CI is below the baseline's."""
    base = {"baseline": "dense_default (bf16)", "speedup_vs_baseline_mean": 1.2}
    base |= {"speedup_vs_baseline_ci95_low": 1.1, "speedup_vs_baseline_ci95_high": 1.3}
    slower = {"throughput_vs_baseline_mean": 0.8, "throughput_vs_baseline_ci95_low": 0.7}
    df = summary_of([{**DENSE, **base}, {**row("pqd", 84.9, 1.9, 3.4), **base, **slower}])
    vs_dense = {"pqd": comp("pqd", "dense", -0.1, 0.4, 0.6)}
    d = verdict.decide(df, vs_dense, 3, max_loss=1.0)
    for high, caveat in ((0.9, True), (1.05, False)):
        df.loc[1, "throughput_vs_baseline_ci95_high"] = high
        text = verdict.verdict_sentences(df, d, vs_dense, {})[0]
        assert ("processes 0.80x [0.70, 0.90] the images/s of the fastest untrained dense form" in text) == caveat
        cell = verdict.headline_rows(df, d, vs_dense, {})[1][
            verdict.HEADLINE.index("throughput vs the fastest untrained dense there [95% CI]")
        ]
        assert cell == f"0.80x [0.70, {high:.2f}]"
    df["throughput_vs_baseline_mean"] = float("nan")  # not measured: no caveat, a dash
    assert "images/s" not in verdict.verdict_sentences(df, d, vs_dense, {})[0]
    assert (
        verdict.headline_rows(df, d, vs_dense, {})[1][
            verdict.HEADLINE.index("throughput vs the fastest untrained dense there [95% CI]")
        ]
        == "-"
    )


def test_replicates_with_different_architectures_are_warned():
    from pqd.report import architecture_warnings

    table = {
        "sq": {0: {"macs": 12.3e6}, 1: {"macs": 14.0e6}, 2: {"macs": 31.5e6}},
        "q": {0: {"macs": 4e7}, 1: {"macs": 4e7}, 2: {"macs": 4e7}},
    }
    out = architecture_warnings(table, [0, 1, 2])
    assert out == [
        "sq: its replicates deploy different architectures (MMACs seed 0: 12.3, seed 1: 14.0, seed 2: "
        "31.5); its CIs mix them. With a latency target, its replicates read their own latency curves "
        "(shared only when s prunes the imported dense model): give a MACs target for one architecture."
    ]


def test_the_loss_warning_names_a_starting_stages_budget():
    from pqd.report import accuracy_loss_warnings

    table = {"eq": {0: {"stages": [{"stage": "e", "settings": {"sparsity": 0.9}}, {"stage": "q", "settings": {}}]}}}
    out = accuracy_loss_warnings(table, [0], {"eq": comp("eq", "dense", -5.0, 1.0, 1e-4)}, {}, 1.0)
    assert len(out) == 1 and "its budget: e (sparsity 0.9)" in out[0]
