"""Shared test helpers: typed job params cut from the shipped config, as the workflow does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from pqd import config as pc
from pqd.params import StageParams

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = str(ROOT / "config/schema/config.schema.yaml")


def stage_params(
    chain: str,
    backbone: str = "resnet20",
    width: float = 0.5,
    epochs: int | None = None,
    batch_size: int = 64,
    **settings,
) -> StageParams:
    """The params the workflow would give the job producing the model after ``chain`` ('' = dense)
    in experiment ``{backbone}_digits``, with stage settings and epochs overridden."""
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["width"] = width
    cfg["train"]["batch_size"] = batch_size
    exp = f"{backbone}_digits"
    p = pc.stage_params(pc.experiment(cfg, exp, SCHEMA), exp, chain)
    return dataclasses.replace(p, settings={**p.settings, **settings}, epochs=p.epochs if epochs is None else epochs)
