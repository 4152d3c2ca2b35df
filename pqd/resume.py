"""Resume files: a training job's full state at the end of each epoch, so a killed, pre-empted
or timed-out job continues where it stopped instead of starting over from epoch 0.

The file sits beside the job's output (``.<output>.resume``), not as a declared output, so
Snakemake's removal of incomplete outputs leaves it. It holds the model, optimiser, scheduler,
RNG states (the global one and the data order's), the epoch and the history so far, for the
current call of the training loop (a stage may call it several times: structured pruning's
rounds). Its ``key`` identifies the job exactly (params, code hash, input files): a file made by
anything else is ignored with a log line. Written atomically; deleted when the job succeeds.
Resuming gives bit-identical weights to an uninterrupted run (tested).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

import torch

from pqd.checkpoint import atomic_path, load_file


def job_key(params_json: str, code: str, inputs: Iterable[Optional[str]]) -> str:
    """Identity of a job: its params, the hash of its code, and the size and mtime of its inputs."""
    h = hashlib.sha256(params_json.encode() + b"\0" + code.encode())
    for path in inputs:
        if path:
            st = os.stat(path)
            h.update(f"\0{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


class ResumeFile:
    """The resume file of one job; each training-loop call asks it for its saved state."""

    def __init__(self, output: str, key: str, log=sys.stderr) -> None:
        out = Path(output)
        self.path = out.with_name(f".{out.name}.resume")
        self.key = key
        self.log = log
        self.call = -1  # index of the current training-loop call
        self._saved_call = -1
        if self.path.exists():
            blob = load_file(self.path)
            if blob.get("key") == key:
                self._saved_call = int(blob["call"])
            else:
                print(f"ignoring {self.path}: it was made by other params, code or inputs", file=log)

    def next_call(self) -> Optional[dict]:
        """Start the next training-loop call; its saved state, if the file holds this call's."""
        self.call += 1
        if self.call != self._saved_call:
            return None
        blob = load_file(self.path)
        print(f"resuming at epoch {blob['state']['epoch']} from {self.path}", file=self.log, flush=True)
        return blob["state"]

    def save(self, state: dict) -> None:
        """Save the current call's state, unless the file already holds a later call's."""
        if self.call < self._saved_call:
            return
        self._saved_call = self.call
        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, "call": self.call, "state": state}, tmp)

    def done(self) -> None:
        self.path.unlink(missing_ok=True)
