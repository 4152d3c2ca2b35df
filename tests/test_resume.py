"""Resumable training jobs: killed mid-run (SIGKILL: no chance to clean up), the rerun of the same
job continues from the last finished epoch and ends with weights bit-identical to a run that
was never interrupted."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import stage_params

from pqd.checkpoint import load_checkpoint

ENV = {**os.environ, "PQD_PROGRESS_S": "0.05"}


def stage_cmd(params, data: str, output: Path, model: str | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pqd",
        "--track",
        "pqd.runner,pqd.stages.dense,pqd.stages.qat,pqd.models.resnet_cifar",
        "stage",
        "--params",
        params.to_json(),
        "--data",
        data,
        "--output",
        str(output),
        *(["--input", model] if model else []),
    ]


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        assert subprocess.run(cmd, stderr=f, env=ENV, timeout=600).returncode == 0, log.read_text()[-2000:]


def run_and_kill(cmd: list[str], log: Path, after: str) -> None:
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stderr=f, env=ENV)
    t0 = time.time()
    while after not in log.read_text():
        assert proc.poll() is None and time.time() - t0 < 300, log.read_text()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def weights(path: Path) -> dict:
    sd = load_checkpoint(path)["state_dict"]
    return {k: (v.int_repr() if v.is_quantized else v) for k, v in sd.items() if isinstance(v, torch.Tensor)}


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:3]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_cache):
    d = tmp_path_factory.mktemp("ref")
    dense = stage_params("", "resnet20", 0.25, epochs=5)
    q = stage_params("q", "resnet20", 0.25, epochs=4)
    run(stage_cmd(dense, digits_cache, d / "dense.pt"), d / "dense.log")
    run(stage_cmd(q, digits_cache, d / "q.pt", str(d / "dense.pt")), d / "q.log")
    return d, dense, q


def test_killed_dense_job_resumes_to_bit_identical_weights(reference, digits_cache, tmp_path):
    ref, dense, _ = reference
    out, log = tmp_path / "dense.pt", tmp_path / "dense.log"
    run_and_kill(stage_cmd(dense, digits_cache, out), log, after="epoch 2/5 loss")
    assert not out.exists() and (tmp_path / ".dense.pt.resume").exists()
    run(stage_cmd(dense, digits_cache, out), log)
    assert "resuming at epoch 2 from" in log.read_text()
    assert " step " in log.read_text()  # in-epoch progress lines
    assert_identical(out, ref / "dense.pt")
    assert not (tmp_path / ".dense.pt.resume").exists()  # deleted on success


def test_killed_qat_job_resumes_with_its_observers_and_frozen_statistics(reference, digits_cache, tmp_path):
    ref, _, q = reference
    out, log = tmp_path / "q.pt", tmp_path / "q.log"
    cmd = stage_cmd(q, digits_cache, out, str(ref / "dense.pt"))
    run_and_kill(cmd, log, after="epoch 3/4 loss")  # observers freeze from epoch 3 (freeze_at 0.75)
    run(cmd, log)
    assert "resuming at epoch 3 from" in log.read_text()
    assert_identical(out, ref / "q.pt")


def test_a_resume_file_of_other_params_is_ignored_with_a_log_line(reference, digits_cache, tmp_path):
    ref, dense, _ = reference
    out, log = tmp_path / "dense.pt", tmp_path / "dense.log"
    run_and_kill(stage_cmd(dense, digits_cache, out), log, after="epoch 2/5 loss")
    other = dataclasses.replace(dense, settings={**dense.settings, "lr": 0.05})
    run(stage_cmd(other, digits_cache, out), log)
    text = log.read_text()
    assert "it was made by other params, code or inputs" in text and "resuming" not in text


def test_a_job_near_its_time_limit_stops_at_an_epoch_boundary_and_the_retry_resumes(reference, digits_cache, tmp_path):
    """A scheduler's time limit (PQD_DEADLINE here; SLURM's end time on a cluster, see
    pqd.interrupts.job_deadline): the job saves the epoch, stops with one line before the limit
    instead of being killed in the middle of the next epoch, and its retry resumes from it."""
    ref, dense, _ = reference
    out, log = tmp_path / "dense.pt", tmp_path / "dense.log"
    with open(log, "w") as f:
        proc = subprocess.run(
            stage_cmd(dense, digits_cache, out),
            stderr=f,
            timeout=600,
            env={**ENV, "PQD_DEADLINE": str(time.time() + 20)},
        )
    text = log.read_text()
    assert proc.returncode == 2, text[-2000:]  # a failed job to Snakemake, which retries it
    last = text.strip().splitlines()[-1]
    assert last.startswith("pqd: error: stopped after epoch 1/5: the next epoch"), last
    assert "a rerun resumes at epoch 2" in last and "Traceback" not in text
    assert not out.exists() and (tmp_path / ".dense.pt.resume").exists()
    run(stage_cmd(dense, digits_cache, out), log)
    assert "resuming at epoch 1 from" in log.read_text()
    assert_identical(out, ref / "dense.pt")
