"""Bad input, as a careless or hostile user gives it: every case ends in one ``pqd: error:`` line
naming the problem and the fix, writes no output, and changes no file of any other run.

A tiny built workflow (digits, ResNet-20 at width 0.25) is snapshotted before each case; after
it, no file outside the case's own results (or data) directory may have appeared or changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXP = "resnet20_digits"
DENSE = f"results/{EXP}/dense/dense.pt"
TINY = helpers.TINY_WORKFLOW
IGNORED = (".snakemake", "__pycache__")


def smk(wd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """Every case here reads the return code and output itself."""
    return helpers.smk(wd, *args, check=False, **kw)


def snapshot(wd: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in wd.rglob("*"):
        rel = p.relative_to(wd).as_posix()
        if p.is_file() and not any(part in IGNORED for part in p.relative_to(wd).parts) and rel not in ("edit.yaml",):
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def changed_outside(before: dict, after: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """Files created, changed or deleted, except under the ``allowed`` prefixes."""
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k) and not k.startswith(allowed))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "pqd: error:" in line]


@pytest.fixture(scope="module")
def wd(tmp_path_factory) -> Path:
    d = helpers.copy_workflow(tmp_path_factory.mktemp("bad"), TINY)
    res = smk(d, DENSE)
    assert res.returncode == 0, res.stderr[-2000:]
    return d


# --- refused before any job runs (dry run against the built tree: errors must surface even
# --- when target files exist) ----------------------------------------------------------------
DAG_CASES = [
    ("results/alexnet_digits/pqd/report.json", "", "unknown backbone in experiment 'alexnet_digits'"),
    ("results/resnet20_svhn/pqd/report.json", "", "unknown dataset 'svhn' in experiment 'resnet20_svhn'"),
    (f"results/{EXP}/pqx/report.json", "", "unknown stage letter 'x' in pipeline 'pqx'"),
    (f"results/{EXP}/ppq/report.json", "", "pipeline 'ppq' repeats stage 'p'"),
    (f"results/{EXP}/qs/report.json", "", "reshapes FP32 layers, so it must come before the quantizing stage"),
    (f"results/{EXP}/qk/report.json", "", "stage 'k' (pqk) needs stage 'p' (prune) earlier"),
    (f"results/{EXP}/pe/report.json", "", "stage 'e' (epsd) trains its model from scratch, so it must come first"),
    (
        f"results/{EXP}/pqd/report.json",
        "stages: {p: {sparsity: 1.5}}",
        "invalid config at 'stages.p.sparsity': 1.5 is greater than or equal to the maximum of 1",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "stages: {P: {sparsity: 0.9}}",
        "invalid config at 'stages': Additional properties are not allowed ('P' was unexpected)",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "stages: {x: {lr: 0.1}}",
        "invalid config at 'stages': Additional properties are not allowed ('x' was unexpected)",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "stages: {p: {sparsty: 0.9}}",
        "invalid config at 'stages.p': Additional properties are not allowed ('sparsty' was unexpected)",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "protocols: {quick: {z: 2}}",
        "invalid config at 'protocols.quick': Additional properties are not allowed ('z' was unexpected)",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "overrides: {resnet20_digits: {stages: {d: {temprature: 2}}}}",
        "in overrides.resnet20_digits: invalid config at 'stages.d': Additional properties",
    ),
    (f"results/{EXP}/pqd/report.json", "device: tpu", "invalid config at 'device': 'tpu' is not one of"),
    (f"results/{EXP}/pqd/report.json", "protocol: slow", "unknown protocol 'slow'; define it under 'protocols'"),
    (f"results/{EXP}/pqd/report.json", "measure: {runs: 10}", "invalid config at 'measure.runs': 10 is less than"),
    (f"results/{EXP}/pqd/report.json", "measure: {rounds: 2}", "invalid config at 'measure.rounds': 2 is less than"),
    (f"results/{EXP}/pqd/report.json", "measure: {runtime: tensorrt}", "invalid config at 'measure.runtime'"),
    (f"results/{EXP}/pqd/report.json", "threads: {train: 0}", "invalid config at 'threads.train'"),
    (f"results/{EXP}/pqd/report.json", "train: {optimizer: adam}", "invalid config at 'train.optimizer'"),
    (f"results/{EXP}/pqd/report.json", "width: 0", "invalid config at 'width'"),
    (f"results/{EXP}/pqd/report.json", "datasets: {digits: {kind: svhn}}", "invalid config at 'datasets.digits.kind'"),
    (
        "data/pqd-cache/dx.pt",
        "datasets: {'dx;touch X;': {kind: digits}}",
        "invalid config at 'datasets': 'dx;touch X;' does not match",
    ),
    (
        f"results/{EXP}/pqd/report.json",
        "dense: {checkpoint: missing.pt}",
        "dense.checkpoint 'missing.pt' not found (experiment resnet20_digits)",
    ),
    # known before any training: refused at DAG time, not after the earlier stages have trained
    (
        f"results/{EXP}/qd/report.json",
        "stages: {d: {teacher: 'after:p'}}",
        "stages.d.teacher 'after:p': 'p' is not a prefix of 'q', the pipeline before 'd' in 'qd'",
    ),
    (f"results/{EXP}/pqd/report.json", "stages: {d: {teacher: best}}", "invalid config at 'stages.d.teacher'"),
    (f"results/{EXP}/ctl-ep/report.json", "", "'ctl-ep': 'ep' trains from scratch (stage 'e')"),
    (f"results/{EXP}/ctl-pxq/report.json", "", "unknown stage letter 'x' in pipeline 'pxq'"),
    (
        f"results/{EXP}/pqd/report.json",
        "stages: {p: {sparsity: .nan}}",
        "invalid config at 'stages.p.sparsity': nan is not a finite number",
    ),
    (f"results/{EXP}/pqd/report.json", "dense: {lr: .inf}", "invalid config at 'dense.lr': inf is not a finite number"),
    (f"results/{EXP}/pqd/report.json", "seed: 3", "'seed' is now 'seeds', a list of replicate seeds; write seeds: [3]"),
    (f"results/{EXP}/pqd/report.json", "seeds: [1, 1]", "invalid config at 'seeds'"),
    (f"results/{EXP}-s2/pqd/report.json", "seeds: [0, 1]", "'resnet20_digits-s2' is not a replicate of experiment"),
]


@pytest.mark.parametrize("target, edit, message", DAG_CASES, ids=[c[2][:40] for c in DAG_CASES])
def test_refused_before_anything_runs(wd: Path, target: str, edit: str, message: str):
    before = snapshot(wd)
    res = smk(wd, "-n", target, edit=edit)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    lines = error_lines(out)
    assert len(set(lines)) == 1 and message in lines[0], out[-2000:]
    assert "Traceback" not in out
    assert changed_outside(before, snapshot(wd)) == []
    assert not (wd / "X").exists()


def test_nested_command_line_config_values_are_typed_like_the_config_file(wd: Path):
    """Snakemake reads a nested --config value with YAML's BaseLoader (every leaf a string):
    seeds=[0,1] failed with "'0' is not of type 'integer'". pqd re-reads those leaves as YAML."""
    res = smk(wd, "-n", f"results/{EXP}/pqd/report.json", "--config", "seeds=[0,1]")
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    res = smk(
        wd, "-n", "-p", f"results/{EXP}-s1/pqd/report.json", "--config", "seeds=[0, 1]", "stages={p: {sparsity: 0.9}}"
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "stage_prune" in out and '"sparsity": 0.9' in out, out[-2000:]
    # a setting the rest of its block makes inert is said once, before anything runs (issue 22)
    res = smk(wd, "-n", f"results/{EXP}/pqd/report.json", "--config", "train={optimizer: adamw}")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "pqd: warning: train.nesterov has no effect (it applies to SGD only)" in out
    res = smk(wd, "-n", f"results/{EXP}/pqd/report.json", "--config", "stages={p: {sparsity: .nan}}")
    lines = error_lines(res.stdout + res.stderr)
    assert res.returncode != 0 and lines == [
        "pqd: error: invalid config at 'stages.p.sparsity': nan is not a finite "
        "number; fix config/config.yaml or the --config value"
    ], lines


# --- refused by the job that meets the problem: one line ends its log, no output ------------
def _malicious_pickle(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Payload()}, path)


def _image_folder(root: Path, *, empty_class: bool = False, corrupt: bool = False) -> None:
    import numpy as np
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    if empty_class:
        (root / "train" / "emu").mkdir()
    if corrupt:
        (root / "train" / "dog" / "9.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


JOB_CASES = {
    "corrupt checkpoint": (
        lambda d: (d / "corrupt.pt").write_bytes(b"not a checkpoint at all"),
        "dense: {checkpoint: corrupt.pt}",
        "dense",
        "corrupt or unsafe checkpoint corrupt.pt (not a torch checkpoint: Unsupported operand",
    ),
    "malicious pickle": (
        lambda d: _malicious_pickle(d / "evil.pt", d / "PWNED"),
        "dense: {checkpoint: evil.pt}",
        "dense",
        "corrupt or unsafe checkpoint evil.pt (it holds pickled code (posix.system), which pqd never runs)",
    ),
    "checkpoint of another backbone": (
        lambda d: torch.save({"fc.weight": torch.zeros(10, 64)}, d / "other.pt"),
        "dense: {checkpoint: other.pt}",
        "dense",
        "checkpoint other.pt does not fit backbone 'resnet20' (width 0.25)",
    ),
    "image folder missing": (
        lambda d: None,
        "datasets: {digits: {kind: imagefolder, root: nowhere}}",
        "data",
        "imagefolder dataset 'digits': folder nowhere/train not found",
    ),
    "image folder with an empty class": (
        lambda d: _image_folder(d / "imgs", empty_class=True),
        "datasets: {digits: {kind: imagefolder, root: imgs}}",
        "data",
        "imagefolder dataset 'digits': class folder imgs/train/emu holds no images",
    ),
    "corrupt JPEG": (
        lambda d: _image_folder(d / "imgs2", corrupt=True),
        "datasets: {digits: {kind: imagefolder, root: imgs2}}",
        "data",
        "imagefolder dataset 'digits': cannot decode imgs2/train/dog/9.jpg",
    ),
    "CIFAR not present offline": (
        lambda d: None,
        "datasets: {digits: {kind: c10, download: false}}",
        "data",
        "dataset 'digits' (CIFAR10) is not under",
    ),
}


@pytest.mark.parametrize("case", sorted(JOB_CASES))
def test_refused_by_the_job_with_one_line_and_no_output(wd: Path, case: str):
    setup, edit, kind, message = JOB_CASES[case]
    name = case.replace(" ", "_")
    setup(wd)
    results, data = f"results_{name}", f"data_{name}"
    before = snapshot(wd)
    target = f"{results}/{EXP}/dense/dense.pt"
    res = smk(wd, target, edit=f"results: {results}\ndata_root: {data}\n{edit}")
    assert res.returncode != 0
    log = wd / (f"{data}/pqd-cache/logs/digits-32px.log" if kind == "data" else f"{results}/logs/{EXP}/dense/dense.log")
    lines = log.read_text().strip().splitlines()
    assert lines[-1].startswith("pqd: error: ") and message in lines[-1], lines[-5:]
    assert not [line for line in lines if line.startswith("Traceback")]
    assert not (wd / target).exists()
    assert kind != "data" or not (wd / f"{data}/pqd-cache/digits-32px.pt").exists()
    assert not (wd / "PWNED").exists()  # the pickle's payload never ran
    assert changed_outside(before, snapshot(wd), allowed=(results, data)) == []
    assert not [p for p in wd.rglob(".*.tmp-*")]


# --- paths and names a shell would split or run ----------------------------------------------
@pytest.mark.parametrize("results", ["res ults", "r;touch INJECTED;x", 'it\'s "here"'])
def test_paths_with_spaces_quotes_and_semicolons_are_just_paths(wd: Path, results: str):
    before = snapshot(wd)
    res = smk(wd, f"{results}/{EXP}/dense/dense.pt", edit=f"results: '{results.replace(chr(39), chr(39) * 2)}'\n")
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    assert (wd / results / EXP / "dense/dense.pt").is_file()
    assert (wd / results / "logs" / EXP / "dense/dense.log").is_file()  # logs live with the run
    assert not (wd / "INJECTED").exists() and not (wd / "x").exists()
    assert changed_outside(before, snapshot(wd), allowed=(results,)) == []


def test_run_from_another_directory_uses_this_workflows_config_and_code(wd: Path, tmp_path: Path):
    res = smk(wd, "-n", DENSE, cwd=tmp_path, snakefile=wd / "Snakefile")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    assert "rule dense:" in out and "rule prepare_data:" in out
    env = subprocess.run(
        [sys.executable, "-c", "import pqd, sys; print(pqd.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(wd)},
    )
    assert env.stdout.strip() == str(wd / "pqd/__init__.py")


def test_the_thread_count_is_a_tracked_setting_and_recorded(wd: Path):
    res = smk(wd, "--summary", DENSE, edit="threads: {train: 2}")
    rows = [line.split("\t") for line in res.stdout.splitlines() if line.startswith(("results/", "data/"))]
    assert {r[2]: r[4] for r in rows} == {"dense": "params changed", "prepare_data": "ok"}
    meta = torch.load(wd / DENSE, weights_only=True)["meta"]
    assert meta["history"][-1]["threads"] == 1 and meta["history"][-1]["config"]["threads"] == 1


# --- interruptions ---------------------------------------------------------------------------
def _start(wd: Path, results: str, epochs: int = 40) -> subprocess.Popen:
    (wd / "long.yaml").write_text(f"results: {results}\nprotocols: {{quick: {{dense: {epochs}}}}}\n")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-j2",
        f"{results}/{EXP}/dense/dense.pt",
        "--configfile",
        str(wd / "tiny.yaml"),
        str(wd / "long.yaml"),
    ]
    return subprocess.Popen(cmd, cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _job_pids(wd: Path) -> list[int]:
    from pqd.interrupts import pqd_jobs

    return [p for p in pqd_jobs(1) if Path(f"/proc/{p}/cwd").resolve() == wd.resolve()]


def _wait_for_training(log: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if log.exists() and "epoch 1/" in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"training did not start: {log}")


@pytest.mark.parametrize(
    "how",
    ["SIGINT to the process group (Ctrl-C)", "SIGINT to Snakemake alone", "SIGTERM to the job", "SIGKILL to Snakemake"],
)
def test_an_interrupted_job_leaves_one_line_no_output_and_no_temp_file(wd: Path, how: str):
    results = "results_" + how.split()[0].lower() + "_" + how.split()[-1].lower().strip("()-")
    log = wd / results / "logs" / EXP / "dense/dense.log"
    proc = _start(wd, results)
    _wait_for_training(log)
    sig = getattr(signal, how.split()[0])
    if "group" in how:
        os.killpg(proc.pid, sig)
    elif "job" in how:  # what scancel or a cluster's time limit does
        for pid in _job_pids(wd):
            os.kill(pid, sig)
    else:
        os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    t0 = time.time()
    while time.time() - t0 < 30 and "pqd: error:" not in log.read_text():
        time.sleep(0.5)
    lines = log.read_text().strip().splitlines()
    assert lines[-1].startswith("pqd: error: stage interrupted by SIG"), lines[-3:]
    assert "its output was not written" in lines[-1]
    assert not [line for line in lines if "Traceback" in line]
    assert not (wd / results / EXP / "dense/dense.pt").exists()
    assert not list((wd / results).rglob(".*.tmp-*"))


def test_sigterm_to_snakemake_alone_stops_gracefully_and_keeps_the_finished_model(wd: Path):
    """Snakemake's own graceful stop: the running job finishes, its output counts as done."""
    results = "results_graceful"
    proc = _start(wd, results, epochs=8)
    _wait_for_training(wd / results / "logs" / EXP / "dense/dense.log")
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=300)
    assert (wd / results / EXP / "dense/dense.pt").is_file()
    res = smk(
        wd, "-n", f"{results}/{EXP}/dense/dense.pt", edit=f"results: {results}\nprotocols: {{quick: {{dense: 8}}}}\n"
    )
    assert "Nothing to be done" in res.stdout + res.stderr


def test_a_temp_file_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path):
    from pqd.checkpoint import atomic_path

    target = tmp_path / "model.pt"
    dead = tmp_path / ".model.pt.tmp-999999999"  # no such process
    live = tmp_path / f".model.pt.tmp-{os.getppid()}"  # a live writer's: left alone
    dead.write_bytes(b"half"), live.write_bytes(b"busy")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and not dead.exists() and live.exists()


def test_openvino_telemetry_writes_nothing_under_home(tmp_path: Path):
    code = (
        "from pqd.measure import int8_peak_kernels; k = int8_peak_kernels(1); k['openvino_conv3x3'][0](None); "
        "import sys; assert sys.modules['openvino_telemetry'] is None"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
