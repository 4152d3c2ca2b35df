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
from typing import Iterable, Tuple

from pqd.errors import PqdError
from pqd.registry import Registry

DENSE = "dense"


@dataclass(frozen=True)
class StageSpec:
    """What the workflow needs to know about a stage, without importing it.

    ``module`` names the Python module whose ``run(model, ctx)`` does the work;
    ``quantizes`` marks stages after which the model is fake-quantized (its files
    then carry an ``_int8`` suffix); ``needs_teacher`` makes the dense model an input.
    """

    letter: str
    name: str
    artifact: str
    module: str
    quantizes: bool = False
    needs_teacher: bool = False
    doc: str = ""


STAGES: Registry[StageSpec] = Registry("stage letter", {s.letter: s for s in (
    StageSpec("p", "prune", "pruned", "pqd.prune",
              doc="global unstructured magnitude pruning with fine-tuning"),
    StageSpec("q", "qat", "qat", "pqd.quant", quantizes=True,
              doc="INT8 quantization-aware training (FX graph mode, x86 backend)"),
    StageSpec("d", "distill", "distilled", "pqd.distill", needs_teacher=True,
              doc="Hinton knowledge distillation from the dense FP32 teacher"),
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
        seen.add(letter)
    return pipeline


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
