"""Checkpoint files: atomic writes, safe loads, and the provenance every artifact carries.

A pqd checkpoint is a plain dict ``{"format", "state_dict", "meta"}`` holding only
tensors and JSON-like values, so it always loads with ``weights_only=True``; the
architecture is rebuilt from ``meta`` (backbone, classes, width, quantized) rather
than unpickled. Writes go to a temporary file that is renamed into place, so a killed
job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

import pqd
from pqd.errors import PqdError
from pqd.interrupts import pid_alive

FORMAT = "pqd-checkpoint/1"


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary siblings of ``path`` left by writers that no longer run (a job
    killed with SIGKILL, or a node that died, during a write); returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    An interrupted block (an exception, SIGINT, or SIGTERM, which the CLI turns into an
    exception) removes the temporary file; one left by a killed writer is removed by the next
    write of the same path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PqdError(f"missing file {path}; run the rule that makes it first") from None
    except json.JSONDecodeError as e:
        raise PqdError(f"corrupt JSON file {path} ({e.msg}); delete it and rerun") from None


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: dict) -> None:
    # The state dict is kept as returned (its ``_metadata`` carries module versions that
    # quantized modules need to reload); a JSON round trip keeps the metadata plain data.
    blob = {"format": FORMAT, "state_dict": state_dict, "meta": json.loads(json.dumps(meta))}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, turning failures into one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise PqdError(f"checkpoint not found: {path}; check the path (e.g. dense.checkpoint in the config)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/garbage/unsafe files
        raise PqdError(
            f"corrupt or unsafe checkpoint {path} ({_load_failure(e)}); "
            "re-create it, or point to a state_dict saved with torch.save"
        ) from None


def _load_failure(e: Exception) -> str:
    """The informative part of a ``torch.load`` failure. With ``weights_only=True`` torch explains
    at length how to turn the protection off; the line that matters names the refused object."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:  # a pickled reference to code: e.g. posix.system
            name = line.split("GLOBAL", 1)[1].split()[0]
            return f"it holds pickled code ({name}), which pqd never runs"
    for i, line in enumerate(lines):
        if line.startswith("Unsupported") or line.endswith("WeightsUnpickler error:"):
            detail = line if line.startswith("Unsupported") else (lines[i + 1] if i + 1 < len(lines) else line)
            return f"not a torch checkpoint: {detail[:100]}"
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:160]}"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a pqd checkpoint written by :func:`save_checkpoint`."""
    blob = load_file(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise PqdError(f"{path} is not a pqd checkpoint (no '{FORMAT}' header); delete it and rerun its rule")
    return blob


def foreign_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A bring-your-own checkpoint: a state dict, or a dict holding one under
    ``state_dict``/``model``, keys optionally prefixed with ``module.`` (DataParallel)."""
    blob = load_file(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return blob["state_dict"]
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise PqdError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict())")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def _source_hash() -> str:
    root = Path(pqd.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def code_version() -> dict:
    """pqd version, git commit (when run from a checkout) and a hash of the package source."""
    root = Path(pqd.__file__).parent.parent
    commit = None
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--", "pqd"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            commit += "-dirty" if dirty else ""
    return {"pqd": pqd.__version__, "git": commit, "source_sha256": _source_hash(), "torch": str(torch.__version__)}
