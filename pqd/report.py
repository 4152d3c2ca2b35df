"""Per-pipeline ``report.json`` and the per-experiment summary table and frontier plots."""

from __future__ import annotations

from pathlib import Path

from pqd.checkpoint import atomic_path, code_version, load_checkpoint, read_json, write_json


def pipeline_report(experiment: str, pipeline: str, model_path: str, eval_path: str, latency_path: str,
                    dense_eval_path: str, output: str) -> dict:
    """Combine the measurements of one pipeline with the provenance of its stages."""
    ev, lat, dense = read_json(eval_path), read_json(latency_path), read_json(dense_eval_path)
    meta = load_checkpoint(model_path)["meta"]
    stages = [{"stage": h["stage"], "name": h.get("name", h["stage"]), "epochs": h["epochs"],
               "threads": h.get("threads"),
               "wall_s": h.get("wall_s"), "accuracy_after": h.get("accuracy"), "settings": h["settings"],
               **({"imported_from": h["imported_from"]} if "imported_from" in h else {}),
               # what each stage's spec says its record adds to the report (StageSpec.record)
               **{k: h[k] for k in h.get("reported", ()) if k in h}}
              for h in meta["history"]]
    rep = {
        "experiment": experiment, "backbone": meta["backbone"], "dataset": meta["dataset"], "pipeline": pipeline,
        "deployed_form": ev["form"], "runtime": ev["runtime"], "accuracy_torch": ev["accuracy_torch"],
        "accuracy": ev["accuracy"], "dense_accuracy": dense["accuracy"], "accuracy_delta": ev["accuracy"] - dense["accuracy"],
        "size_bytes": ev["bytes"], "size_gzip_bytes": ev["gzip_bytes"], "dense_size_bytes": dense["bytes"],
        "size_ratio": dense["bytes"] / ev["bytes"], "size_gzip_ratio": dense["bytes"] / ev["gzip_bytes"],
        "weight_sparsity": ev["weight_sparsity"], "weight_sparsity_inner": ev["weight_sparsity_inner"],
        "latency_ms": lat["model"]["median_ms"], "latency_p90_ms": lat["model"]["p90_ms"],
        "dense_latency_ms": lat["dense_fp32"]["median_ms"], "speedup": lat["speedup_vs_dense_fp32"],
        "speedup_same_runtime": lat["speedup_vs_dense_same_runtime"],
        "latency_threads": lat["threads"], "latency_runs": lat["model"]["runs"],
        "macs": lat["macs"], "int8_peak_fraction": lat["int8_peak_fraction"] if ev["form"] == "int8" else None,
        "int8_peak_macs_per_s": lat["int8_peak_macs_per_s"],
        "train_wall_s": sum(s["wall_s"] or 0 for s in stages),
        "stages": stages,
        "system": lat["system"],
        "config": meta["history"][-1].get("config"),
        "code_version": code_version(),
    }
    write_json(output, rep)
    return rep


COLUMNS = ["pipeline", "deployed_form", "runtime", "accuracy", "accuracy_delta", "size_bytes", "size_gzip_bytes", "size_ratio",
           "weight_sparsity", "macs", "latency_ms", "latency_p90_ms", "speedup", "speedup_same_runtime", "int8_peak_fraction", "train_wall_s"]


def pareto(costs: list[float], accs: list[float]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and accuracy (higher)."""
    idx = []
    for i, (c, a) in enumerate(zip(costs, accs)):
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in zip(costs, accs)):
            idx.append(i)
    return sorted(idx, key=lambda i: costs[i])


def summary(reports: list[str], csv_out: str, md_out: str, plot_out: str) -> None:
    """Table (CSV + Markdown) of every pipeline of an experiment and the frontier plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = [read_json(p) for p in reports]
    df = pd.DataFrame(rows)[COLUMNS + ["experiment"]]
    exp = df["experiment"].iloc[0]
    df = df[COLUMNS]
    with atomic_path(csv_out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")

    def fmt(v):
        if isinstance(v, float):
            return "-" if v != v else f"{v:.4g}"  # NaN: not applicable (e.g. INT8 peak of an FP32 model)
        return str(v)

    lines = [f"# {exp}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    with atomic_path(md_out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")

    # Latency as the ratio to dense FP32 timed in the same job and the same runtime (absolute ms
    # from separate jobs drift with a shared CPU, and the PyTorch-eager baseline drifts more than
    # the runtime's own); size gzip-compressed, which is what pruned zeros reduce.
    df = df.assign(relative_latency=1.0 / df["speedup_same_runtime"], size_gzip_mb=df["size_gzip_bytes"] / 1e6)
    runtime = "/".join(sorted(set(df["runtime"])))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, col, label in ((axes[0], "relative_latency",
                            f"batch-1 CPU latency / dense FP32 latency ({runtime}, same job)"),
                           (axes[1], "size_gzip_mb", "deployed size, gzip-compressed (MB)")):
        costs, accs = df[col].tolist(), df["accuracy"].tolist()
        colors = ["tab:blue" if f == "int8" else "tab:gray" for f in df["deployed_form"]]
        ax.scatter(costs, accs, c=colors, zorder=3)
        for c, a, name in zip(costs, accs, df["pipeline"]):
            ax.annotate(name, (c, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto(costs, accs)
        ax.step([costs[i] for i in front], [accs[i] for i in front], where="post", color="tab:red", zorder=2,
                label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"{exp}: accuracy vs cost (blue = INT8, gray = FP32)")
    fig.tight_layout()
    with atomic_path(plot_out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(plot_out).suffix.lstrip(".") or "png")
    plt.close(fig)
