"""Config validation and per-experiment resolution, torch-free (imported by the Snakefile).

The Snakefile validates the loaded config once; :func:`experiment` then deep-merges
``overrides[exp]`` over it and validates the result again, so a typo inside an
override fails as clearly as one at the top level. :func:`rule_params` cuts out
exactly the settings a job depends on: Snakemake tracks them, so editing one stage's
settings reruns that stage and its descendants and nothing else.
"""

from __future__ import annotations

import copy
from typing import Any

from pqd.errors import PqdError
from pqd.pipeline import STAGES, is_quantized, parse_experiment, parse_pipeline


def validate(config: dict, schema: str) -> dict:
    """Validate (and fill defaults into) ``config``; one-line :class:`PqdError` on failure."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as sm_validate

    try:
        sm_validate(config, schema)
    except WorkflowError as e:
        # snakemake formats the jsonschema error into its message; the original is the context
        err = e.__context__ if isinstance(e.__context__, jsonschema.ValidationError) else None
        if err is None:
            raise PqdError(f"invalid config: {str(e).splitlines()[-1]}") from None
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise PqdError(f"invalid config at '{where}': {err.message}; fix config/config.yaml or the --config value"
                       ) from None
    return config


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def experiment(config: dict, exp: str, schema: str) -> dict:
    """The config of experiment ``exp`` (overrides applied, validated), plus its
    backbone and dataset names."""
    cfg = deep_merge({k: v for k, v in config.items() if k != "overrides"}, config.get("overrides", {}).get(exp, {}))
    try:
        validate(cfg, schema)
    except PqdError as e:
        raise PqdError(f"in overrides.{exp}: {e}") from None
    cfg["backbone"], cfg["dataset"] = parse_experiment(exp, cfg.get("datasets", {}))
    if cfg["protocol"] not in cfg.get("protocols", {}):
        raise PqdError(f"unknown protocol {cfg['protocol']!r}; define it under 'protocols' "
                       f"(known: {', '.join(cfg.get('protocols', {}))})")
    return cfg


def epochs(cfg: dict, key: str) -> int:
    table = cfg["protocols"][cfg["protocol"]]
    if key not in table:
        raise PqdError(f"protocol {cfg['protocol']!r} gives no epochs for stage {key!r}; add '{key}: N' to it")
    return int(table[key])


# Dataset settings applied when a cache is loaded, not when images are decoded.
LOAD_TIME_KEYS = ("augment", "normalize", "train_subset")


def dataset_params(config: dict, name: str) -> dict:
    """What decoding dataset ``name`` depends on: its entry minus normalisation and
    augmentation (applied at load time), so editing those never re-decodes images."""
    if name not in config["datasets"]:
        raise PqdError(f"unknown dataset {name!r}; define it under 'datasets' in the config")
    spec = {k: v for k, v in config["datasets"][name].items() if k not in LOAD_TIME_KEYS}
    return {"name": name, "spec": spec, "root": config["data_root"]}


def _common(cfg: dict, exp: str) -> dict[str, Any]:
    ds = cfg["datasets"][cfg["dataset"]]
    return {
        "experiment": exp, "backbone": cfg["backbone"], "dataset": cfg["dataset"], "width": cfg["width"],
        "seed": cfg["seed"], "device": cfg["device"], "train": cfg["train"],
        "data": {"normalize": ds.get("normalize"), "augment": ds.get("augment", {}),
                 "train_subset": ds.get("train_subset")},
    }


def rule_params(cfg: dict, exp: str, chain: str) -> dict:
    """Settings of the job that produces the model after ``chain`` ('' = dense)."""
    params = _common(cfg, exp)
    if not chain:
        return {**params, "label": "dense", "stage": cfg["dense"], "epochs": epochs(cfg, "dense")}
    letter = parse_pipeline(chain)[-1]
    if is_quantized(chain):  # only fake-quantized models depend on the QAT settings
        params["quant"] = cfg["quant"]
    section = cfg.get("stages", {}).get(letter)
    if section is None:
        raise PqdError(f"no settings for stage {letter!r} ({STAGES.get(letter).name}); add stages.{letter} to the config")
    return {**params, "label": f"{chain}:{STAGES.get(letter).name}", "stage": section, "epochs": epochs(cfg, letter)}


def eval_params(cfg: dict, exp: str) -> dict:
    ds = cfg["datasets"][cfg["dataset"]]
    return {"data": {"normalize": ds.get("normalize"), "augment": {}}, "runtime": cfg["measure"]["runtime"]}
