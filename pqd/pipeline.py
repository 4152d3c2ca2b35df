"""Stage catalogue and the file layout of a pipeline, with no torch import.

The Snakefile imports this module while it builds the DAG, so it must stay cheap.
A *pipeline* is a string of distinct stage letters (``pqd``) or ``dense``; the
model after every prefix of it is one file, so pipelines that share a prefix
(``pqd`` and ``pdq`` share ``p``) share that file and it is computed once::

    results/{exp}/dense/dense.pt
    results/{exp}/p/pruned.pt
    results/{exp}/pq/qat_int8.pt
    results/{exp}/pqd/distilled_int8.pt

Adding a stage is one module under ``pqd/`` exposing ``run(model, ctx)`` plus one
:class:`StageSpec` entry in :data:`STAGES`; the Snakemake rules are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

from pqd.errors import PqdError
from pqd.registry import Registry

DENSE = "dense"


@dataclass(frozen=True)
class StageSpec:
    """What the workflow needs to know about a stage, without importing it.

    ``module`` names the Python module whose ``run(model, ctx)`` does the work;
    ``quantizes`` marks stages after which the model is fake-quantized (its files
    then carry an ``_int8`` suffix); ``structural`` stages reshape FP32 layers and so
    must come before any quantizing stage; a ``starts`` stage builds its own model from
    scratch (it stands in for ``dense.pt``) and must be first; ``teacher`` names a second
    input model: ``dense``, or ``before:<letter>`` (the model that entered that earlier
    stage, which ``requires`` then lists).
    """

    letter: str
    name: str
    artifact: str
    module: str
    quantizes: bool = False
    structural: bool = False
    starts: bool = False
    teacher: Optional[str] = None
    requires: str = ""
    doc: str = ""

    @property
    def needs_teacher(self) -> bool:
        return self.teacher is not None


STAGES: Registry[StageSpec] = Registry("stage letter", {s.letter: s for s in (
    StageSpec("p", "prune", "pruned", "pqd.prune",
              doc="global unstructured magnitude pruning with fine-tuning"),
    StageSpec("q", "qat", "qat", "pqd.quant", quantizes=True,
              doc="INT8 quantization-aware training (FX graph mode, x86 backend)"),
    StageSpec("d", "distill", "distilled", "pqd.distill", teacher="dense",
              doc="Hinton knowledge distillation from the dense FP32 teacher"),
    StageSpec("s", "structured", "slim", "pqd.structured", structural=True,
              doc="dependency-aware channel/head pruning (Torch-Pruning), optionally distilling while pruning (CPD)"),
    StageSpec("l", "lowrank", "lowrank", "pqd.lowrank", structural=True,
              doc="truncated-SVD factorisation of conv/linear layers into thin pairs, then fine-tuning"),
    StageSpec("k", "pqk", "pqk", "pqd.pqk", teacher="before:p", requires="p",
              doc="PQK: distil from a teacher made of the student's kept weights plus the pruned-away ones"),
    StageSpec("e", "epsd", "epsd", "pqd.epsd", starts=True,
              doc="EPSD: prune at initialisation by a self-distillation saliency, then train with self-distillation"),
)})

# Backbones and dataset kinds are catalogued as "module:callable" strings so that
# naming and validating them never imports torch.
BACKBONES: Registry[str] = Registry("backbone", {
    "vgg16": "pqd.models.vgg:vgg16_bn",
    "resnet18": "pqd.models.resnet:resnet18",
    "wrn28_10": "pqd.models.wrn:wrn28_10",
    "resnet20": "pqd.models.resnet_cifar:resnet20",
    "resnet32": "pqd.models.resnet_cifar:resnet32",
    "resnet44": "pqd.models.resnet_cifar:resnet44",
    "resnet56": "pqd.models.resnet_cifar:resnet56",
    "vit": "pqd.models.vit:vit",
})

DATASET_KINDS: Registry[str] = Registry("dataset kind", {
    "c10": "pqd.data:load_cifar10",
    "c100": "pqd.data:load_cifar100",
    "digits": "pqd.data:load_digits",
    "imagefolder": "pqd.data:load_imagefolder",
})


# Where a deployed model can be measured (pqd.runtimes holds the runners); the ONNX ones run the
# exported deployed.onnx, so the workflow adds the export job only for them.
RUNTIME_NAMES = ("torch", "onnxruntime", "openvino")
ONNX_RUNTIMES = ("onnxruntime", "openvino")

def parse_pipeline(pipeline: str) -> str:
    """Return the chain of stage letters of ``pipeline`` ('' for dense), validated."""
    if pipeline == DENSE:
        return ""
    if not pipeline:
        raise PqdError("empty pipeline name; use 'dense' or stage letters such as 'pqd'")
    seen = set()
    for letter in pipeline:
        if letter not in STAGES:
            known = ", ".join(f"{s}={STAGES.get(s).name}" for s in STAGES)
            raise PqdError(f"unknown stage letter {letter!r} in pipeline {pipeline!r}; known: {known}")
        if letter in seen:
            raise PqdError(f"pipeline {pipeline!r} repeats stage {letter!r}; each stage may appear once")
        spec = STAGES.get(letter)
        if spec.starts and seen:
            raise PqdError(f"stage {letter!r} ({spec.name}) trains its model from scratch, so it must come first "
                           f"in pipeline {pipeline!r}; write e.g. {letter + pipeline.replace(letter, '')!r}")
        if spec.structural and is_quantized("".join(seen)):
            raise PqdError(f"stage {letter!r} ({spec.name}) reshapes FP32 layers, so it must come before the "
                           f"quantizing stage in pipeline {pipeline!r}; write e.g. "
                           f"{''.join(sorted(pipeline, key=lambda c: not STAGES.get(c).structural))!r}")
        missing = [r for r in spec.requires if r not in seen]
        if missing:
            raise PqdError(f"stage {letter!r} ({spec.name}) needs stage {missing[0]!r} "
                           f"({STAGES.get(missing[0]).name}) earlier in pipeline {pipeline!r}")
        seen.add(letter)
    return pipeline


def teacher_chain(chain: str) -> Optional[str]:
    """Chain of the second input model of the last stage of ``chain`` (None if it has none)."""
    teacher = STAGES.get(chain[-1]).teacher
    if teacher is None:
        return None
    if teacher == "dense":
        return ""
    if teacher.startswith("before:"):
        return chain[:chain.index(teacher.split(":", 1)[1])]
    raise PqdError(f"stage {chain[-1]!r} names an unknown teacher {teacher!r}")


def is_quantized(chain: str) -> bool:
    """True when some stage of ``chain`` leaves the model fake-quantized (INT8-bound)."""
    return any(STAGES.get(c).quantizes for c in chain)


def artifact_name(chain: str) -> str:
    """File stem of the model after ``chain`` (``dense``, ``pruned``, ``qat_int8``...)."""
    if not chain:
        return DENSE
    stem = STAGES.get(chain[-1]).artifact
    return f"{stem}_int8" if is_quantized(chain) else stem


def chain_dir(chain: str) -> str:
    return chain or DENSE


def model_path(results: str, exp: str, chain: str) -> str:
    """Path of the model file after ``chain`` in experiment ``exp``."""
    return f"{results}/{exp}/{chain_dir(chain)}/{artifact_name(chain)}.pt"


def parse_experiment(exp: str, datasets: Iterable[str]) -> Tuple[str, str]:
    """Split ``{backbone}_{dataset}`` using the known names (backbones contain '_')."""
    datasets = list(datasets)
    for backbone in sorted(BACKBONES.names(), key=len, reverse=True):
        if exp.startswith(backbone + "_"):
            dataset = exp[len(backbone) + 1:]
            if dataset in datasets:
                return backbone, dataset
            raise PqdError(
                f"unknown dataset {dataset!r} in experiment {exp!r}; choose one of: "
                f"{', '.join(sorted(datasets))} (or define it under 'datasets' in the config)"
            )
    raise PqdError(
        f"unknown backbone in experiment {exp!r}; name experiments '{{backbone}}_{{dataset}}' "
        f"with a backbone among: {', '.join(BACKBONES.names())}"
    )


def all_pipelines(letters: str = "pqd") -> list[str]:
    """dense, every single, every ordered pair and every full order of ``letters``."""
    from itertools import permutations

    out = [DENSE]
    for k in range(1, len(letters) + 1):
        out += ["".join(p) for p in permutations(letters, k)]
    return out
