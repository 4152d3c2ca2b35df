"""Reading a finished experiment back: the configured settings after config overlays, and each
configured seed's replicate of a pipeline (by :func:`pqd.pipeline.replicate_name`, never by globbing
``<exp>*``, which also picked up replicates of seeds no longer configured). Torch-free; used by the
bench scripts that re-judge what a run produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import yaml

from pqd.errors import PqdError
from pqd.pipeline import replicate_name

READ = ("results", "experiments", "pipelines", "seeds")


def configured(configs: Iterable[Path], keys: tuple[str, ...] = READ) -> dict:
    """The top-level ``keys`` of config files merged in order (later files win, as Snakemake's
    ``--configfile a b`` does for top-level keys)."""
    out: dict = {}
    for path in configs:
        out.update({k: v for k, v in (yaml.safe_load(Path(path).read_text()) or {}).items() if k in keys})
    return out


def replicate_path(results: Path, exp: str, pipeline: str, seed: int, seeds: list[int]) -> Path:
    return Path(results) / replicate_name(exp, seed, seeds) / pipeline / "report.json"


def replicate_reports(results: Path, exp: str, pipeline: str, seeds: list[int]) -> list[dict]:
    """``pipeline``'s report.json in each configured seed's replicate, in seed order (``_path``
    added); a missing one is one clear error."""
    out = []
    for seed in seeds:
        path = replicate_path(results, exp, pipeline, seed, seeds)
        if not path.exists():
            raise PqdError(f"{path} is missing: run the workflow for seed {seed} first")
        out.append({**json.loads(path.read_text()), "_path": str(path)})
    return out


def replicate_paths(
    results: Path, exp: str, seeds: list[int], pipelines: Optional[Iterable[str]] = None
) -> dict[str, dict[int, Path]]:
    """{pipeline: {seed: report.json}} for every pipeline present in every configured seed's
    replicate (``pipelines``: those only)."""
    first = Path(results) / replicate_name(exp, seeds[0], seeds)
    names = list(pipelines) if pipelines is not None else sorted(p.parent.name for p in first.glob("*/report.json"))
    out = {}
    for p in names:
        paths = {s: replicate_path(results, exp, p, s, seeds) for s in seeds}
        if all(path.exists() for path in paths.values()):
            out[p] = paths
    return out
