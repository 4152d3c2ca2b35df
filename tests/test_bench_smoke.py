"""The bench scripts must keep running (smoke run on tiny inputs); their figures are not tested."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "script, expect",
    [
        ("bench/latency.py", "ov_int8 peak frac"),
        ("bench/agreement.py", "openvino same prediction %"),
        ("bench/train_throughput.py", "ratio pqd / torchvision"),
        ("bench/snakemake_overhead.py", "jobs to rerun after that edit"),
        ("bench/benchmark_app_check.py", "pqd / benchmark_app"),
        ("bench/round_to.py", "latency kept / MACs kept"),
        ("bench/vit_int8.py", "vs fake-quantized"),
        ("bench/far_frontier.py", "fastest with mean loss under 1 point"),
        ("bench/q_paths.py", "takes all steps: fx (pqd) 1/2"),
        ("bench/depth_latency.py", "| depth 7/7 |"),
    ],
)
def test_bench_script_smoke_run(script, expect):
    res = subprocess.run(
        [sys.executable, str(ROOT / script), "--smoke"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert expect in res.stdout
