"""End to end through Snakemake on a copy of the workflow with a tiny config (digits, width 0.25)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_WORKFLOW, copy_workflow, planned, smk

ROOT = Path(__file__).resolve().parent.parent
EXP = "resnet20_digits"
TINY = TINY_WORKFLOW


@pytest.fixture(scope="module")
def wd(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("wf"), TINY)


@pytest.fixture(scope="module")
def built(wd: Path) -> Path:
    smk(wd, f"results/{EXP}/pqd/report.json")
    return wd


def test_pqd_report_measures_a_sparse_int8_model(built: Path):
    rep = json.loads((built / f"results/{EXP}/pqd/report.json").read_text())
    assert rep["deployed_form"] == "int8"
    assert [s["stage"] for s in rep["stages"]] == ["dense", "p", "q", "d"]
    assert rep["weight_sparsity_inner"] >= 0.5  # target 0.5, INT8 rounding may add zeros
    assert rep["size_ratio"] > 1.5  # int8 weights; at width 0.25 per-channel scales and framing weigh in
    assert rep["size_gzip_bytes"] < rep["size_bytes"]
    assert rep["latency_runs"] >= 200 and rep["latency_ms"] > 0 and rep["speedup"] > 0
    assert rep["accuracy"] > 20.0  # 10 classes: far above chance after two dense epochs
    assert rep["code_version"]["source_sha256"] and rep["config"]["settings"]["temperature"] == 4.0
    lat = json.loads((built / f"results/{EXP}/pqd/latency.json").read_text())
    assert lat["threads"] == 1 and lat["system"]["quantized_engine"] == "x86"
    deployed = torch.load(built / f"results/{EXP}/pqd/deployed.pt", weights_only=True)
    assert deployed["meta"]["form"] == "int8"
    assert any(v.dtype == torch.qint8 for v in deployed["state_dict"].values() if isinstance(v, torch.Tensor))


def test_another_order_reuses_the_shared_pruned_prefix(built: Path):
    jobs = planned(built, f"results/{EXP}/pdq/report.json")
    assert "stage_prune" not in jobs and "dense" not in jobs
    assert jobs["stage_distill"] == 1 and jobs["stage_qat"] == 1
    smk(built, f"results/{EXP}/pdq/report.json")
    rep = json.loads((built / f"results/{EXP}/pdq/report.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == ["dense", "p", "d", "q"] and rep["deployed_form"] == "int8"
    assert planned(built, f"results/{EXP}/pdq/report.json") == {}


def test_new_stages_are_dag_targets_with_their_second_inputs_and_reports(built: Path):
    """k reuses p's and pq's models and reads the pre-pruning (dense) model; e starts from scratch;
    l reshapes the model and its report counts fewer MACs."""
    jobs = planned(built, f"results/{EXP}/pqk/report.json")
    assert jobs.get("stage_pqk") == 1 and not {"dense", "stage_prune", "stage_qat"} & set(jobs)
    jobs = planned(built, f"results/{EXP}/eq/report.json")
    assert jobs.get("stage_epsd") == 1 and jobs.get("stage_qat") == 1 and "dense" not in jobs
    smk(built, f"results/{EXP}/pqk/report.json", f"results/{EXP}/l/report.json")
    k = json.loads((built / f"results/{EXP}/pqk/report.json").read_text())
    assert [s["stage"] for s in k["stages"]] == ["dense", "p", "q", "k"] and k["deployed_form"] == "int8"
    assert k["weight_sparsity_inner"] >= 0.5  # k keeps the student's zeros
    low = json.loads((built / f"results/{EXP}/l/report.json").read_text())
    lat = json.loads((built / f"results/{EXP}/pqd/latency.json").read_text())
    assert low["macs"] < lat["macs"] and low["deployed_form"] == "fp32"
    from pqd.measure import deployed_macs

    assert lat["macs"] == deployed_macs(str(built / f"results/{EXP}/dense/dense.pt"))  # pqd keeps the dense MACs


def test_summary_table_plot_and_snakemake_html_report(built: Path):
    smk(built, f"results/{EXP}/summary.csv")
    import pandas as pd

    df = pd.read_csv(built / f"results/{EXP}/summary.csv")
    # each pipeline next to its equal-budget control (controls: true by default)
    # pqd and pdq train 1 epoch per letter at one lr: one control (ctl-dpq, the first such ordering) serves both
    assert sorted(df["pipeline"]) == ["ctl-dpq", "dense", "pdq", "pqd"]
    assert {"accuracy_mean", "accuracy_ci95_low", "accuracy_ci95_high", "speedup_ci95_low", "group"} <= set(df)
    assert (df["accuracy_ci95_low"] <= df["accuracy_mean"]).all() and (
        df["accuracy_mean"] <= df["accuracy_ci95_high"]
    ).all()
    assert (built / f"results/{EXP}/frontier.png").stat().st_size > 10_000
    # images/s at the runtime's throughput setting beside batch-1 latency, against the same baseline
    assert (df["throughput_images_per_s"] > 0).all()
    assert (df["throughput_vs_baseline_ci95_low"] <= df["throughput_vs_baseline_mean"]).all()
    rep = json.loads((built / f"results/{EXP}/pqd/report.json").read_text())
    assert rep["throughput_setting"]["requests"] >= 1 and len(rep["throughput_rounds"]["baseline"]) == 4
    md = (built / f"results/{EXP}/summary.md").read_text()
    assert "| pqd |" in md and "Minimum detectable effect" in md
    # one seed: the summary says training noise is unseen and makes no significance-based claim
    assert "One seed: training noise is unseen" in md and "cannot be estimated" in md and (df["group"] == "-").all()
    assert "not judged (1 seed)" in (built / f"results/{EXP}/pairwise.md").read_text()
    pw = pd.read_csv(built / f"results/{EXP}/pairwise.csv")
    asked = set(zip(pw["a"], pw["b"]))
    assert {("pqd", "dense"), ("pqd", "ctl-dpq"), ("pdq", "ctl-dpq"), ("pqd", "pdq")} <= asked
    assert "ctl-dpq is the equal-budget control of pqd, pdq" in md
    assert ((pw["p_holm"] >= pw["p_value"]) & (pw["p_holm"] <= 1)).all()
    # the control trains exactly the epochs of pqd's stages, with their learning rates, stage by stage
    ctl = json.loads((built / f"results/{EXP}/ctl-dpq/report.json").read_text())
    assert [s["stage"] for s in ctl["stages"]] == ["dense", "f"] and ctl["deployed_form"] == "fp32"
    segments = ctl["stages"][-1]["segments"]
    assert [(g["letter"], g["epochs"], g["epochs_trained"]) for g in segments] == [
        ("d", 1, 1),
        ("p", 1, 1),
        ("q", 1, 1),
    ]
    meta = torch.load(built / f"results/{EXP}/ctl-dpq/finetuned.pt", weights_only=True)["meta"]
    assert len(meta["history"][-1]["train"]) == 3 and ctl["stages"][-1]["epochs"] == 3
    d = json.loads((built / f"results/{EXP}/pqd/report.json").read_text())["stages"][-1]
    assert d["teacher"]["model"] == "dense" and d["teacher"]["accuracy"] > 20.0
    smk(built, f"results/{EXP}/summary.csv", "--report", "report.html")
    assert (built / "report.html").stat().st_size > 10_000


def test_editing_one_stage_setting_reruns_that_stage_and_descendants_only(built: Path):
    targets = [f"results/{EXP}/pqd/report.json", f"results/{EXP}/pdq/report.json"]
    jobs = planned(built, *targets, edit="stages: {d: {temperature: 2.0}}")
    assert jobs.get("stage_distill") == 2  # pqd and pd
    assert jobs.get("stage_qat") == 1  # pdq, downstream of pd
    assert not {"stage_prune", "dense", "prepare_data"} & set(jobs)
    jobs = planned(built, *targets, edit="stages: {q: {lr: 0.02}}")
    assert jobs.get("stage_qat") == 2 and jobs.get("stage_distill") == 1  # pq, pdq; pqd
    assert not {"stage_prune", "dense"} & set(jobs)


def test_editing_a_stage_module_reruns_only_that_stage(built: Path):
    targets = [f"results/{EXP}/pqd/report.json", f"results/{EXP}/pdq/report.json"]
    path = built / "pqd/stages/distill.py"
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        jobs = planned(built, *targets)
        assert jobs.get("stage_distill") == 2 and "stage_prune" not in jobs and "dense" not in jobs
    finally:
        path.write_text(original)
    assert planned(built, *targets) == {}


def test_j4_on_this_machine_never_runs_more_training_threads_than_cores(wd: Path):
    """-j4 offers 4 'cores', but every job books cpus=threads and a local run offers only the
    machine's cores, so 2-thread training jobs on a 2-core machine run one at a time."""
    import os

    exps = ["resnet32_digits", "resnet44_digits"]
    # two training threads per job (the tiny config's is one); one epoch: what is counted is the schedule
    edit = "threads: {train: 2}\nprotocols: {quick: {dense: 1}}\n"
    res = smk(wd, "-j4", *[f"results/{e}/dense/dense.pt" for e in exps], edit=edit)
    running, peak = 0, 0
    for line in (res.stdout + res.stderr).splitlines():
        if line.strip() == "localrule dense:":
            running += 1
            peak = max(peak, running)
        elif re.match(r"Finished jobid: \d+ \(Rule: dense\)", line):
            running -= 1
    threads = 2  # threads.train, as edited
    assert peak == max(1, min(4, os.cpu_count()) // threads)


def test_default_runtime_times_dense_in_pytorch_and_in_openvino(built: Path):
    lat = json.loads((built / f"results/{EXP}/pqd/latency.json").read_text())
    assert lat["runtime"] == "openvino" and lat["openvino"]
    for key in ("model", "dense_fp32", "dense_runtime"):
        assert lat[key]["runs"] >= 200 and lat[key]["median_ms"] > 0
    assert lat["speedup_vs_dense_same_runtime"] == lat["dense_runtime"]["median_ms"] / lat["model"]["median_ms"]
    rep = json.loads((built / f"results/{EXP}/pqd/report.json").read_text())
    assert rep["speedup_same_runtime"] == lat["speedup_vs_dense_same_runtime"]
    # This 2-epoch, width-0.25 model (~70%) has tiny logit margins, and OpenVINO's requantization
    # rounding flipped 10 of 360 near-ties in CI. The per-image agreement is tested on a better
    # model in test_runtimes.py; trained c10jpg models agree within 0.28 points (BENCHMARKS.md).
    # Here: both accuracies are reported and a wrong scale or layout (which drops to chance) is caught.
    assert abs(rep["accuracy"] - rep["accuracy_torch"]) <= 4.0 and rep["accuracy"] > 40.0
    assert (built / f"results/{EXP}/dense/deployed.onnx").exists()


def _weights_quantized_in_graph(path: Path) -> int:
    """QuantizeLinear nodes fed by an initializer: float weights quantized inside the graph, as in
    OpenVINO's weighted_inputs graph; the every_op graph stores its weights as INT8 already."""
    import onnx

    g = onnx.load(str(path)).graph
    weights = {t.name for t in g.initializer}
    return sum(n.op_type == "QuantizeLinear" and n.input[0] in weights for n in g.node)


def test_switching_runtime_reruns_only_measurement_jobs(built: Path):
    target = f"results/{EXP}/pqd/report.json"
    edit = "measure: {runtime: onnxruntime}"
    jobs = planned(built, target, edit=edit)
    # the INT8 model is re-exported in the graph ONNX Runtime fuses (every_op, not OpenVINO's
    # weighted_inputs); the FP32 dense export is the same for both runtimes and is kept;
    # dense is evaluated in the new runtime too
    assert jobs == {"export_onnx": 1, "evaluate": 2, "latency": 1, "report": 1}
    onnx_path = built / f"results/{EXP}/pqd/deployed.onnx"
    assert _weights_quantized_in_graph(onnx_path) > 0  # OpenVINO's graph
    smk(built, target, edit=edit)
    assert _weights_quantized_in_graph(onnx_path) == 0  # ONNX Runtime's
    rep = json.loads((built / target).read_text())
    assert rep["runtime"] == "onnxruntime" and rep["deployed_form"] == "int8"
    assert abs(rep["accuracy"] - rep["accuracy_torch"]) <= 1.5
    lat = json.loads((built / f"results/{EXP}/pqd/latency.json").read_text())
    assert lat["runtime"] == "onnxruntime" and lat["onnxruntime"] and lat["model"]["runs"] >= 200
    jobs = planned(built, target, edit="measure: {runtime: torch}")
    assert jobs == {"evaluate": 2, "latency": 1, "report": 1}


def test_two_seeds_are_replicates_pooled_by_the_summary(built: Path):
    """seeds: [0, 1]: results/<exp>/ stays seed 0 (nothing reruns), results/<exp>-s1/ is seed 1,
    and the summary pools both."""
    import pandas as pd

    edit = "seeds: [0, 1]\ncontrols: false\n"
    jobs = planned(built, f"results/{EXP}/summary.csv", edit=edit)
    assert jobs.get("dense") == 1 and jobs.get("stage_prune") == 1  # seed 1 only: seed 0's models are reused
    smk(built, f"results/{EXP}/summary.csv", edit=edit)
    r0 = json.loads((built / f"results/{EXP}/pqd/report.json").read_text())
    r1 = json.loads((built / f"results/{EXP}-s1/pqd/report.json").read_text())
    assert (r0["seed"], r1["seed"]) == (0, 1) and r1["experiment"] == EXP and r1["replicate"] == f"{EXP}-s1"
    w0, w1 = (
        torch.load(built / f"results/{e}/dense/dense.pt", weights_only=True)["state_dict"] for e in (EXP, f"{EXP}-s1")
    )
    assert not torch.equal(w0["linear.weight"], w1["linear.weight"])  # another initialisation and data order
    df = pd.read_csv(built / f"results/{EXP}/summary.csv")
    assert sorted(df["pipeline"]) == ["dense", "pdq", "pqd"] and (df["seeds"] == 2).all()
    pqd = df[df["pipeline"] == "pqd"].iloc[0]
    assert pqd["accuracy_mean"] == pytest.approx((r0["accuracy"] + r1["accuracy"]) / 2, abs=0.01)  # CSV: 4 digits
    assert pqd["accuracy_ci95_low"] < pqd["accuracy_mean"] < pqd["accuracy_ci95_high"]
    md = (built / f"results/{EXP}/summary.md").read_text()
    assert "2 seed(s)" in md and "cover training noise" in md and "One seed" not in md
    assert df["group"].str.fullmatch("[a-zA-Z]+").all()  # letter groups from two seeds on
    pairwise = (built / f"results/{EXP}/pairwise.md").read_text()
    assert "cover training noise" in pairwise and "not judged" not in pairwise
    res = smk(built, f"results/{EXP}-s1/summary.csv", edit=edit, check=False)
    assert res.returncode != 0 and f"the summary over all seeds is results/{EXP}/summary.csv" in res.stderr
    res = smk(built, f"results/{EXP}-s7/pqd/report.json", edit=edit, check=False)
    assert res.returncode != 0 and "is not a replicate of experiment" in res.stderr


def test_kd_taught_by_its_control_and_same_budget_controls_trained_once(built: Path):
    """stages.d.teacher: control builds a DAG (the control of d is also d's teacher), and pipelines
    with the same budget share one control: the singles p, q, d one (ctl-d), the six orders one."""
    edit = "pipelines: [dense, p, q, d, pqd, pdq, dpq]\nstages: {d: {teacher: control}}\n"
    jobs = planned(built, "--forceall", f"results/{EXP}/summary.csv", edit=edit)  # built ones counted too
    # ctl-d (1 epoch) serves p, q, d and teaches d; ctl-dp (2) teaches pd; ctl-dpq (3) serves the orders
    # and teaches pqd's d
    assert jobs.get("equal_budget_control") == 3, jobs


def test_claims_script_reads_the_summary_and_gives_a_verdict_per_claim(built: Path):
    """bench/claims.py (BENCHMARKS.md section 2) on a two-seed summary of dense, pqd and pdq."""
    smk(built, f"results/{EXP}/summary.csv", edit="seeds: [0, 1]\ncontrols: true\n")
    res = subprocess.run(
        # the run's configs name its seeds: replicates of other seeds on disk are not read
        [
            sys.executable,
            str(ROOT / "bench/claims.py"),
            "results",
            EXP,
            "--config",
            "config/config.yaml",
            "tiny.yaml",
            "edit.yaml",
        ],
        cwd=built,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "# resnet20_digits: 2 seeds x" in out
    assert "1. INT8 QAT gives the dominant runtime benefit" in out and "pqd" in out
    assert "2. Unstructured pruning alone: not tested (no pipeline p in this summary)" in out
    assert "pqd - pdq:" in out  # claim 4 from pairwise.csv, the one other order here
    assert "pqd - ctl-dpq:" in out and "significantly better" in out  # claim 5


LATENCY_S = """pipelines: [dense, s, sq]
stages: {s: {target: latency, latency_keep: LATENCY_KEEP, latency_form: fp32, steps: 1}}
protocols: {quick: {s: 1}}
"""


def test_replicates_of_an_imported_model_share_one_latency_curve(built: Path):
    """Every replicate imports the same dense checkpoint, so the model entering s is the same: one
    latency curve (the first seed's) serves them all, and the replicates of one target get one
    architecture."""
    ckpt = built / "imported.pt"
    shutil.copy(built / f"results/{EXP}/dense/dense.pt", ckpt)
    edit = (
        LATENCY_S.replace("LATENCY_KEEP", "0.9")
        + f"seeds: [0, 1, 2]\ncontrols: false\ndense: {{checkpoint: '{ckpt}'}}\n"
    )
    targets = [f"results/{EXP}/s/report.json", f"results/{EXP}-s1/s/report.json", f"results/{EXP}-s2/s/report.json"]
    jobs = planned(built, *targets, edit=edit)
    assert jobs.get("latency_curve") == 1 and jobs.get("stage_structured") == 3, jobs
    jobs = planned(
        built, *targets, edit=LATENCY_S.replace("LATENCY_KEEP", "0.9") + "seeds: [0, 1, 2]\ncontrols: false\n"
    )
    assert jobs.get("latency_curve") >= 2, (
        jobs
    )  # trained dense models differ by seed: a curve each (seed 0 may be built)


def test_latency_targeted_s_reads_a_curve_measured_by_its_own_job_and_reports_what_it_reached(built: Path):
    """The curve is a job of its own (latency resources), s reads it, the pipelines' latency jobs
    time the model that entered s beside the deployed one, and report.json holds target,
    prediction and measurement; sq shares s's model and curve. Editing the target reruns s and not
    the curve; editing the timing reruns the curve."""
    edit = LATENCY_S.replace("LATENCY_KEEP", "0.9")
    targets = [f"results/{EXP}/s/report.json", f"results/{EXP}/sq/report.json"]
    jobs = planned(built, *targets, edit=edit)
    assert jobs.get("latency_curve") == 1 and jobs.get("stage_structured") == 1 and "dense" not in jobs
    smk(built, *targets, edit=edit)
    curve = json.loads((built / f"results/{EXP}/s/latency_curve.json").read_text())
    assert curve["points"][0]["ratio"] == 0 and curve["form"] == "fp32" and "isa" in curve["system"]
    s = json.loads((built / f"results/{EXP}/s/report.json").read_text())
    lt = s["latency_target"]
    assert lt["target"] == {"latency_keep": 0.9} and lt["predicted_keep"] == 0.9 and lt["deployed_form"] == "fp32"
    assert (
        0 < lt["measured_keep"] < 1.5
        and lt["measured_keep_ci95"][0] <= lt["measured_keep"] <= lt["measured_keep_ci95"][1]
    )
    budget = s["stages"][-1]["structured"]["budget"]
    assert 0 < s["stages"][-1]["structured"]["channel_ratio"] <= 0.8 and budget["form"] == "fp32"
    sq = json.loads((built / f"results/{EXP}/sq/report.json").read_text())
    assert sq["latency_target"]["deployed_form"] == "int8"  # measured against an INT8 reference
    assert json.loads((built / f"results/{EXP}/pqd/report.json").read_text())["latency_target"] is None
    jobs = planned(built, *targets, edit=LATENCY_S.replace("LATENCY_KEEP", "0.85"))
    assert jobs.get("stage_structured") == 1 and "latency_curve" not in jobs
    jobs = planned(built, *targets, edit=edit + "measure: {rounds: 5}\n")
    assert jobs.get("latency_curve") == 1
