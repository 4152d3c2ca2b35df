"""Typed job parameters: the JSON a rule tracks, parsed once into frozen dataclasses.

Each Snakemake job's ``params`` hold exactly the settings it depends on, as one JSON string:
Snakemake reruns the job when that string changes, and the job reads the same string, so what
reruns a job and what the job sees cannot drift apart. :mod:`pqd.config` builds these objects
from the validated config; the CLI parses them back with :meth:`from_json`. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional, Type, TypeVar

from pqd.catalog import BackboneSpec
from pqd.errors import PqdError

T = TypeVar("T")


def _build(cls: Type[T], data: Any) -> T:
    """``cls`` from a JSON object, nested dataclass fields included; a missing or unknown key is
    a one-line error (params written by another pqd version)."""
    if not isinstance(data, dict):
        raise PqdError(f"job parameters for {cls.__name__} are not a JSON object; rerun the job")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    missing = sorted(
        n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if unknown or missing:
        raise PqdError(
            f"job parameters do not fit {cls.__name__} (unknown: {unknown}, missing: {missing}); "
            "they come from another pqd version: rerun the workflow"
        )
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls.__name__, name))
        kwargs[name] = _build(sub, value) if sub and value is not None else value
    return cls(**kwargs)


class _Json:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls: Type[T], text: str) -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PqdError(f"job parameters are not valid JSON ({e.msg}); pass the rule's params unchanged") from None
        return _build(cls, data)


@dataclass(frozen=True)
class TrainSettings(_Json):
    """The optimiser settings every training stage shares (config ``train``)."""

    batch_size: int
    momentum: float
    weight_decay: float
    nesterov: bool
    optimizer: str
    precision: str = "fp32"
    memory_format: str = "auto"


@dataclass(frozen=True)
class DataSettings(_Json):
    """What loading a decoded dataset cache depends on (applied at load time, not decode time)."""

    normalize: Optional[dict]
    augment: dict
    train_subset: Optional[int]


@dataclass(frozen=True)
class StageParams(_Json):
    """One training job: the stage ``stage`` (a letter, or ``dense``) at the end of a chain."""

    stage: str
    label: str
    experiment: str
    backbone: BackboneSpec
    dataset: str
    width: float
    seed: int
    device: str
    threads: int
    epochs: int
    settings: dict
    train: TrainSettings
    data: DataSettings
    quant: Optional[dict] = None


@dataclass(frozen=True)
class EvalParams(_Json):
    data: DataSettings
    runtime: str


@dataclass(frozen=True)
class MeasureSettings(_Json):
    """Batch-1 latency timing and the throughput beside it (config ``measure``; 0 throughput rounds:
    not measured)."""

    runtime: str
    threads: int
    runs: int
    warmup: int
    rounds: int
    throughput_rounds: int = 0


@dataclass(frozen=True)
class DatasetParams(_Json):
    """Decoding one dataset into its cache."""

    name: str
    spec: dict
    root: str
    image_size: int


@dataclass(frozen=True)
class CurveParams(_Json):
    """A latency curve: the model entering stage ``s``, pruned at each of ``ratios`` as ``s`` prunes
    (``allocation``, ``round_to``), deployed in ``form`` and timed as ``measure`` says."""

    measure: MeasureSettings
    form: str
    allocation: str
    round_to: int
    ratios: list


_NESTED = {
    ("StageParams", "train"): TrainSettings,
    ("StageParams", "backbone"): BackboneSpec,
    ("StageParams", "data"): DataSettings,
    ("EvalParams", "data"): DataSettings,
    ("CurveParams", "measure"): MeasureSettings,
}
