"""Stopping jobs cleanly: SIGINT and SIGTERM become one exception, and no job outlives its workflow.

A job interrupted by Ctrl-C, ``scancel``, a cluster time limit or a stopped Snakemake must leave
no traceback in its log, no half-written output and no temporary file: the signal is turned into
:class:`Interrupted`, so every ``finally`` (and :func:`pqd.checkpoint.atomic_path`) runs, and the
CLI prints one line. Snakemake's local executor does not stop running jobs when Snakemake alone
gets SIGINT (only Ctrl-C reaches the whole process group): it either waits for them or exits
and leaves them running, and in both cases marks their outputs incomplete, so the model they
finish is deleted and trained again. :func:`forward_to_jobs` (installed by the Snakefile in the
Snakemake process) passes SIGINT on to the running pqd jobs, and :func:`watch_workflow` (in
each job) stops the job when the Snakemake process that started it is gone. Torch-free.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

WORKFLOW_PID = "PQD_WORKFLOW_PID"


class Interrupted(BaseException):
    """A job stopped by a signal (a BaseException, like KeyboardInterrupt, so that ordinary
    ``except Exception`` clauses do not swallow it)."""

    def __init__(self, sig: signal.Signals, why: str = "") -> None:
        super().__init__(sig.name)
        self.signal = sig
        self.why = why


def stop_cleanly_on_signals() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread; later signals are
    dropped, so that clean-up is not itself interrupted (Ctrl-C plus a forwarded SIGTERM). They are
    dropped by a Python no-op handler, not SIG_IGN: a signal already caught at the C level whose
    handler became SIG_IGN is reported by Python as an error from inside whatever torch was doing."""

    def handler(signum: int, frame: object) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _drop)
        raise Interrupted(signal.Signals(signum), _reason.get("why", ""))

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


_reason: dict[str, str] = {}


def _drop(signum: int, frame: object) -> None:
    """A second signal while a job is already stopping: nothing more to do."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_workflow(interval_s: float = 1.0) -> Optional[threading.Thread]:
    """In a job: SIGTERM itself once the Snakemake process named by ``PQD_WORKFLOW_PID`` is gone."""
    pid = int(os.environ.get(WORKFLOW_PID, "0") or 0)
    if pid <= 0 or pid == os.getpid():
        return None

    def loop() -> None:
        while pid_alive(pid):
            time.sleep(interval_s)
        _reason["why"] = " (the Snakemake process that started it is gone)"
        signal.raise_signal(signal.SIGTERM)

    thread = threading.Thread(target=loop, name="pqd-watch-workflow", daemon=True)
    thread.start()
    return thread


def _children() -> dict[int, list[int]]:
    """``ppid -> [pid]`` for every process (Linux /proc; empty elsewhere)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def pqd_jobs(root: int) -> list[int]:
    """Descendants of process ``root`` that run ``python -m pqd``."""
    tree, found, todo = _children(), [], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-m" in argv and b"pqd" in argv[argv.index(b"-m") + 1 : argv.index(b"-m") + 2]:
                found.append(child)
    return found


def forward_to_jobs() -> None:
    """In the Snakemake process: on SIGINT, send SIGTERM to the running pqd jobs, then let
    Snakemake handle SIGINT as before (it stops scheduling and marks running jobs incomplete).

    SIGTERM is left to Snakemake: its scheduler installs a graceful stop for it (running jobs
    finish and their outputs are kept, no new job starts), which is what a user sending SIGTERM
    asks for."""
    me = os.getpid()
    os.environ[WORKFLOW_PID] = str(me)
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        for pid in pqd_jobs(me):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


DEADLINE = "PQD_DEADLINE"


def job_deadline() -> Optional[float]:
    """When the scheduler will end this job (seconds since the epoch), or None if it will not.

    A training job stops at an epoch boundary before this (:class:`pqd.train.TimeLimitNear`),
    with that epoch saved, and the retried or requeued job resumes from it: no epoch is lost to a
    time limit. pqd reads the limit rather than asking SLURM for a warning signal
    (``sbatch --signal``): the signal goes to every process of the job step, the Snakemake
    process that runs the job included, whose default for SIGUSR1 is to die, and a signal in
    mid-epoch could only save the last finished epoch anyway. Sources, first found wins:
    ``PQD_DEADLINE`` (any scheduler; epoch seconds), ``SLURM_JOB_END_TIME`` (SLURM >= 23.02),
    ``squeue -j $SLURM_JOB_ID -o %e`` (older SLURM)."""
    for name in (DEADLINE, "SLURM_JOB_END_TIME"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return float(value)
            except ValueError:
                return None
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))  # squeue prints local time
    except (OSError, subprocess.SubprocessError, ValueError):  # no controller, "Unknown", no limit
        return None
