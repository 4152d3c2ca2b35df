"""Config schema, validation and per-experiment resolution, torch-free (imported by the Snakefile).

The schema on disk (``config/schema/config.schema.yaml``) holds the workflow-wide settings;
the parts that depend on what is registered are generated from the registries, so no second
list can drift from them: the ``dense`` and ``stages.<letter>`` blocks (closed, with defaults)
and the ``protocols`` keys from :data:`pqd.pipeline.STAGES`, the dataset kinds and runtimes
from :mod:`pqd.catalog`. The Snakefile validates the loaded config once; :func:`experiment`
then deep-merges ``overrides[exp]`` over it and validates the result again, so a typo inside
an override fails as clearly as one at the top level. :func:`stage_params` cuts out exactly
the settings a job depends on: Snakemake tracks them, so editing one stage's settings reruns
that stage and its descendants and nothing else.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

from pqd.catalog import BACKBONES, DATASET_KINDS, DEFAULT_RUNTIME, RUNTIMES, BackboneSpec
from pqd.errors import PqdError
from pqd.params import CurveParams, DatasetParams, DataSettings, EvalParams, MeasureSettings, StageParams, TrainSettings
from pqd.pipeline import (
    CONTROL_PREFIX,
    DENSE,
    STAGES,
    TEACHER_SETTING,
    StageSpec,
    all_stage_specs,
    control_of,
    is_quantized,
    latency_target,
    parse_experiment,
    parse_pipeline,
    replicate_name,
    split_replicate,
    stage_spec,
    teacher_chain,
)
from pqd.registry import Registry


def _settings_block(spec: StageSpec) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": f"settings of {spec.key} ({spec.doc})",
        "properties": copy.deepcopy(dict(spec.settings)),
    }


def protocol_names() -> list[str]:
    """Built-in protocols: those for which the stage specs give default epochs."""
    return sorted({p for s in all_stage_specs() for p in s.epochs})


def build_schema(path: str) -> dict:
    """The full config schema: the file at ``path`` plus the blocks generated from the registries."""
    import yaml

    with open(path) as f:
        schema = yaml.safe_load(f)
    props = schema["properties"]
    specs = all_stage_specs()
    props[DENSE] = _settings_block(specs[0])
    props["stages"] = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": "per-stage settings, one block per registered stage letter",
        "properties": {s.letter: _settings_block(s) for s in specs[1:]},
    }
    props["protocols"] = {
        "type": "object",
        "default": {},
        "description": f"epochs per stage for each protocol; built-in: {', '.join(protocol_names())} "
        "(list only what differs from the stage defaults; a new protocol lists every stage it runs)",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": False,
            "properties": {s.key: {"type": "integer", "minimum": 0} for s in specs},
        },
    }
    props["datasets"]["additionalProperties"]["properties"]["kind"] = {"enum": DATASET_KINDS.names()}
    props["measure"]["properties"]["runtime"] = {
        "enum": RUNTIMES.names(),
        "default": DEFAULT_RUNTIME,
        "description": "; ".join(f"{n}: {RUNTIMES.get(n).doc}" for n in RUNTIMES),
    }
    return schema


@lru_cache(maxsize=None)
def _schema_file(path: str) -> str:
    """The generated schema written once per process to a file (snakemake.utils.validate reads files),
    removed when the process exits (every job validates: 500 files a day piled up in /tmp)."""
    fd, out = tempfile.mkstemp(prefix="pqd-schema-", suffix=".json")
    atexit.register(lambda: Path(out).unlink(missing_ok=True))
    with os.fdopen(fd, "w") as f:
        json.dump(build_schema(path), f)
    return out


def _yaml_typed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _yaml_typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_typed(v) for v in value]
    if isinstance(value, str):
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def command_line_values(given: Any) -> dict:
    """The ``--config`` entries whose values are lists or mappings, with their leaves re-read as YAML.

    Snakemake types a top-level ``--config key=value`` (int, float, bool) but reads a nested one
    with YAML's BaseLoader, which keeps every leaf a string: ``seeds=[0,1]`` arrived as
    ``['0', '1']`` and failed validation with "'0' is not of type 'integer'". Merged over the
    config before validation (re-reading is idempotent, so cluster jobs that get the same
    arguments again end with the same config)."""
    out = {k: _yaml_typed(v) for k, v in dict(given or {}).items() if isinstance(v, (Mapping, list, tuple))}
    # top-level: Snakemake already typed numbers and True/False, not YAML's lowercase true/false/null
    out.update(
        {
            k: {"true": True, "false": False, "null": None}[v]
            for k, v in dict(given or {}).items()
            if isinstance(v, str) and v in ("true", "false", "null")
        }
    )
    return out


def _non_finite(value: Any, where: str = "") -> Optional[tuple[str, float]]:
    """The dotted path and value of the first NaN or infinite number in ``value`` (JSON Schema's
    ``number`` admits YAML's ``.nan`` and ``.inf``, which no setting means)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def _stage_default(letter: str, key: str) -> Any:
    return STAGES.get(letter).settings[key].get("default")


# Settings that do nothing in the mode the rest of their block chose: (block, setting, inert when the
# block says ..., why). Said rather than silently ignored (issue 22; :func:`inert_settings`).
INERT: tuple[tuple[tuple[str, ...], str, Callable[[Mapping], bool], str], ...] = (
    (("train",), "nesterov", lambda b: b.get("optimizer", "sgd") == "adamw", "it applies to SGD only"),
    (
        ("stages", "s"),
        "latency_form",
        lambda b: b.get("target", _stage_default("s", "target")) != "latency",
        "target is macs",
    ),
    (
        ("stages", "s"),
        "taylor_batches",
        lambda b: b.get("importance", _stage_default("s", "importance")) != "taylor",
        "importance is magnitude",
    ),
    *(
        (
            ("stages", letter),
            key,
            lambda b, letter=letter: not b.get("distill", _stage_default(letter, "distill")),
            "distill is false",
        )
        for letter in ("s", "b")
        for key in ("temperature", "alpha")
    ),
)


def inert_settings(config: Mapping, where: str = "") -> list[str]:
    """One line per setting of ``config`` (as the user wrote it, before defaults fill every key) that
    :data:`INERT` says has no effect there, also inside each ``overrides`` block. Warnings, not errors:
    a config that lists every setting (the shipped one does) and switches a mode on the command line
    would otherwise fail on a key it did not touch."""
    out = []
    for path, key, inert, why in INERT:
        block: Any = config
        for k in path:
            block = block.get(k, {}) if isinstance(block, Mapping) else {}
        if isinstance(block, Mapping) and key in block and inert(block):
            out.append(f"{where}{'.'.join((*path, key))} has no effect ({why})")
    for exp, block in (config.get("overrides") or {}).items():
        if isinstance(block, Mapping):
            out += inert_settings(block, f"overrides.{exp}.")
    return out


def validate(config: dict, schema: str) -> dict:
    """Validate (and fill defaults into) ``config``; one-line :class:`PqdError` on failure."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as sm_validate

    bad = _non_finite(config)
    if bad:
        raise PqdError(
            f"invalid config at '{bad[0]}': {bad[1]} is not a finite number; "
            "fix config/config.yaml or the --config value"
        )
    if "seed" in config:  # renamed when seeds became replicates: say so rather than "unexpected property"
        raise PqdError(
            f"invalid config: 'seed' is now 'seeds', a list of replicate seeds; write seeds: [{config['seed']}]"
        )
    try:
        sm_validate(config, _schema_file(os.path.abspath(schema)))
    except WorkflowError as e:
        # snakemake formats the jsonschema error into its message; the original is the context
        err = e.__context__ if isinstance(e.__context__, jsonschema.ValidationError) else None
        if err is None:
            raise PqdError(f"invalid config: {str(e).splitlines()[-1]}") from None
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message
        if err.validator in ("anyOf", "oneOf") and isinstance(err.schema, dict) and err.schema.get("description"):
            # "not valid under any of the given schemas" says nothing: the setting's own description does
            message += f" (expected: {' '.join(str(err.schema['description']).split())})"
        raise PqdError(
            f"invalid config at '{where}': {message}; fix config/config.yaml or the --config value"
        ) from None
    return config


def backbones(config: dict) -> Registry[BackboneSpec]:
    """Every backbone an experiment of ``config`` can name: pqd's built-in entries with the config's
    ``backbones:`` block merged over them (a new name needs a ``builder``)."""
    entries = {name: BACKBONES.get(name).to_dict() for name in BACKBONES}
    for name, entry in (config.get("backbones") or {}).items():
        if name not in entries and "builder" not in entry:
            raise PqdError(
                f"invalid config at 'backbones.{name}': a backbone pqd does not ship needs a builder "
                f"('module:callable', e.g. torchvision.models:resnet18 or models.mynet:build)"
            )
        entries[name] = {**deep_merge(entries.get(name, {}), entry), "name": name}
    return Registry("backbone", {name: BackboneSpec.from_dict(e) for name, e in entries.items()})


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def experiment(config: dict, name: str, schema: str) -> dict:
    """The config of experiment ``name`` (overrides applied, validated), plus its backbone and
    dataset names; ``protocols[protocol]`` completed from the stage defaults.

    ``name`` is an experiment or one of its seed replicates (``<exp>-s<seed>``); ``seed`` is then
    that replicate's seed, ``experiment`` the experiment and ``replicates`` the names of all of
    its replicates, first seed first."""
    exp, seed = split_replicate(name)  # dataset names are letters and digits: '-s<N>' is never part of one
    cfg = deep_merge({k: v for k, v in config.items() if k != "overrides"}, config.get("overrides", {}).get(exp, {}))
    try:
        validate(cfg, schema)
    except PqdError as e:
        raise PqdError(f"in overrides.{exp}: {e}") from None
    table = backbones(cfg)
    cfg["backbone"], cfg["dataset"] = parse_experiment(exp, cfg.get("datasets", {}), table.names())
    cfg["backbone_spec"] = spec = table.get(cfg["backbone"])
    if not spec.takes_width and cfg["width"] != 1.0:
        raise PqdError(
            f"experiment {exp!r}: backbone {spec.name!r} ({spec.builder}) has no width multiplier but "
            f"width is {cfg['width']}; set overrides.{exp}.width: 1.0"
        )
    seeds = cfg["seeds"]
    if seed is not None and (seed not in seeds or seed == seeds[0]):
        others = ", ".join(replicate_name(exp, s, seeds) for s in seeds[1:]) or "none"
        raise PqdError(
            f"{name!r} is not a replicate of experiment {exp!r}: its seeds are {seeds} (results/{exp}/ "
            f"is seed {seeds[0]}; other replicates: {others}); add {seed} to seeds"
        )
    cfg["seed"] = seeds[0] if seed is None else seed
    cfg["experiment"], cfg["replicates"] = exp, [replicate_name(exp, s, seeds) for s in seeds]
    name = cfg["protocol"]
    if name not in protocol_names() and name not in cfg["protocols"]:
        raise PqdError(
            f"unknown protocol {name!r}; define it under 'protocols' (built-in: {', '.join(protocol_names())})"
        )
    table = {s.key: s.epochs[name] for s in all_stage_specs() if name in s.epochs}
    cfg["protocols"] = {**cfg["protocols"], name: {**table, **cfg["protocols"].get(name, {})}}
    return cfg


def epochs(cfg: dict, key: str) -> int:
    table = cfg["protocols"][cfg["protocol"]]
    if key not in table:
        raise PqdError(f"protocol {cfg['protocol']!r} gives no epochs for stage {key!r}; add '{key}: N' to it")
    return int(table[key])


# Dataset settings applied when a cache is loaded, not when images are decoded.
LOAD_TIME_KEYS = ("augment", "normalize", "train_subset")


def dataset_params(config: dict, name: str, image_size: int) -> DatasetParams:
    """What decoding dataset ``name`` at ``image_size`` pixels depends on: its entry minus
    normalisation and augmentation (applied at load time), so editing those never re-decodes images."""
    if name not in config["datasets"]:
        raise PqdError(f"unknown dataset {name!r}; define it under 'datasets' in the config")
    spec = {k: v for k, v in config["datasets"][name].items() if k not in LOAD_TIME_KEYS}
    return DatasetParams(name=name, spec=spec, root=config["data_root"], image_size=image_size)


def data_settings(cfg: dict, augment: bool = True) -> DataSettings:
    ds = cfg["datasets"][cfg["dataset"]]
    return DataSettings(
        normalize=ds.get("normalize"),
        augment=ds.get("augment", {}) if augment else {},
        train_subset=ds.get("train_subset") if augment else None,
    )


def settings(cfg: dict, spec: StageSpec) -> dict:
    section: Any = cfg
    for key in spec.config_path:
        section = section.get(key, {})
    return section


def stage_params(cfg: dict, exp: str, chain: str) -> StageParams:
    """Settings of the job that produces the model after ``chain`` ('' = dense).

    Fails here, at DAG-build time, when the backbone cannot take the stage, so that no
    earlier stage trains for a pipeline that cannot finish."""
    spec = stage_spec(parse_pipeline(chain) if chain else "")
    if spec.check is not None:
        spec.check(settings(cfg, spec))
    return StageParams(
        stage=spec.key,
        label=f"{chain}:{spec.name}" if chain else DENSE,
        experiment=cfg.get("experiment", exp),
        backbone=cfg["backbone_spec"],
        dataset=cfg["dataset"],
        width=cfg["width"],
        seed=cfg["seed"],
        device=cfg["device"],
        threads=cfg["threads"]["train"],
        epochs=epochs(cfg, spec.key),
        settings=settings(cfg, spec),
        train=TrainSettings(**cfg["train"]),
        data=data_settings(cfg),
        # only fake-quantized models depend on the QAT settings
        quant=cfg["quant"] if is_quantized(chain) else None,
    )


def control_params(cfg: dict, exp: str, of: str) -> StageParams:
    """The job of ``ctl-<of>``, the equal-budget control of pipeline ``of``: stage ``f`` from the
    dense model, one cosine segment per letter of ``of`` with that stage's epochs and learning
    rate (the schedule the pipeline's own stages run), plain cross-entropy throughout."""
    base = stage_params(cfg, exp, "f")
    segments = [{"letter": c, "epochs": epochs(cfg, c), "lr": settings(cfg, STAGES.get(c))["lr"]} for c in of]
    return dataclasses.replace(
        base,
        label=f"{CONTROL_PREFIX}{of}:finetune",
        epochs=sum(s["epochs"] for s in segments),
        settings={**base.settings, "segments": segments},
    )


def control_name(cfg: dict, of: str) -> str:
    """The control serving pipeline ``of``: ``ctl-<P>`` for the alphabetically first pipeline P, made
    of the stage letters the config's pipelines use, whose stages have the same epochs and learning
    rates in the same order as ``of``'s. A control depends on that budget alone (it trains stage
    ``f`` whatever the letters), so the six orders of p, q, d at one epoch each share one control,
    and so do the singles p, q and d, instead of training identical models under different names."""
    from itertools import permutations

    def budget(letters: str) -> list:
        return [(epochs(cfg, c), settings(cfg, STAGES.get(c))["lr"]) for c in letters]

    used = {
        c for name in cfg.get("pipelines", []) if not name.startswith(CONTROL_PREFIX) and name != DENSE for c in name
    } | set(of)
    target = budget(of)
    for cand in sorted("".join(p) for p in permutations(sorted(used), len(of))):
        try:
            parse_pipeline(cand)
            if control_of(CONTROL_PREFIX + cand) is None or budget(cand) != target:
                continue
        except PqdError:
            continue
        return CONTROL_PREFIX + cand
    return CONTROL_PREFIX + of


def teacher_pipeline(cfg: dict, chain: str) -> Optional[str]:
    """The pipeline whose final model teaches the last stage of ``chain`` (``dense``, a prefix of
    ``chain``, or a ``ctl-`` control), None for a stage without a teacher; fails at DAG-build time
    on a choice that does not fit the pipeline."""
    spec = STAGES.get(chain[-1])
    if spec.teacher != TEACHER_SETTING:
        fixed = teacher_chain(chain)
        return None if fixed is None else (fixed or DENSE)
    choice = settings(cfg, spec)["teacher"]
    if choice == "dense":
        return DENSE
    if choice == "control":
        control_of(CONTROL_PREFIX + chain)  # validates: no control for a pipeline that starts from scratch
        return control_name(cfg, chain)
    if choice == "input":
        return chain[:-1] or DENSE
    prefix = choice.split(":", 1)[1]
    if not chain[:-1].startswith(prefix):
        raise PqdError(
            f"stages.{spec.letter}.teacher {choice!r}: {prefix!r} is not a prefix of {chain[:-1]!r}, the "
            f"pipeline before {spec.letter!r} in {chain!r}; use dense, control, input or after:<a prefix>"
        )
    return prefix


# Channel ratios of a latency curve: 0 (the unpruned model, the reference of every other point)
# to 0.8 of the channels removed; stage s interpolates between them.
CURVE_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def needs_curve(cfg: dict, chain: str) -> bool:
    """True when the last stage of ``chain`` prunes to a latency target (it then reads a curve)."""
    spec = stage_spec(chain)
    return bool(chain) and spec.latency_curve and latency_target(settings(cfg, spec)) is not None


def latency_reference(chain: str) -> Optional[str]:
    """The chain of the model that entered ``chain``'s first structure-removing stage
    (:attr:`pqd.pipeline.StageSpec.reference`: ``s``, ``b``), None when ``chain`` has none. Its
    ``latency`` job times that unpruned model beside the deployed one, in the same form, so every
    such pipeline reports the latency pruning kept, whatever its budget counted (what a MACs or a
    blocks target buys in time)."""
    for i, c in enumerate(chain):
        if STAGES.get(c).reference:
            return chain[:i]
    return None


def curve_params(cfg: dict, chain: str) -> CurveParams:
    """The latency curve the last stage of ``chain`` reads: its pruning settings, the configured
    runtime and timing, and the form its latency target is for."""
    s = settings(cfg, stage_spec(chain))
    return CurveParams(
        # a curve is batch-1 latency only: a throughput setting must not rerun it (and the s it feeds)
        measure=MeasureSettings(**{**cfg["measure"], "throughput_rounds": 0}),
        form=s["latency_form"],
        allocation=s["allocation"],
        round_to=s["round_to"],
        ratios=list(CURVE_RATIOS),
    )


def eval_params(cfg: dict) -> EvalParams:
    """Evaluation settings (every backbone's deployed form runs in every runtime)."""
    return EvalParams(data=data_settings(cfg, augment=False), runtime=cfg["measure"]["runtime"])


def measure_params(cfg: dict) -> MeasureSettings:
    return MeasureSettings(**cfg["measure"])
