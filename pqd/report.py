"""Per-pipeline ``report.json`` and the per-experiment summary table and frontier plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pqd.checkpoint import atomic_path, code_version, load_checkpoint, read_json, write_json
from pqd.errors import PqdError


def pipeline_report(
    experiment: str,
    pipeline: str,
    model_path: str,
    eval_path: str,
    latency_path: str,
    dense_eval_path: str,
    output: str,
) -> dict:
    """Combine the measurements of one pipeline with the provenance of its stages."""
    ev, lat, dense = read_json(eval_path), read_json(latency_path), read_json(dense_eval_path)
    meta = load_checkpoint(model_path)["meta"]
    stages = [
        {
            "stage": h["stage"],
            "name": h.get("name", h["stage"]),
            "epochs": h["epochs"],
            "threads": h.get("threads"),
            "wall_s": h.get("wall_s"),
            "accuracy_after": h.get("accuracy"),
            "settings": h["settings"],
            **({"imported_from": h["imported_from"]} if "imported_from" in h else {}),
            # what each stage's spec says its record adds to the report (StageSpec.record)
            **{k: h[k] for k in h.get("reported", ()) if k in h},
        }
        for h in meta["history"]
    ]
    config = meta["history"][-1].get("config") or {}
    rep = {
        "experiment": config.get("experiment", experiment),
        "replicate": experiment,
        "seed": config.get("seed"),
        "backbone": meta["backbone"],
        "dataset": meta["dataset"],
        "pipeline": pipeline,
        "image_size": lat.get("image_size", 32),
        "deployed_form": ev["form"],
        "runtime": ev["runtime"],
        "accuracy_torch": ev["accuracy_torch"],
        "accuracy": ev["accuracy"],
        "dense_accuracy": dense["accuracy"],
        "accuracy_delta": ev["accuracy"] - dense["accuracy"],
        "size_bytes": ev["bytes"],
        "size_gzip_bytes": ev["gzip_bytes"],
        "dense_size_bytes": dense["bytes"],
        "size_ratio": dense["bytes"] / ev["bytes"],
        "size_gzip_ratio": dense["bytes"] / ev["gzip_bytes"],
        "weight_sparsity": ev["weight_sparsity"],
        "weight_sparsity_inner": ev["weight_sparsity_inner"],
        "latency_ms": lat["model"]["median_ms"],
        "latency_p90_ms": lat["model"]["p90_ms"],
        "dense_latency_ms": lat["dense_fp32"]["median_ms"],
        "speedup": lat["speedup_vs_dense_fp32"],
        "speedup_same_runtime": lat["speedup_vs_dense_same_runtime"],
        # against the fastest untrained dense form in this runtime on this CPU (bf16 where it runs so by
        # default), with that baseline's own accuracy in the precision it runs in
        "baseline": lat["baseline"],
        "baseline_precision": lat["inference_precision"].get(lat["baseline"], "f32"),
        "baseline_accuracy": (
            dense.get("accuracy_default_precision", dense["accuracy"])
            if lat["baseline"] == "dense_default"
            else dense["accuracy_torch"]
            if lat["baseline"] == "dense_fp32"
            else dense["accuracy"]
        ),
        "speedup_vs_baseline": lat["speedup_vs_baseline"],
        "inference_precision": lat["inference_precision"],
        **throughput_report(lat),
        "latency_threads": lat["threads"],
        "latency_runs": lat["model"]["runs"],
        # per-round medians, paired by round across the three models (pqd.stats CIs)
        "latency_rounds_ms": {
            **{k: lat[k].get("round_ms") for k in ("model", "dense_fp32", "dense_runtime")},
            "baseline": lat[lat["baseline"]].get("round_ms"),
        },
        "macs": lat["macs"],
        "int8_peak_fraction": lat["int8_peak_fraction"] if ev["form"] == "int8" else None,
        "int8_peak_macs_per_s": lat["int8_peak_macs_per_s"],
        "train_wall_s": sum(s["wall_s"] or 0 for s in stages),
        "latency_target": latency_target_report(stages, lat, ev["form"]),
        "stages": stages,
        "system": lat["system"],
        "config": config,
        "code_version": code_version(),
    }
    write_json(output, rep)
    return rep


def throughput_report(lat: dict) -> dict:
    """Images/s of the deployed model and of the throughput baseline (the untrained dense form with the
    most images/s at the runtime's throughput setting) with their per-round ms per image (paired by
    round, for the summary's CI); None where the latency job measured no throughput
    (``measure.throughput_rounds: 0``, or a report from before it existed)."""
    tput = lat.get("throughput")
    if not tput:
        return {
            "throughput_images_per_s": None,
            "throughput_baseline": None,
            "baseline_throughput_images_per_s": None,
            "throughput_vs_baseline": None,
            "throughput_setting": None,
            "throughput_rounds": None,
        }
    name = lat.get("throughput_baseline", lat["baseline"])  # before it was chosen apart: the batch-1 baseline
    model, base = tput["model"], tput[name]
    return {
        "throughput_images_per_s": model["images_per_s"],
        "throughput_baseline": name,
        "baseline_throughput_images_per_s": base["images_per_s"],
        "throughput_vs_baseline": lat["throughput_vs_baseline"],
        "throughput_setting": {k: model[k] for k in ("batch", "streams", "requests")},
        "throughput_rounds": {"model": model["round_ms_per_image"], "baseline": base["round_ms_per_image"]},
    }


def latency_target_report(stages: list[dict], lat: dict, deployed_form: str) -> Optional[dict]:
    """What structure-removing stages kept of the latency (None when no ``s`` or ``b`` ran): the
    deployed model's latency as a fraction of the model that entered the first of them, both timed in
    the same rounds of the pipeline's latency job in the deployed form and runtime (95% CI over timing
    rounds), beside the budget that stage was given and, for a latency target, the keep its curve
    predicted."""
    from pqd import stats

    # the first structure-removing stage's budget (its record entry holds one: s's "structured", b's "depth")
    budget = next(
        (
            v["budget"]
            for st in stages
            for k, v in st.items()
            if k != "settings" and isinstance(v, dict) and "budget" in v
        ),
        None,
    )
    if budget is None or "reference" not in lat:
        return None
    keep = stats.ratio_interval([lat["model"]["round_ms"]], [lat["reference"]["round_ms"]])
    predicted = budget.get("predicted_keep")
    return {
        "target": budget["target"],
        "target_keep": predicted,
        "form": budget.get("form", deployed_form),
        "deployed_form": deployed_form,
        "runtime": lat["runtime"],
        "threads": lat["threads"],
        "predicted_keep": predicted,
        "predicted_ms": budget.get("predicted_ms"),
        "measured_keep": keep.mean,
        "measured_keep_ci95": [keep.low, keep.high],
        "measured_ms": lat["model"]["median_ms"],
        "reference_ms": lat["reference"]["median_ms"],
        "error": None if predicted is None else keep.mean - predicted,
    }


COLUMNS = [
    "pipeline",
    "deployed_form",
    "runtime",
    "seeds",
    "group",
    "accuracy_mean",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
    "accuracy_delta",
    "size_bytes",
    "size_gzip_bytes",
    "size_ratio",
    "weight_sparsity",
    "macs",
    "latency_ms_mean",
    "latency_ms_ci95_low",
    "latency_ms_ci95_high",
    "speedup_mean",
    "speedup_ci95_low",
    "speedup_ci95_high",
    "speedup_same_runtime_mean",
    "speedup_same_runtime_ci95_low",
    "speedup_same_runtime_ci95_high",
    "baseline",
    "speedup_vs_baseline_mean",
    "speedup_vs_baseline_ci95_low",
    "speedup_vs_baseline_ci95_high",
    "throughput_images_per_s",
    "throughput_baseline",
    "throughput_vs_baseline_mean",
    "throughput_vs_baseline_ci95_low",
    "throughput_vs_baseline_ci95_high",
    "int8_peak_fraction",
    "train_wall_s",
]
PAIR_COLUMNS = ["a", "b", "why", "diff", "diff_ci95_low", "diff_ci95_high", "p_value", "p_holm", "significant"]


def throughput_interval(rounds: list[Optional[dict]]) -> dict:
    """Summary columns of images/s (geometric mean over seeds) and its ratio to the baseline's, with a
    95% CI (:func:`pqd.stats.ratio_interval` on ms per image); NaN unless every replicate measured it."""
    import numpy as np

    from pqd import stats

    if not rounds or any(r is None for r in rounds):
        return {
            "throughput_images_per_s": np.nan,
            "throughput_vs_baseline_mean": np.nan,
            "throughput_vs_baseline_ci95_low": np.nan,
            "throughput_vs_baseline_ci95_high": np.nan,
        }
    per_image = stats.ratio_interval([r["model"] for r in rounds], None)
    ratio = stats.ratio_interval([r["baseline"] for r in rounds], [r["model"] for r in rounds])
    return {
        "throughput_images_per_s": 1e3 / per_image.mean,
        "throughput_vs_baseline_mean": ratio.mean,
        "throughput_vs_baseline_ci95_low": ratio.low,
        "throughput_vs_baseline_ci95_high": ratio.high,
    }


def pareto(costs: list[float], accs: list[float]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and accuracy (higher)."""
    idx = []
    for i, (c, a) in enumerate(zip(costs, accs)):
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in zip(costs, accs)):
            idx.append(i)
    return sorted(idx, key=lambda i: costs[i])


def load_correct(report_path: str):
    """Per-image correctness of a replicate's deployed model (predictions.npz beside its report)."""
    import numpy as np

    path = Path(report_path).with_name("predictions.npz")
    with np.load(path) as z:
        return z["predictions"] == z["labels"]


def budget(rep: dict) -> list:
    """(epochs, lr) of each training segment after dense: a pipeline's stages, a control's segments."""
    last = rep["stages"][-1]
    if "segments" in last:
        return [(g["epochs"], g["lr"]) for g in last["segments"]]
    return [(st["epochs"], st["settings"].get("lr")) for st in rep["stages"][1:]]


def asked_pairs(pipelines: list[str], budgets: Optional[dict] = None) -> list[tuple[str, str, str]]:
    """The comparisons a user asks about: each pipeline against dense and against its equal-budget
    control (the control in the summary with the same epochs and learning rates, stage by stage),
    and every pair among orders of the same letters."""
    from pqd.pipeline import control_of

    budgets = budgets or {}
    pairs, have = [], set(pipelines)
    for p in pipelines:
        if p != "dense" and "dense" in have:
            pairs.append((p, "dense", "vs dense"))
    controls = [c for c in pipelines if control_of(c) is not None]
    for p in pipelines:
        if p == "dense" or control_of(p) is not None:
            continue
        match = [c for c in controls if budgets.get(c) is not None and budgets.get(c) == budgets.get(p)]
        if match:
            pairs.append((p, match[0], "vs equal-budget control"))
    plain = [p for p in pipelines if p != "dense" and control_of(p) is None]
    for i, p in enumerate(plain):
        for q in plain[i + 1 :]:
            if len(p) > 1 and sorted(p) == sorted(q):
                pairs.append((p, q, "order"))
    return pairs


def _replicates(rows: list[dict]) -> dict[str, dict]:
    """{pipeline: {seed: row}}, pipelines in config order, and a check that every pipeline has
    every seed (the paired statistics need complete seed x pipeline tables)."""
    table: dict[str, dict] = {}
    for r in rows:
        table.setdefault(r["pipeline"], {})[r["seed"]] = r
    seeds = sorted({r["seed"] for r in rows}, key=lambda x: (x is None, x))
    for p, by_seed in table.items():
        if sorted(by_seed, key=lambda x: (x is None, x)) != seeds:
            raise PqdError(
                f"pipeline {p} has seeds {sorted(by_seed)}, others {seeds}: every pipeline of a summary needs every seed"
            )
    return table


def summary(
    reports: list[str],
    csv_out: str,
    md_out: str,
    plot_out: str,
    pairwise_csv: Optional[str] = None,
    pairwise_md: Optional[str] = None,
    max_loss: Optional[float] = 1.0,
    html_out: Optional[str] = None,
) -> None:
    """Per pipeline, over seeds: mean top-1 with a 95% CI (seed and test-image noise, :mod:`pqd.stats`),
    latency and speedups with CIs (seeds and timing rounds), size; letter groups of pipelines that
    cannot be told apart (none with one seed); paired comparisons (pairwise.csv/.md,
    Holm-corrected); the minimum detectable effect and the seeds that would detect 0.5 and 1
    point; warnings; frontier plots with error bars. summary.md (and ``html_out``) opens with the
    verdict (:mod:`pqd.verdict`: the fastest and smallest pipeline within ``max_loss`` points of
    dense) and a headline table; every column is in the CSV."""
    import numpy as np
    import pandas as pd

    from pqd import stats, verdict

    rows = [read_json(p) for p in reports]
    correct_of = {id(r): load_correct(p) for r, p in zip(rows, reports)}
    table = _replicates(rows)
    pipelines = list(table)
    seeds = sorted(next(iter(table.values())), key=lambda x: (x is None, x))
    exp = rows[0]["experiment"]
    correct = {p: np.stack([correct_of[id(table[p][s])] for s in seeds]) for p in pipelines}
    n_images = next(iter(correct.values())).shape[1]
    judged = len(seeds) >= 2

    # every pair among pipelines (one Holm family): the letter groups and the frontier's ties
    everything = stats.with_holm(
        [
            stats.paired_comparison(a, b, correct[a], correct[b])
            for i, a in enumerate(pipelines)
            for b in pipelines[i + 1 :]
        ]
    )
    accuracy = {p: stats.accuracy_interval(correct[p]) for p in pipelines}
    groups = stats.letter_groups({p: accuracy[p].mean for p in pipelines}, everything) if judged else {}
    out = []
    for p in pipelines:
        reps = [table[p][s] for s in seeds]
        acc = accuracy[p]
        rounds = [r["latency_rounds_ms"] for r in reps]
        lat = stats.ratio_interval([r["model"] for r in rounds], None)
        sp = stats.ratio_interval([r["dense_fp32"] for r in rounds], [r["model"] for r in rounds])
        sp_rt = stats.ratio_interval([r["dense_runtime"] for r in rounds], [r["model"] for r in rounds])
        # reports from before the runtime-default baseline was timed: dense in the same runtime (f32)
        sp_base = stats.ratio_interval(
            [r.get("baseline") or r["dense_runtime"] for r in rounds], [r["model"] for r in rounds]
        )
        tput = throughput_interval([r.get("throughput_rounds") for r in reps])
        tput["throughput_baseline"] = "/".join(sorted({str(r.get("throughput_baseline")) for r in reps}))
        base_names = sorted(
            {f"{r.get('baseline', 'dense_runtime')} ({r.get('baseline_precision', 'f32')})" for r in reps}
        )
        first = reps[0]
        out.append(
            {
                "pipeline": p,
                "deployed_form": first["deployed_form"],
                "runtime": first["runtime"],
                "seeds": len(seeds),
                "group": groups.get(p, "-"),
                "accuracy_mean": acc.mean,
                "accuracy_ci95_low": acc.low,
                "accuracy_ci95_high": acc.high,
                "accuracy_delta": np.nan,
                "size_bytes": first["size_bytes"],
                "size_gzip_bytes": int(
                    round(float(np.mean([r["size_gzip_bytes"] for r in reps])))
                ),  # bytes: exact in the CSV
                "size_ratio": first["size_ratio"],
                "weight_sparsity": float(np.mean([r["weight_sparsity"] for r in reps])),
                "macs": first["macs"],
                "latency_ms_mean": lat.mean,
                "latency_ms_ci95_low": lat.low,
                "latency_ms_ci95_high": lat.high,
                "speedup_mean": sp.mean,
                "speedup_ci95_low": sp.low,
                "speedup_ci95_high": sp.high,
                "speedup_same_runtime_mean": sp_rt.mean,
                "speedup_same_runtime_ci95_low": sp_rt.low,
                "speedup_same_runtime_ci95_high": sp_rt.high,
                "baseline": "/".join(base_names),
                "speedup_vs_baseline_mean": sp_base.mean,
                "speedup_vs_baseline_ci95_low": sp_base.low,
                "speedup_vs_baseline_ci95_high": sp_base.high,
                **tput,
                "int8_peak_fraction": (
                    float(np.mean([r["int8_peak_fraction"] for r in reps]))
                    if first["int8_peak_fraction"] is not None
                    else np.nan
                ),
                "train_wall_s": float(np.mean([r["train_wall_s"] for r in reps])),
            }
        )
    df = pd.DataFrame(out)[COLUMNS]
    if "dense" in table:
        df["accuracy_delta"] = df["accuracy_mean"] - float(df.loc[df["pipeline"] == "dense", "accuracy_mean"].iloc[0])
    with atomic_path(csv_out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")

    asked = asked_pairs(pipelines, {p: budget(table[p][seeds[0]]) for p in pipelines if p != "dense"})
    comparisons = stats.with_holm([stats.paired_comparison(a, b, correct[a], correct[b]) for a, b, _ in asked])
    pw = pd.DataFrame(
        [
            {
                "a": c.a,
                "b": c.b,
                "why": why,
                "diff": c.diff,
                "diff_ci95_low": c.low,
                "diff_ci95_high": c.high,
                "p_value": c.p_value,
                "p_holm": c.p_holm,
                "significant": c.significant,
            }
            for c, (_, _, why) in zip(comparisons, asked)
        ],
        columns=PAIR_COLUMNS,
    )
    disagree = [stats.discordance(correct[a], correct[b]) for a, b, _ in asked] or [
        stats.discordance(correct[a], correct[b]) for i, a in enumerate(pipelines) for b in pipelines[i + 1 :]
    ]
    d_med = float(np.median(disagree)) if disagree else 0.0
    if pairwise_csv:
        with atomic_path(pairwise_csv) as tmp:
            pw.to_csv(tmp, index=False, float_format="%.4g")
    if pairwise_md:
        lines = [
            f"# {exp}: paired comparisons of top-1",
            "",
            f"Difference a - b in points, averaged over {len(seeds)} seed(s) x {n_images} test images, with its 95% "
            f"CI and two-sided p-value, Holm-corrected over the {len(pw)} comparisons listed. {noise_sentence(len(seeds))}",
            "",
            "| a | b | comparison | a - b (points) | 95% CI | p | p (Holm) | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in pw.itertuples(index=False):
            said = (
                ("a better" if r.diff > 0 else "b better")
                if r.significant
                else "no detectable difference"
                if judged
                else "not judged (1 seed)"
            )
            lines.append(
                f"| {r.a} | {r.b} | {r.why} | {r.diff:+.2f} | [{r.diff_ci95_low:+.2f}, {r.diff_ci95_high:+.2f}] "
                f"| {r.p_value:.3g} | {r.p_holm:.3g} | {said} |"
            )
        with atomic_path(pairwise_md) as tmp:
            tmp.write_text("\n".join(lines) + "\n")

    groups_note = (
        "`group`: pipelines sharing a letter cannot be told apart in top-1; two with no letter in common "
        "differ significantly (paired test, Holm over all pairs)."
        if judged
        else "`group`: none with one seed (no significance-based claim without training noise)."
    )
    vs_dense = {c.a: c for c, (_, _, why) in zip(comparisons, asked) if why == "vs dense"}
    vs_control = {c.a: c for c, (_, _, why) in zip(comparisons, asked) if why == "vs equal-budget control"}
    decision = verdict.decide(df, vs_dense, len(seeds), max_loss)
    noise = (
        f"{len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}) x {n_images} test images. Means over seeds "
        "(latency, speedup: geometric mean of per-seed medians). " + noise_sentence(len(seeds)) + " " + groups_note
    )
    mde = detectable_effect_sentence(
        comparisons or everything, len(comparisons or everything), len(seeds), n_images, d_med
    )
    lines = (
        [f"# {exp}", ""]
        + verdict.verdict_markdown(df, decision, vs_dense, vs_control)
        + [
            "",
            "Speedup: against dense FP32 timed in the same job and runtime. Size ratio: dense's deployed file over "
            "this one's. `#`: the pipeline's number in frontier.png. Every column (latency, gzip size, sparsity, MACs, "
            "groups, speedup against PyTorch FP32, training time) is in summary.csv; the paired comparisons in pairwise.md.",
            "",
            "## How much to trust it",
            "",
            noise,
            "",
            mde,
        ]
    )
    served: dict[str, list[str]] = {}
    for a, b, why in asked:
        if why == "vs equal-budget control":
            served.setdefault(b, []).append(a)
    lines += [""] + [
        f"{c} is the equal-budget control of {', '.join(ps)} (dense fine-tuned with plain cross-entropy "
        "for the same epochs and learning rates, stage by stage)."
        for c, ps in served.items()
    ]
    targets = latency_target_lines(table, seeds)
    if targets:
        lines += [
            "",
            "## Latency kept by structured and depth pruning",
            "",
            "Deployed latency as a fraction of the unpruned model that entered the first `s` or `b`, timed in "
            "the same rounds and the same form (mean over seeds; 95% CI over timing rounds of the first seed); "
            "predicted: read off the latency curve (latency targets only); target: that stage's budget.",
            "",
            "| pipeline | target | form (target / deployed) | predicted | measured [95% CI] |",
            "|---|---|---|---|---|",
        ] + targets
    warnings = (
        accuracy_loss_warnings(table, seeds, vs_dense, vs_control, max_loss)
        + student_warnings(table, seeds)
        + latency_target_warnings(table, seeds)
        + architecture_warnings(table, seeds)
    )
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    with atomic_path(md_out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if html_out:
        with atomic_path(html_out) as tmp:
            tmp.write_text(
                verdict.verdict_html(
                    f"{exp}: the verdict",
                    df,
                    decision,
                    vs_dense,
                    vs_control,
                    [noise, mde] + [f"Warning: {w}" for w in warnings],
                )
            )
    frontier_plot(df, everything, exp, plot_out, recommended=decision.fastest)


def noise_sentence(n_seeds: int) -> str:
    """What the intervals and verdicts of a summary cover, by its number of seeds."""
    if n_seeds >= 2:
        return (
            "95% CIs and tests cover training noise (from the spread of the seeds, S - 1 degrees of freedom) and "
            "test-image noise (shared by the seeds): accuracy Wilson-type, differences paired t with Satterthwaite's "
            "degrees of freedom, latency and speedup t over seeds."
        )
    return (
        "**One seed: training noise is unseen.** Its 95% CIs cover test-image noise (accuracy: Wilson) and "
        "timing noise (batch medians of consecutive timing rounds) only; another training run can land outside them, so no "
        "difference is called significant. Run 3 or more seeds (`seeds:`) for verdicts."
    )


def detectable_effect_sentence(comparisons: list, family: int, n_seeds: int, n_images: int, disagreement: float) -> str:
    """The minimum detectable effect of the comparisons a summary makes, at their Holm level, from
    the observed seed and image noise of the typical (median-variance) comparison, and how many
    seeds would detect 0.5 and 1.0 point."""
    from pqd import stats

    judged = [c for c in comparisons if c.components is not None and c.components.n_seeds >= 2]
    head = (
        f"**Minimum detectable effect** (power 0.8, two-sided alpha 0.05 Holm-adjusted over {family} comparisons, "
        f"{n_seeds} seed(s) x {n_images} test images, median disagreement {100 * disagreement:.1f}% of images): "
    )
    if n_seeds < 2:
        return head + "cannot be estimated: with one seed the training noise is unseen. Run 3 or more seeds."
    if not judged:
        return head + "cannot be estimated: there is no comparison to make (one pipeline)."
    noisy = [c for c in judged if c.components.variance > 0] or judged
    typical = sorted(noisy, key=lambda c: c.components.variance)[len(noisy) // 2].components
    mde = stats.minimum_detectable_effect(typical, family)
    if mde is None:
        return head + "cannot be estimated: the compared pipelines never disagree."
    need = {e: stats.seeds_needed(typical, e, family) for e in (0.5, 1.0)}
    said = "; ".join(
        f"{e} point: {'more than 100 seeds or more test images' if s is None else f'{s} seeds'}"
        for e, s in need.items()
    )
    return head + f"{mde:.2f} points of top-1, from the seed and image noise seen. To detect {said}."


def latency_target_lines(table: dict, seeds: list) -> list[str]:
    import numpy as np

    out = []
    for p, by_seed in table.items():
        lt = [by_seed[s].get("latency_target") for s in seeds]
        if not lt[0]:
            continue
        t = lt[0]
        predicted = "-" if t["predicted_keep"] is None else f"{t['predicted_keep']:.3f}"  # "-": a MACs budget
        what = ", ".join(f"{k} {v:g}" for k, v in t["target"].items())
        out.append(
            f"| {p} | {what} | {t['form']} / {t['deployed_form']} | {predicted} | "
            f"{np.mean([x['measured_keep'] for x in lt]):.3f} [{t['measured_keep_ci95'][0]:.3f}, "
            f"{t['measured_keep_ci95'][1]:.3f}] |"
        )
    return out


def latency_target_warnings(table: dict, seeds: list) -> list[str]:
    """A latency-targeted pipeline that missed its target by more than the tolerance, or whose
    deployed form is not the one its target was for."""
    import numpy as np

    from pqd.constants import LATENCY_TOLERANCE

    out = []
    for p, by_seed in table.items():
        lt = [by_seed[s].get("latency_target") for s in seeds]
        if not lt[0] or lt[0]["target_keep"] is None:
            continue
        if lt[0]["form"] != lt[0]["deployed_form"]:
            out.append(
                f"{p}: its s stage targeted {lt[0]['form']} latency but the pipeline deploys "
                f"{lt[0]['deployed_form']}; set stages.s.latency_form: {lt[0]['deployed_form']} for it."
            )
        measured = float(np.mean([x["measured_keep"] for x in lt]))
        if abs(measured - lt[0]["target_keep"]) > LATENCY_TOLERANCE:
            out.append(
                f"{p}: latency {measured:.2f} of the unpruned model, target {lt[0]['target_keep']:.2f} (more than "
                f"{LATENCY_TOLERANCE:.2f} off): the latency curve no longer describes this machine or runtime; "
                "rerun its latency_curve job (delete latency_curve.json) on the machine that measures latency."
            )
    return out


def accuracy_loss_warnings(table: dict, seeds: list, vs_dense: dict, vs_control: dict, max_loss) -> list[str]:
    """A pipeline whose mean top-1 is more than ``max_loss`` points (1 when unset) below dense's or
    its equal-budget control's, naming the settings of its stages that set how much they remove
    (:attr:`pqd.pipeline.StageSpec.budget`): a budget reached at that price is what a user must
    see before shipping it (a ResNet-56 pruned to a latency target fell from 83% to 32% with no
    warning)."""
    from pqd.pipeline import STAGES, control_of

    tol = 1.0 if max_loss is None else max_loss
    out = []
    for p in table:
        if p == "dense" or control_of(p) is not None:
            continue
        losses = [c for c in (vs_dense.get(p), vs_control.get(p)) if c is not None and c.diff < -tol]
        if not losses:
            continue
        budgets = []
        for st in table[p][seeds[0]]["stages"]:  # dense is no stage letter; e starts without it
            spec = STAGES.get(st["stage"]) if st["stage"] in STAGES else None
            keys = [k for k in (spec.budget if spec else ()) if st["settings"].get(k) is not None]
            target = st["settings"].get("target")  # s: only the budget its target reads
            unused = {"latency": ("macs_keep",), "macs": ("latency_keep", "latency_ms")}.get(target, ())
            said = [f"{k} {st['settings'][k]}" for k in keys if k not in unused]
            if said:
                budgets.append(f"{st['stage']} ({', '.join(said)})")
        against = "; ".join(f"{c.diff:+.2f} points [{c.low:+.2f}, {c.high:+.2f}] against {c.b}" for c in losses)
        cause = (
            f"its budget: {', '.join(budgets)}. Loosen it, train longer (protocols), or ship another pipeline"
            if budgets
            else "none of its stages removes weights: train longer (protocols) or ship another pipeline"
        )
        out.append(f"{p}: top-1 {against}, more than the {tol:g} point(s) allowed (report.max_loss); {cause}.")
    return out


def architecture_warnings(table: dict, seeds: list) -> list[str]:
    """A pipeline whose replicates deploy different architectures (MACs differ between seeds): its
    CI then mixes models, and a latency target met by each seed's own reading of its curve is not one
    model's figure."""
    out = []
    for p, by_seed in table.items():
        macs = [by_seed[s]["macs"] for s in seeds]
        if len(set(macs)) > 1:
            each = ", ".join(f"seed {s}: {m / 1e6:.1f}" for s, m in zip(seeds, macs))
            out.append(
                f"{p}: its replicates deploy different architectures (MMACs {each}); its CIs mix them. With a "
                "latency target, its replicates read their own latency curves (shared only when s prunes the "
                "imported dense model): give a MACs target for one architecture."
            )
    return out


def student_warnings(table: dict, seeds: list) -> list[str]:
    """A distilling stage that ends below the model it started from (mean over seeds): its teacher
    did not help, typically because the teacher is now worse than its student."""
    import numpy as np

    out = []
    for p, by_seed in table.items():
        stages = [by_seed[s]["stages"] for s in seeds]
        for i in range(1, len(stages[0])):
            if "teacher" not in stages[0][i]:
                continue
            before = float(np.mean([st[i - 1]["accuracy_after"] for st in stages]))
            after = float(np.mean([st[i]["accuracy_after"] for st in stages]))
            if after < before:
                t = stages[0][i]["teacher"]
                t_acc = np.mean(
                    [st[i]["teacher"].get("accuracy", st[i]["teacher"].get("accuracy_start", np.nan)) for st in stages]
                )
                out.append(
                    f"{p}: stage {stages[0][i]['stage']} ({stages[0][i]['name']}) lowered top-1 from "
                    f"{before:.2f}% to {after:.2f}% (mean over seeds); its teacher ({t.get('model', '?')}) "
                    f"scores {t_acc:.2f}%. Choose another teacher (stages.d.teacher) or drop the stage."
                )
    return out


def place_labels(ax, xs: list[float], ys: list[float], labels: list[str], fontsize: int = 9) -> list:
    """Annotate each point with its label at the first of a ring of offsets whose text box overlaps
    no label placed before it (a thin line joins a label moved away from its point). Six INT8
    points within 5% of each other on the x axis made names printed beside each point unreadable.
    Call after the figure's layout is final: offsets are in points from data coordinates. The rings
    grow until a free place is found (at most 40 rings out; a figure that full keeps the last try)."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    directions = ((1, 0.4), (1, -1.4), (-1.8, 0.4), (-1.8, -1.4), (0, 1.2), (0, -2.2), (1.4, -0.5), (-2.4, -0.5))
    rings = [(r * cx, r * cy) for r in [4] + [11 + 7 * k for k in range(40)] for cx, cy in directions]
    placed, texts = [], []
    for i in sorted(range(len(labels)), key=lambda k: (xs[k], -ys[k])):
        for k, (dx, dy) in enumerate(rings):
            t = ax.annotate(
                labels[i],
                (xs[i], ys[i]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                zorder=6,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"} if k >= 8 else None,
            )
            t.update_positions(renderer)  # place it at its point (annotate leaves it at the figure's corner)
            box = Text.get_window_extent(t, renderer)  # the label's own box (an Annotation's adds its line)
            if not any(box.overlaps(b) for b in placed) or k == len(rings) - 1:
                break
            t.remove()
        placed.append(box)
        texts.append(t)
    return texts


def frontier_figure(df, comparisons, exp: str, recommended: Optional[str] = None):
    """Accuracy against relative latency and against size, means with 95% CI error bars; the
    Pareto front on the means; hollow markers for points that no front point significantly beats
    (their difference from the front is within the noise); points numbered as in summary.md's
    headline table, with the key below, and the recommended pipeline ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sig = {(c.a, c.b): c for c in comparisons}

    def acc_better(a: str, b: str) -> bool:  # a significantly more accurate than b
        c = sig.get((a, b)) or sig.get((b, a))
        return c is not None and c.significant and ((c.diff > 0) == (c.a == a))

    # Latency as the ratio to dense FP32 timed in the same job and the same runtime (absolute ms
    # from separate jobs drift with a shared CPU); size gzip-compressed, what pruned zeros reduce.
    rel = 1.0 / df["speedup_same_runtime_mean"]
    rel_lo, rel_hi = 1.0 / df["speedup_same_runtime_ci95_high"], 1.0 / df["speedup_same_runtime_ci95_low"]
    runtime = "/".join(sorted(set(df["runtime"])))
    names, accs = df["pipeline"].tolist(), df["accuracy_mean"].tolist()
    key_rows = [names[k : k + 8] for k in range(0, len(names), 8)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.0 + 0.25 * len(key_rows)))
    yerr = [
        (df["accuracy_mean"] - df["accuracy_ci95_low"]).tolist(),
        (df["accuracy_ci95_high"] - df["accuracy_mean"]).tolist(),
    ]
    panels = (
        (
            axes[0],
            rel.tolist(),
            rel_lo.tolist(),
            rel_hi.tolist(),
            f"batch-1 CPU latency / dense FP32 latency ({runtime}, same job)",
        ),
        (axes[1], (df["size_gzip_bytes"] / 1e6).tolist(), None, None, "deployed size, gzip-compressed (MB)"),
    )
    for ax, costs, lo, hi, label in panels:
        front = pareto(costs, accs)
        tied = []
        for i in range(len(names)):
            if i in front:
                continue
            dominators = [j for j in front if costs[j] <= costs[i] and accs[j] >= accs[i]]
            # j significantly cheaper than i: CIs apart where the cost has one, else any lower cost
            cheaper = [(hi[j] < lo[i]) if lo is not None else (costs[j] < costs[i]) for j in dominators]
            if not any(
                acc_better(names[j], names[i]) or (c and not acc_better(names[i], names[j]))
                for j, c in zip(dominators, cheaper)
            ):
                tied.append(i)
        xerr = None if lo is None else [[c - low for c, low in zip(costs, lo)], [h - c for c, h in zip(costs, hi)]]
        for i, name in enumerate(names):
            color = "tab:blue" if df["deployed_form"].iloc[i] == "int8" else "tab:gray"
            ax.errorbar(
                [costs[i]],
                [accs[i]],
                yerr=[[yerr[0][i]], [yerr[1][i]]],
                xerr=None if xerr is None else [[xerr[0][i]], [xerr[1][i]]],
                fmt="o",
                color=color,
                mfc="white" if i in tied else color,
                capsize=2,
                zorder=3,
            )
            if name == recommended:
                ax.scatter(
                    [costs[i]],
                    [accs[i]],
                    s=260,
                    facecolors="none",
                    edgecolors="tab:green",
                    linewidths=2,
                    zorder=5,
                    label=f"recommended: {name}",
                )
        ax.step(
            [costs[i] for i in front],
            [accs[i] for i in front],
            where="post",
            color="tab:red",
            zorder=4,
            linewidth=1.8,
            alpha=0.8,
            label="Pareto front (means)",
        )  # above the error bars
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%), mean and 95% CI")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{exp}: accuracy vs cost (blue = INT8, gray = FP32; hollow = not significantly off the front)")
    key = "\n".join("    ".join(f"{names.index(n) + 1} {n}" for n in row) for row in key_rows)
    fig.text(0.01, 0.01, key, fontsize=9, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.04 + 0.04 * len(key_rows), 1, 1))
    for ax, costs, *_ in panels:  # the layout is final: labels placed in display space
        place_labels(ax, costs, accs, [str(i + 1) for i in range(len(names))])
    return fig


def frontier_plot(df, comparisons, exp: str, plot_out: str, recommended: Optional[str] = None) -> None:
    """:func:`frontier_figure`, written atomically (PNG, or the format of ``plot_out``'s suffix)."""
    import matplotlib.pyplot as plt

    fig = frontier_figure(df, comparisons, exp, recommended)
    with atomic_path(plot_out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(plot_out).suffix.lstrip(".") or "png")
    plt.close(fig)
