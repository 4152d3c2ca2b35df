"""Stage catalogue and the file layout of a pipeline, with no torch import.

The Snakefile imports this module while it builds the DAG, so it must stay cheap.
A *pipeline* is a string of distinct stage letters (``pqd``) or ``dense``; the
model after every prefix of it is one file, so pipelines that share a prefix
(``pqd`` and ``pdq`` share ``p``) share that file and it is computed once::

    results/{exp}/dense/dense.pt
    results/{exp}/p/pruned.pt
    results/{exp}/pq/qat_int8.pt
    results/{exp}/pqd/distilled_int8.pt

Adding a stage is one module under ``pqd/stages/`` exposing ``run(model, ctx)`` plus one
:class:`StageSpec` entry in :data:`STAGES`. Everything else is derived from the entry: the
Snakemake rule, the closed ``stages.<letter>`` block of the config schema with its defaults,
the stage's epochs in each built-in protocol, its cluster resources (a training job asks for a
GPU) and the keys of its record that ``report.json`` carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple

from pqd.errors import PqdError
from pqd.registry import Registry

DENSE = "dense"


def _lr(default: float) -> dict:
    return {"type": "number", "exclusiveMinimum": 0, "default": default, "description": "learning rate"}


def _temperature() -> dict:
    return {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 4.0,
        "description": "softmax temperature of the KD loss",
    }


def _alpha(default: float = 0.9, what: str = "weight of the soft-target term") -> dict:
    return {"type": "number", "minimum": 0, "maximum": 1, "default": default, "description": what}


def _kd() -> dict:
    """The settings of a stage that trains with a KD loss (pqd.losses.kd_loss): one definition for all."""
    return {"temperature": _temperature(), "alpha": _alpha()}


def _flag(default: bool, what: str) -> dict:
    return {"type": "boolean", "default": default, "description": what}


def _choice(values: list[str], what: str, default: Optional[str] = None) -> dict:
    """One of ``values`` (the first by default)."""
    return {"enum": values, "default": default or values[0], "description": what}


def _count(minimum: int, default: int, what: str) -> dict:
    return {"type": "integer", "minimum": minimum, "default": default, "description": what}


def _fraction(default: Optional[float], what: str, zero: bool = False, one: bool = False) -> dict:
    """A number in (0, 1), 0 and 1 included where allowed; None allowed (unset) where it is the default."""
    return {
        "type": "number" if default is not None else ["number", "null"],
        "minimum" if zero else "exclusiveMinimum": 0,
        "maximum" if one else "exclusiveMaximum": 1,
        "default": default,
        "description": what,
    }


def _sparsity() -> dict:
    return {
        "type": "number",
        "minimum": 0,
        "exclusiveMaximum": 1,
        "default": 0.5,
        "description": "fraction of the prunable weights set to zero",
    }


EXCLUDE = {
    "exclude_first_conv": _flag(True, "leave the first conv dense (few weights, large effect)"),
    "exclude_classifier": _flag(True, "leave the classifier dense"),
}


@dataclass(frozen=True)
class StageSpec:
    """Everything pqd knows about a stage, without importing it.

    ``module`` names the module whose ``run(model, ctx)`` does the work; ``artifact`` is the stem
    of its output file. Traits: ``quantizes`` (the model is fake-quantized afterwards; files then
    carry ``_int8``), ``structural`` (reshapes FP32 layers, so it must precede any quantizing
    stage), ``starts`` (builds its own model from a fresh backbone and must come first),
    ``teacher`` (a second input model fixed by the spec: ``before:<letter>``, the model that
    entered that earlier stage, which ``requires`` then lists; a teacher chosen in the config is
    ``TEACHER_SETTING``), ``probe`` (what the stage needs of a
    model, checked on a fresh build of the backbone before anything trains: a check of
    :data:`pqd.probe.CHECKS`; see :mod:`pqd.capability`). Every stage is a training job: on a
    cluster it asks for the ``train`` resources, a GPU among them.

    ``settings`` are the stage's config keys as JSON-schema properties, each with its default:
    the schema's ``stages.<letter>`` block is generated from them and closed to other keys.
    ``epochs`` are its default epochs per built-in protocol (a config's ``protocols`` lists only
    what differs); unless a spec says otherwise, those of a fine-tuning stage: one epoch in the quick
    protocol, the paper's 40 in its own. ``record`` names the keys of the stage's record that ``report.json`` carries.
    ``imports`` names a setting holding a file that replaces training when set (bring your own).
    ``latency_curve``: when its settings set a latency target (:func:`latency_target`), the stage
    also reads the latency curve of its input model, measured by the ``latency_curve`` rule where
    latency is measured (not on the training node). ``check`` validates settings that depend on
    each other (one-line error at DAG-build time), beyond what the schema block can say.
    ``budget`` names the settings that decide how much of the model the stage removes: when a
    pipeline loses more top-1 than ``report.max_loss``, the summary's warning names them.
    ``reference``: the stage removes structure to save time (``s``, ``b``), so a pipeline's latency
    job also times the model that entered the first such stage, in the deployed form, and the
    report says what fraction of its latency the pipeline kept (the stage's record then holds a
    ``budget``).
    """

    letter: str
    name: str
    artifact: str
    module: str
    settings: Mapping[str, dict] = field(default_factory=dict)
    epochs: Mapping[str, int] = field(default_factory=lambda: {"quick": 1, "paper": 40})  # a fine-tuning stage's
    quantizes: bool = False
    structural: bool = False
    starts: bool = False
    teacher: Optional[str] = None
    requires: str = ""
    probe: str = "build"
    record: Tuple[str, ...] = ()
    imports: Optional[str] = None
    latency_curve: bool = False
    reference: bool = False
    check: Optional[Callable[[Mapping[str, Any]], None]] = None
    budget: Tuple[str, ...] = ()
    doc: str = ""

    @property
    def key(self) -> str:
        """The stage's name in records, protocols and the CLI: its letter, or ``dense``."""
        return self.letter or DENSE

    @property
    def rule(self) -> str:
        return DENSE if not self.letter else f"stage_{self.name}"

    @property
    def config_path(self) -> Tuple[str, ...]:
        """Where its settings live in the config: ``dense`` or ``stages.<letter>``."""
        return (DENSE,) if not self.letter else ("stages", self.letter)

    @property
    def needs_teacher(self) -> bool:
        return self.teacher is not None


def latency_target(settings: Mapping[str, Any]) -> Optional[dict]:
    """``{"latency_keep": x}`` or ``{"latency_ms": x}`` when a stage's settings target latency, else None."""
    if settings.get("target") != "latency":
        return None
    return {k: settings[k] for k in ("latency_keep", "latency_ms") if settings.get(k) is not None}


def _check_budget(s: Mapping[str, Any]) -> None:
    """Exactly one budget applies: macs_keep, or one of latency_keep / latency_ms under target: latency."""
    set_latency = [k for k in ("latency_keep", "latency_ms") if s.get(k) is not None]
    if s.get("target") == "latency" and len(set_latency) != 1:
        raise PqdError(
            "stages.s.target is latency: set exactly one of stages.s.latency_keep (a fraction of the "
            f"unpruned latency) and stages.s.latency_ms (got {set_latency or 'neither'})"
        )
    if s.get("target") != "latency" and set_latency:
        raise PqdError(
            f"stages.s.{set_latency[0]} is set but stages.s.target is macs, so it would be ignored; "
            "set stages.s.target: latency (or remove it)"
        )


DENSE_STAGE = StageSpec(
    "",
    DENSE,
    DENSE,
    "pqd.stages.dense",
    starts=True,
    imports="checkpoint",
    settings={
        "lr": _lr(0.1),
        "checkpoint": {
            "type": ["string", "null"],
            "default": None,
            "description": "bring your own trained model (state dict, optionally module.-prefixed); skips training",
        },
    },
    epochs={"quick": 8, "paper": 200},
    doc="train the dense FP32 model from scratch, or import dense.checkpoint",
)

# StageSpec.teacher value: the teacher is the stage's `teacher` setting (pqd.config.teacher_pipeline)
TEACHER_SETTING = "setting"

STAGES: Registry[StageSpec] = Registry.of(
    "stage letter",
    StageSpec(
        "p",
        "prune",
        "pruned",
        "pqd.stages.prune",
        probe="masks",
        settings={
            "lr": _lr(0.01),
            "sparsity": _sparsity(),
            "schedule": _choice(["oneshot", "gradual"], "cubic ramp over the epochs, or all at once", "gradual"),
            **EXCLUDE,
        },
        epochs={"quick": 1, "paper": 20},
        record=("sparsity_target", "sparsity_prunable"),
        budget=("sparsity",),
        doc="global unstructured magnitude pruning with fine-tuning",
    ),
    StageSpec(
        "q",
        "qat",
        "qat",
        "pqd.stages.qat",
        quantizes=True,
        probe="quantize",
        settings={"lr": _lr(0.01)},
        doc="INT8 quantization-aware training (FX graph mode, x86 backend)",
    ),
    StageSpec(
        "d",
        "distill",
        "distilled",
        "pqd.stages.distill",
        teacher=TEACHER_SETTING,
        settings={
            "lr": _lr(0.01),
            **_kd(),
            "teacher": {
                "anyOf": [
                    {"enum": ["dense", "control", "input"]},
                    {"type": "string", "pattern": "^after:[a-z]+$"},
                ],
                "default": "dense",
                "description": "dense (the dense model), control (the equal-budget control of "
                "the pipeline up to this stage, ctl-<pipeline>), input (the model "
                "entering this stage) or after:<letters> (the model after that "
                "prefix of the pipeline)",
            },
        },
        record=("teacher",),
        doc="Hinton knowledge distillation from a chosen teacher (the dense FP32 model by default)",
    ),
    StageSpec(
        "f",
        "finetune",
        "finetuned",
        "pqd.stages.finetune",
        settings={"lr": _lr(0.01)},
        record=("segments",),
        doc="plain cross-entropy fine-tuning; ctl-<pipeline> runs it with that pipeline's epochs and "
        "learning rates (the equal-budget control)",
    ),
    StageSpec(
        "s",
        "structured",
        "slim",
        "pqd.stages.structured",
        structural=True,
        probe="structured",
        settings={
            "lr": _lr(0.01),
            "target": _choice(
                ["macs", "latency"],
                "what the budget counts: macs (macs_keep of the MACs) or latency (latency_keep of the "
                "unpruned model's latency, or latency_ms, measured where latency is measured)",
            ),
            "macs_keep": _fraction(0.5, "fraction of the MACs the pruned model keeps (target: macs)"),
            "latency_keep": _fraction(
                None,
                "target: latency: fraction of the unpruned model's batch-1 latency, in latency_form, "
                "measure.runtime and measure.threads",
            ),
            "latency_ms": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "default": None,
                "description": "target: latency: batch-1 milliseconds instead (absolute: "
                "holds only on the machine that measured the curve)",
            },
            "latency_form": _choice(
                ["int8", "fp32"],
                "the deployed form the latency target is for: int8 when a q stage follows, fp32 otherwise "
                "(a setting, not read from the pipeline: pipelines share the s prefix's model)",
            ),
            "importance": _choice(
                ["magnitude", "taylor"],
                "group L2 magnitude, or first-order Taylor |w dL/dw| accumulated over taylor_batches",
            ),
            "taylor_batches": _count(1, 8, "training batches the Taylor importance is accumulated over"),
            "allocation": _choice(
                ["uniform", "global"],
                "uniform: the same fraction of every layer's channels; global: channels ranked across "
                "layers by importance (Torch-Pruning's global pruning)",
            ),
            "round_to": _count(1, 1, "kept channel counts are multiples of this (1: any)"),
            "steps": _count(1, 2, "pruning rounds, each followed by fine-tuning (at most one per epoch)"),
            "distill": _flag(True, "distil from the unpruned model while pruning (CPD)"),
            **_kd(),
        },
        epochs={"quick": 2, "paper": 40},
        record=("structured",),
        budget=("target", "macs_keep", "latency_keep", "latency_ms"),
        latency_curve=True,
        reference=True,
        check=_check_budget,
        doc="dependency-aware channel/head pruning (Torch-Pruning), optionally distilling while pruning (CPD)",
    ),
    StageSpec(
        "b",
        "depth",
        "shallow",
        "pqd.stages.depth",
        structural=True,
        reference=True,
        probe="depth",
        settings={
            "lr": _lr(0.01),
            "blocks_keep": _fraction(
                0.5,
                "fraction of the removable residual blocks (identity shortcut) kept; the others are "
                "removed whole, least important first",
                zero=True,
            ),
            "score_batches": _count(
                1,
                4,
                "training batches on which each block's importance (the KL divergence of the outputs "
                "when it is bypassed) is measured",
            ),
            "distill": _flag(True, "distil from the unpruned model while fine-tuning"),
            **_kd(),
        },
        epochs={"quick": 2, "paper": 40},
        record=("depth",),
        budget=("blocks_keep",),
        doc="depth pruning: remove whole residual blocks by measured bypass importance, then fine-tune "
        "(with KD from the unpruned model)",
    ),
    StageSpec(
        "l",
        "lowrank",
        "lowrank",
        "pqd.stages.lowrank",
        settings={
            "lr": _lr(0.01),
            "energy": _fraction(
                0.9, "per layer, the smallest rank keeping this fraction of the squared singular values", one=True
            ),
            "rank_ratio": _fraction(
                None, "if set, rank = ceil(ratio * full rank) instead of the energy rule", one=True
            ),
            **EXCLUDE,
        },
        structural=True,
        probe="lowrank",
        epochs={"quick": 1, "paper": 20},
        record=("factorized",),
        budget=("energy", "rank_ratio"),
        doc="truncated-SVD factorisation of conv/linear layers into thin pairs, then fine-tuning",
    ),
    StageSpec(
        "k",
        "pqk",
        "pqk",
        "pqd.stages.pqk",
        teacher="before:p",
        requires="p",
        probe="masks",
        settings={
            "lr": _lr(0.01),
            **_kd(),
            "bn_batches": _count(
                1,
                10,
                "batches re-estimating the teacher's BatchNorm statistics (at the start; each epoch when "
                "shared is follow)",
            ),
            "shared": _choice(
                ["frozen", "follow"],
                "the teacher's kept weights: the student's at the start (frozen) or re-read before every "
                "teacher forward (follow)",
            ),
        },
        record=("teacher",),
        doc="PQK: distil from a teacher made of the student's kept weights plus the pruned-away ones",
    ),
    StageSpec(
        "e",
        "epsd",
        "epsd",
        "pqd.stages.epsd",
        starts=True,
        probe="masks",
        settings={
            "lr": _lr(0.1),
            "sparsity": _sparsity(),
            "criterion": _choice(
                ["epsd", "snip"], "saliency loss: self-distillation (EPSD) or cross-entropy (SNIP baseline)"
            ),
            "warmup_steps": _count(0, 20, "training steps before the saliency is scored"),
            "score_batches": _count(1, 4, "training batches the saliency is accumulated over"),
            "sd_alpha": _alpha(0.8, "weight of the self-distillation term (PS-KD's final alpha)"),
            "temperature": _temperature(),
            **EXCLUDE,
        },
        epochs={"quick": 8, "paper": 200},
        record=("epsd",),
        budget=("sparsity",),
        doc="EPSD: prune at initialisation by a self-distillation saliency, then train with self-distillation",
    ),
    key="letter",
)


# Kinds of job and the cluster resources each asks for by default (``resources.<kind>`` in the
# config overrides any key). Local runs ignore all but ``cpus`` (which every rule books from its
# threads). Every stage runs as a ``train`` job, so a new stage gets a GPU on a cluster without any
# profile naming its rule.
JOB_RESOURCES: dict[str, dict[str, Any]] = {
    "train": {"gpu": 1, "mem_mb": 8000, "runtime": 1440},
    "eval": {"mem_mb": 4000, "runtime": 60},
    "latency": {"mem_mb": 4000, "runtime": 30, "slurm_extra": "'--exclusive'"},  # nothing else on the node
    "light": {"mem_mb": 4000, "runtime": 60},
}


def stage_spec(chain: str) -> StageSpec:
    """The spec of the stage that produces the model after ``chain`` (``''`` = dense)."""
    return STAGES.get(chain[-1]) if chain else DENSE_STAGE


def all_stage_specs() -> list[StageSpec]:
    """Dense first, then every registered stage: each gets a rule, a schema block, epochs."""
    return [DENSE_STAGE, *(STAGES.get(letter) for letter in STAGES)]


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
            raise PqdError(
                f"stage {letter!r} ({spec.name}) trains its model from scratch, so it must come first "
                f"in pipeline {pipeline!r}; write e.g. {letter + pipeline.replace(letter, '')!r}"
            )
        if spec.structural and is_quantized("".join(seen)):
            raise PqdError(
                f"stage {letter!r} ({spec.name}) reshapes FP32 layers, so it must come before the "
                f"quantizing stage in pipeline {pipeline!r}; write e.g. "
                f"{''.join(sorted(pipeline, key=lambda c: not STAGES.get(c).structural))!r}"
            )
        missing = [r for r in spec.requires if r not in seen]
        if missing:
            raise PqdError(
                f"stage {letter!r} ({spec.name}) needs stage {missing[0]!r} "
                f"({STAGES.get(missing[0]).name}) earlier in pipeline {pipeline!r}"
            )
        seen.add(letter)
    return pipeline


CONTROL_PREFIX = "ctl-"


def control_of(pipeline: str) -> Optional[str]:
    """``ctl-pqd`` -> ``pqd``: the pipeline whose equal-budget control ``pipeline`` is (None when it
    is not a control). The control is the dense model fine-tuned with plain cross-entropy (stage
    ``f``) for the same epochs and learning rates, stage by stage, as that pipeline's stages:
    what the pipeline gains over it is compression's doing, not more training's."""
    if not pipeline.startswith(CONTROL_PREFIX):
        return None
    of = parse_pipeline(pipeline[len(CONTROL_PREFIX) :])
    if not of:
        raise PqdError(f"{pipeline!r}: the equal-budget control needs stage letters, e.g. ctl-pqd")
    first = STAGES.get(of[0])
    if first.starts:
        raise PqdError(
            f"{pipeline!r}: {of!r} trains from scratch (stage {first.key!r}), so it has no equal-budget "
            "control made from the dense model; compare it with dense instead"
        )
    return of


def final_chain(pipeline: str) -> str:
    """The chain whose model a pipeline deploys: its letters, or ``f`` (FP32) for a control."""
    return "f" if control_of(pipeline) is not None else parse_pipeline(pipeline)


def pipeline_model_path(results: str, exp: str, pipeline: str) -> str:
    """Path of the final model of ``pipeline`` (a chain, ``dense`` or a ``ctl-`` control)."""
    if control_of(pipeline) is not None:
        return f"{results}/{exp}/{pipeline}/{STAGES.get('f').artifact}.pt"
    return model_path(results, exp, parse_pipeline(pipeline))


def teacher_chain(chain: str) -> Optional[str]:
    """Chain of the second input model of the last stage of ``chain`` (None if it has none), for
    stages whose teacher is fixed by their spec (``TEACHER_SETTING``: see pqd.config.teacher_pipeline)."""
    teacher = STAGES.get(chain[-1]).teacher
    if teacher is None:
        return None
    if teacher.startswith("before:"):
        return chain[: chain.index(teacher.split(":", 1)[1])]
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


REPLICATE_SUFFIX = "-s"


def replicate_name(exp: str, seed: int, seeds: list[int]) -> str:
    """Directory name of experiment ``exp``'s replicate for ``seed``: the first seed keeps the bare
    name (a single-seed experiment is laid out as before), the others get ``-s<seed>``."""
    return exp if seed == seeds[0] else f"{exp}{REPLICATE_SUFFIX}{seed}"


def split_replicate(name: str) -> Tuple[str, Optional[int]]:
    """``resnet20_digits-s2`` -> (``resnet20_digits``, 2); a bare name -> (name, None)."""
    head, sep, tail = name.rpartition(REPLICATE_SUFFIX)
    if sep and head and tail.isdigit():
        return head, int(tail)
    return name, None


def parse_experiment(exp: str, datasets: Iterable[str], backbones: Iterable[str]) -> Tuple[str, str]:
    """Split ``{backbone}_{dataset}`` using the known names (backbones may contain '_')."""
    datasets, backbones = list(datasets), list(backbones)
    for backbone in sorted(backbones, key=len, reverse=True):
        if exp.startswith(backbone + "_"):
            dataset = exp[len(backbone) + 1 :]
            if dataset in datasets:
                return backbone, dataset
            if not datasets:
                raise PqdError(
                    f"experiment {exp!r} names dataset {dataset!r} but the config defines no datasets; "
                    "define them under 'datasets' (see config/config.yaml)"
                )
            raise PqdError(
                f"unknown dataset {dataset!r} in experiment {exp!r}; choose one of: "
                f"{', '.join(sorted(datasets))} (or define it under 'datasets' in the config)"
            )
    raise PqdError(
        f"unknown backbone in experiment {exp!r}; name experiments '{{backbone}}_{{dataset}}' "
        f"with a backbone among: {', '.join(backbones)} (or declare yours under 'backbones' in the config)"
    )


def all_pipelines(letters: str = "pqd") -> list[str]:
    """dense, every single, every ordered pair and every full order of ``letters``."""
    from itertools import permutations

    out = [DENSE]
    for k in range(1, len(letters) + 1):
        out += ["".join(p) for p in permutations(letters, k)]
    return out
