from pathlib import Path

import pytest
import yaml

from pqd import config as pc
from pqd.errors import PqdError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = str(ROOT / "config/schema/config.schema.yaml")


def base():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_shipped_config_is_valid_and_defaults_are_filled():
    cfg = pc.validate(base(), SCHEMA)
    assert cfg["measure"]["runs"] >= 200
    assert {k: cfg["protocols"]["paper"][k] for k in "pqd"} == {"p": 20, "q": 40, "d": 40}  # the paper's split
    assert set(cfg["protocols"]["quick"]) == set(cfg["protocols"]["paper"]) == {"dense", *cfg["stages"]}


@pytest.mark.parametrize("path, value, message", [
    (("stages", "p", "sparsity"), 1.5, r"stages\.p\.sparsity"),
    (("device",), "tpu", r"'device'"),
    (("measure", "runs"), 10, r"measure\.runs"),
    (("stages", "d", "temprature"), 2.0, r"Additional properties"),
])
def test_bad_values_fail_with_one_line_naming_the_key(path, value, message):
    cfg = base()
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(PqdError, match=message) as e:
        pc.validate(cfg, SCHEMA)
    assert "\n" not in str(e.value)


def test_overrides_are_merged_and_validated_per_experiment():
    cfg = pc.validate(base(), SCHEMA)
    cfg["overrides"] = {"vgg16_c10": {"width": 0.25, "stages": {"p": {"sparsity": 0.9}}}}
    exp = pc.experiment(cfg, "vgg16_c10", SCHEMA)
    assert exp["width"] == 0.25 and exp["stages"]["p"]["sparsity"] == 0.9 and exp["stages"]["p"]["lr"] == 0.01
    assert (exp["backbone"], exp["dataset"]) == ("vgg16", "c10")
    cfg["overrides"] = {"vgg16_c10": {"stages": {"p": {"sparsity": -1}}}}
    with pytest.raises(PqdError, match=r"in overrides\.vgg16_c10: .*stages\.p\.sparsity"):
        pc.experiment(cfg, "vgg16_c10", SCHEMA)


def test_stage_params_hold_only_what_the_stage_depends_on():
    cfg = pc.experiment(pc.validate(base(), SCHEMA), "resnet20_digits", SCHEMA)
    p = pc.rule_params(cfg, "resnet20_digits", "p")
    assert p["stage"] == cfg["stages"]["p"] and p["epochs"] == cfg["protocols"]["quick"]["p"]
    assert "quant" not in p  # FP32-only chains do not rerun when QAT settings change
    assert pc.rule_params(cfg, "resnet20_digits", "pq")["quant"] == cfg["quant"]
    assert pc.rule_params(cfg, "resnet20_digits", "qd")["stage"] == cfg["stages"]["d"]
    cfg["protocol"] = "paper"
    assert [pc.rule_params(cfg, "e", c)["epochs"] for c in ("p", "pq", "pqd", "d", "dq", "dqp")] == \
        [20, 40, 40, 40, 40, 20]
