"""Which stages a backbone can take, known before any job runs (torch-free: the Snakefile calls it).

The checks themselves (:mod:`pqd.probe`) need torch and the user's model code, so they run in a
child process, ``python -m pqd probe``, once per backbone entry, width and runtime. The verdicts
are cached in a file keyed by everything they depend on (the entry, the width, the runtime, the
code hash of the probe and of the model's module, the torch version), under
``$PQD_PROBE_CACHE`` or ``~/.cache/pqd/probe``: later DAG builds read a few hundred bytes, and an
edit of the model file probes again. A stage whose check failed is refused while the DAG is
built, with one line naming the stage, the layer or operation and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from pqd import codehash
from pqd.catalog import BackboneSpec
from pqd.errors import PqdError
from pqd.pipeline import StageSpec

CACHE_ENV = "PQD_PROBE_CACHE"
TIMEOUT_S = 900


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pqd" / "probe"


def probe_key(spec: BackboneSpec, width: float, runtime: str) -> str:
    from importlib import metadata

    code = codehash.code_hash(["pqd.probe", spec.module])
    ident = {
        "spec": spec.to_dict(),
        "width": width,
        "runtime": runtime,
        "code": code,
        "torch": metadata.version("torch"),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def verdicts(spec: BackboneSpec, width: float, runtime: str) -> dict:
    """``{check: {"ok": bool, ...}}`` for ``spec`` (see :func:`pqd.probe.probe`), cached."""
    path = cache_dir() / f"{spec.name}-{probe_key(spec, width, runtime)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            path.unlink()  # a torn file from a killed probe: probe again
    path.parent.mkdir(parents=True, exist_ok=True)
    params = json.dumps({"backbone": spec.to_dict(), "width": width, "runtime": runtime})
    print(
        f"pqd: probing backbone {spec.name!r} ({spec.builder}, {spec.image_size}px): which stages it can take",
        file=sys.stderr,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pqd", "probe", "--params", params, "--output", str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise PqdError(
            f"probing backbone {spec.name!r} took over {TIMEOUT_S} s; is its image_size "
            f"({spec.image_size}) what you meant?"
        ) from None
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PqdError(f"probing backbone {spec.name!r} failed ({last.removeprefix('pqd: error: ')})")
    return json.loads(path.read_text())


def refusal(spec: BackboneSpec, stages: Iterable[StageSpec], found: dict) -> str | None:
    """The one-line refusal of the first of ``stages`` whose check failed, else None."""
    for stage in stages:
        v = found[stage.probe]
        if not v["ok"]:
            fix = f"; {v['fix']}" if v.get("fix") else ""
            return f"stage {stage.key!r} cannot run on backbone {spec.name!r}: {v['where']} ({v['what']}){fix}"
    return None
