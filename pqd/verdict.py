"""The answer a user came with: which pipeline to ship for this model, and what it costs.

A summary's first lines. From the summary table (one row per pipeline) and the paired comparisons
the summary made (:mod:`pqd.stats`), :func:`decide` picks the fastest and the smallest pipeline
whose top-1 is close enough to dense, says against which control it was judged, and which other
pipelines the evidence cannot tell from it; :func:`verdict_markdown` and :func:`verdict_html`
render that with a short headline table (the full columns stay in summary.csv).

"Close enough" is the user's tolerance ``report.max_loss`` in points of top-1: a pipeline qualifies
when the lower end of the paired 95% CI of (pipeline - dense) lies at or above ``-max_loss``, i.e. the
loss is under the tolerance with confidence, not merely on the mean (an under-powered experiment
must not make a lossy pipeline look safe). With ``max_loss: null`` a pipeline qualifies when it
cannot be told apart from dense (Holm-adjusted p >= 0.05, or better than dense). With one seed
training noise is unseen (:mod:`pqd.stats`): the verdict is then worded as a reading of image
noise only, and asks for more seeds.

Pure functions over a pandas DataFrame and :class:`pqd.stats.Comparison` objects.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Optional

from pqd.pipeline import control_of
from pqd.stats import ALPHA, Comparison

HEADLINE = [
    "#",
    "pipeline",
    "deployed",
    "top-1 % [95% CI]",
    "vs dense, points [95% CI]",
    "vs equal-budget control",
    "speedup, same runtime [95% CI]",
    "speedup vs fastest untrained dense [95% CI]",
    "throughput vs the fastest untrained dense there [95% CI]",
    "size ratio",
    "qualifies",
]


@dataclass(frozen=True)
class Decision:
    """What the summary recommends, and why."""

    max_loss: Optional[float]
    n_seeds: int
    qualifying: list[str]
    fastest: Optional[str]
    smallest: Optional[str]
    closest: Optional[str]  # when nothing qualifies: the pipeline with the smallest loss at the CI's far end
    as_fast: list[str] = field(default_factory=list)  # qualifying, speedup CI overlapping the fastest's
    same_group: list[str] = field(default_factory=list)  # compressed pipelines sharing a letter group with it


def qualifies(c: Comparison, max_loss: Optional[float]) -> bool:
    """Whether a pipeline's paired comparison with dense (``c.a`` the pipeline, ``c.b`` dense)
    meets the tolerance: CI lower end above ``-max_loss``, or (``None``) not significantly worse."""
    if max_loss is None:
        return not (c.diff < 0 and c.p_holm < ALPHA)
    return c.low >= -max_loss


def decide(df, vs_dense: dict[str, Comparison], n_seeds: int, max_loss: Optional[float]) -> Decision:
    """Pick from the summary table ``df`` (columns of :data:`pqd.report.COLUMNS`) the fastest and
    the smallest compressed pipeline that qualifies against dense (``vs_dense[p]``: p - dense).
    Controls and dense itself are yardsticks, not candidates."""
    rows = {r.pipeline: r for r in df.itertuples(index=False)}
    candidates = [p for p in rows if p != "dense" and control_of(p) is None and p in vs_dense]
    ok = [p for p in candidates if qualifies(vs_dense[p], max_loss)]
    speed = {p: rows[p].speedup_same_runtime_mean for p in candidates}
    fastest = max(ok, key=lambda p: (speed[p], rows[p].accuracy_mean)) if ok else None
    smallest = min(ok, key=lambda p: (rows[p].size_bytes, -rows[p].accuracy_mean)) if ok else None
    closest = None if ok or not candidates else max(candidates, key=lambda p: vs_dense[p].low)
    as_fast, same_group = [], []
    if fastest:
        f = rows[fastest]
        as_fast = [
            p for p in ok if p != fastest and rows[p].speedup_same_runtime_ci95_high >= f.speedup_same_runtime_ci95_low
        ]
        letters = set(str(f.group)) - {"-"}
        same_group = [p for p in candidates if p != fastest and letters & set(str(rows[p].group))]
    return Decision(max_loss, n_seeds, ok, fastest, smallest, closest, as_fast, same_group)


def _ci(lo: float, hi: float, fmt: str = "{:.2f}") -> str:
    return f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _baseline_cell(r) -> str:
    mean = getattr(r, "speedup_vs_baseline_mean", None)
    if mean is None:
        return "-"
    return f"{mean:.2f}x {_ci(r.speedup_vs_baseline_ci95_low, r.speedup_vs_baseline_ci95_high)} ({r.baseline})"


def _throughput_cell(r) -> str:
    """Images/s at the runtime's throughput setting over the baseline's ("-" where not measured)."""
    mean = getattr(r, "throughput_vs_baseline_mean", None)
    if mean is None or math.isnan(mean):
        return "-"
    name = getattr(r, "throughput_baseline", None)
    return f"{mean:.2f}x {_ci(r.throughput_vs_baseline_ci95_low, r.throughput_vs_baseline_ci95_high)}" + (
        f" ({name})" if isinstance(name, str) and name else ""
    )


def _throughput_caveat(r) -> list[str]:
    """A sentence where the recommended pipeline is, with confidence, no faster than the baseline at
    the runtime's throughput setting: batch-1 latency and images/s on busy cores can disagree."""
    high = getattr(r, "throughput_vs_baseline_ci95_high", None)
    if high is None or math.isnan(high) or high >= 1.0:
        return []
    return [
        f"At the runtime's throughput setting, though, it processes {r.throughput_vs_baseline_mean:.2f}x "
        f"{_ci(r.throughput_vs_baseline_ci95_low, high)} the images/s of the fastest untrained dense form there "
        f"({getattr(r, 'throughput_baseline', None) or r.baseline}): fewer; if you serve batches rather than "
        "single requests, ship that baseline."
    ]


def _has_baseline(r) -> bool:
    """A summary row with a measured baseline other than dense FP32 in the same runtime (rows of
    summaries from before the baseline existed have NaN there)."""
    name = getattr(r, "baseline", None)
    values = [getattr(r, f"speedup_vs_baseline_{k}", None) for k in ("mean", "ci95_low", "ci95_high")]
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith("dense_runtime")
        and all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)
    )


def _against_baseline(r) -> str:
    """The speedup against the fastest untrained dense form, where that is not dense FP32 in the
    same runtime (e.g. OpenVINO's default bf16 on a CPU with AVX-512 BF16 or AMX), worded by where its
    CI lies: faster, slower (an INT8 ResNet-20 ran at 0.81x of OpenVINO's bf16 dense on an AMX Xeon),
    or not told apart."""
    if not _has_baseline(r):
        return ""
    name = r.baseline
    lo, hi, mean = r.speedup_vs_baseline_ci95_low, r.speedup_vs_baseline_ci95_high, r.speedup_vs_baseline_mean
    what = f"the fastest untrained dense form ({name}: what the runtime gives without pqd)"
    if lo > 1.0:
        return f" and {mean:.2f}x {_ci(lo, hi)} faster than {what}"
    if hi < 1.0:
        return f" but only {mean:.2f}x {_ci(lo, hi)} the speed of {what}, so slower than it"
    return f" and {mean:.2f}x {_ci(lo, hi)} the speed of {what}, not told apart from it"


def _slower_than_baseline(r, p: str) -> list[str]:
    """A sentence where the recommended pipeline is, with confidence, slower at batch 1 than the
    runtime's own untrained dense form: compression then buys size, not speed, on this CPU."""
    if not _has_baseline(r) or not r.speedup_vs_baseline_ci95_high < 1.0:
        return []
    name = r.baseline
    return [
        f"On this CPU the runtime's default runs the untrained dense model faster ({name}): ship {p} for "
        f"its size ({r.size_ratio:.2f}x smaller), or that dense form for speed."
    ]


def _control_cell(c: Optional[Comparison], n_seeds: int) -> str:
    if c is None:
        return "-"
    word = (
        ("better" if c.diff > 0 else "worse")
        if c.significant
        else ("cannot be told apart" if n_seeds >= 2 else "not judged (1 seed)")
    )
    return f"{c.b}: {c.diff:+.2f} {_ci(c.low, c.high, '{:+.2f}')}, {word}"


def _rule(d: Decision) -> str:
    if d.max_loss is None:
        return "a pipeline qualifies when its top-1 cannot be told apart from dense's (or is better), Holm-adjusted"
    return (
        f"a pipeline qualifies when it loses at most {d.max_loss:g} point(s) of top-1 against dense with 95% "
        f"confidence (the lower end of its paired CI at or above -{d.max_loss:g}; `report.max_loss`)"
    )


def _sentences(parts: list[str]) -> str:
    """The parts joined into one paragraph, a part that starts a sentence (after a full stop) capitalised
    (the one-seed caveat ends in one, and the recommendation after it began with a lower-case "ship")."""
    out: list[str] = []
    for part in parts:
        if out and out[-1].rstrip().endswith(".") and part:
            i = next((k for k, ch in enumerate(part) if ch.isalpha()), None)
            if i is not None:
                part = part[:i] + part[i].upper() + part[i + 1 :]
        out.append(part)
    return " ".join(out)


def verdict_sentences(df, d: Decision, vs_dense: dict[str, Comparison], vs_control: dict[str, Comparison]) -> list[str]:
    """The verdict paragraph(s) in Markdown."""
    rows = {r.pipeline: r for r in df.itertuples(index=False)}
    runtime = "/".join(sorted(set(df["runtime"])))
    seeds = f"{d.n_seeds} seed{'s' if d.n_seeds != 1 else ''}"
    out = [f"**Verdict** ({seeds}; {_rule(d)}):"]
    if d.n_seeds < 2:
        out.append(
            "**one seed: training noise is unseen**, so this is a reading of the means and test-image noise, "
            "not a verdict; run 3 or more seeds (`seeds: [0, 1, 2]`) before shipping on it."
        )

    def describe(p: str) -> str:
        r, c = rows[p], vs_dense[p]
        return (
            f"{r.speedup_same_runtime_mean:.2f}x {_ci(r.speedup_same_runtime_ci95_low, r.speedup_same_runtime_ci95_high)} "
            f"faster than dense FP32 in {runtime}{_against_baseline(r)}, {r.size_ratio:.2f}x smaller, top-1 "
            f"{r.accuracy_mean:.2f}% ({c.diff:+.2f} points {_ci(c.low, c.high, '{:+.2f}')} against dense)"
        )

    if d.fastest is None:
        if d.closest is None:
            out.append(
                "there is no compressed pipeline in this summary to judge."
                if "dense" in rows
                else "there is no dense model in this summary to judge against (add `dense` to `pipelines`)."
            )
        else:
            c = vs_dense[d.closest]
            out.append(
                f"**no compressed pipeline qualifies.** The closest is **{d.closest}**: {describe(d.closest)}, "
                f"a loss of up to {-c.low:.2f} points at its CI's far end. Loosen `report.max_loss`, train longer "
                "or choose a milder budget."
            )
        return [_sentences(out)]
    out.append(f"ship **{d.fastest}**, the fastest that qualifies: {describe(d.fastest)}.")
    out += _slower_than_baseline(rows[d.fastest], d.fastest) or _throughput_caveat(rows[d.fastest])
    ctl = vs_control.get(d.fastest)
    if ctl is not None:
        how = (
            ("is better than" if ctl.diff > 0 else "is worse than")
            if ctl.significant
            else ("cannot be told apart from" if d.n_seeds >= 2 else "is not judged against")
        )
        out.append(
            f"Its top-1 {how} its equal-budget control {ctl.b} (plain fine-tuning for the same epochs: "
            f"{ctl.diff:+.2f} points {_ci(ctl.low, ctl.high, '{:+.2f}')}), so "
            + (
                "compression's own recipe adds accuracy here."
                if ctl.significant and ctl.diff > 0
                else "the accuracy it keeps is what the extra training gives any model; what compression adds is "
                + ("the size." if _slower_than_baseline(rows[d.fastest], d.fastest) else "the speed and size.")
                if not (ctl.significant and ctl.diff < 0)
                else "the same training without compression would be more accurate."
            )
        )
    if d.smallest and d.smallest != d.fastest:
        out.append(f"The smallest that qualifies is **{d.smallest}**: {describe(d.smallest)}.")
    elif d.smallest:
        out.append("It is also the smallest that qualifies.")
    if d.as_fast:
        out.append(f"As fast within the timing noise (speedup CIs overlap): {', '.join(d.as_fast)}.")
    if d.n_seeds >= 2 and d.same_group:
        out.append(
            "Not told apart from it in top-1 among the compressed pipelines (a shared letter group; Holm over "
            f"all pairs, stricter than the paired CIs above): {', '.join(d.same_group)}."
        )
    rest = [p for p in vs_dense if p not in d.qualifying and control_of(p) is None]
    if rest:
        out.append(f"Do not qualify: {', '.join(rest)}.")
    return [_sentences(out)]


def headline_rows(
    df, d: Decision, vs_dense: dict[str, Comparison], vs_control: dict[str, Comparison]
) -> list[list[str]]:
    """One row per pipeline of the headline table (:data:`HEADLINE`), numbered as in the plot."""
    out = []
    for i, r in enumerate(df.itertuples(index=False), start=1):
        c = vs_dense.get(r.pipeline)
        out.append(
            [
                str(i),
                r.pipeline,
                r.deployed_form,
                f"{r.accuracy_mean:.2f} {_ci(r.accuracy_ci95_low, r.accuracy_ci95_high)}",
                "-" if c is None else f"{c.diff:+.2f} {_ci(c.low, c.high, '{:+.2f}')}",
                _control_cell(vs_control.get(r.pipeline), d.n_seeds),
                f"{r.speedup_same_runtime_mean:.2f}x "
                f"{_ci(r.speedup_same_runtime_ci95_low, r.speedup_same_runtime_ci95_high)}",
                _baseline_cell(r),
                _throughput_cell(r),
                f"{r.size_ratio:.2f}x",
                "-"
                if r.pipeline == "dense" or control_of(r.pipeline) is not None
                else (
                    "no"
                    if r.pipeline not in d.qualifying
                    else "yes: "
                    + " and ".join(w for w, q in (("fastest", d.fastest), ("smallest", d.smallest)) if q == r.pipeline)
                    if r.pipeline in (d.fastest, d.smallest)
                    else "yes"
                ),
            ]
        )
    return out


def verdict_markdown(df, d: Decision, vs_dense: dict[str, Comparison], vs_control: dict[str, Comparison]) -> list[str]:
    """The verdict and the headline table, as Markdown lines."""
    rows = headline_rows(df, d, vs_dense, vs_control)
    return (
        verdict_sentences(df, d, vs_dense, vs_control)
        + ["", "| " + " | ".join(HEADLINE) + " |", "|" + "---|" * len(HEADLINE)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )


def verdict_html(
    title: str, df, d: Decision, vs_dense: dict[str, Comparison], vs_control: dict[str, Comparison], notes: list[str]
) -> str:
    """The same as a small standalone HTML page (Snakemake's --report embeds it)."""

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADLINE)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
        for r in headline_rows(df, d, vs_dense, vs_control)
    )
    paras = "".join(f"<p>{inline(t)}</p>" for t in verdict_sentences(df, d, vs_dense, vs_control) + notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:70em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{paras}<table><tr>{head}</tr>{body}</table>"
        "<p>All columns: summary.csv; paired comparisons: pairwise.md.</p></body></html>\n"
    )
