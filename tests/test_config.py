from pathlib import Path

import pytest
import yaml

from pqd import config as pc
from pqd.errors import PqdError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = str(ROOT / "config/schema/config.schema.yaml")


def base():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def resolved(protocol: str = "quick", **top) -> dict:
    return pc.experiment(pc.validate({**base(), "protocol": protocol, **top}, SCHEMA), "resnet20_digits", SCHEMA)


def test_shipped_config_is_valid_and_defaults_are_filled():
    from pqd.pipeline import STAGES

    cfg = pc.validate(base(), SCHEMA)
    assert cfg["measure"]["runs"] >= 200
    paper = resolved("paper")["protocols"]["paper"]
    assert {k: paper[k] for k in "pqd"} == {"p": 20, "q": 40, "d": 40}  # the paper's split
    # every registered stage has its epochs in both built-in protocols, from its StageSpec alone
    assert set(resolved()["protocols"]["quick"]) == set(paper) == {"dense", *STAGES} == {"dense", *cfg["stages"]}
    # a config lists only what differs from the stage defaults
    assert resolved(protocols={"quick": {"p": 3}})["protocols"]["quick"] == {**resolved()["protocols"]["quick"], "p": 3}


@pytest.mark.parametrize("example", sorted((ROOT / "config/examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate_with_every_stage_of_every_pipeline(example):
    """The example configs behind BENCHMARKS.md are run by hand on data CI lacks: a misspelt key or a
    contradictory stage setting in one must fail here, not an hour into a user's run. Merged over
    config/config.yaml as Snakemake's --configfile merges them, then checked as the DAG checks them."""
    cfg = pc.validate(pc.deep_merge(base(), yaml.safe_load(example.read_text())), SCHEMA)
    for exp in cfg["experiments"]:
        e = pc.experiment(cfg, exp, SCHEMA)
        for pipeline in cfg["pipelines"]:
            for n in range(len(pipeline) if pipeline != "dense" else 0):
                assert pc.stage_params(e, exp, pipeline[: n + 1]).epochs >= 1


def test_stage_settings_schema_is_generated_from_the_specs_and_closed():
    """The schema file holds no stage block: it is generated from each StageSpec's settings, with
    their defaults, and rejects a misspelt stage letter or setting (they used to pass silently)."""
    from pqd.pipeline import STAGES

    on_disk = yaml.safe_load(open(SCHEMA))
    assert "properties" not in on_disk["properties"]["stages"]
    schema = pc.build_schema(SCHEMA)
    assert set(schema["properties"]["stages"]["properties"]) == set(STAGES)
    assert schema["properties"]["stages"]["additionalProperties"] is False
    cfg = pc.validate({"experiments": ["resnet20_digits"]}, SCHEMA)
    for letter in STAGES:
        assert cfg["stages"][letter] == {k: v["default"] for k, v in STAGES.get(letter).settings.items()}
    for bad, where in (
        ({"stages": {"P": {"sparsity": 0.9}}}, "'stages'"),
        ({"stages": {"x": {}}}, "'stages'"),
        ({"stages": {"p": {"sparsty": 0.9}}}, "'stages.p'"),
        ({"protocols": {"quick": {"z": 3}}}, "'protocols.quick'"),
        ({"dense": {"epochs": 3}}, "'dense'"),
    ):
        with pytest.raises(PqdError, match=f"invalid config at {where}: Additional properties"):
            pc.validate({**base(), **bad}, SCHEMA)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("stages", "p", "sparsity"), 1.5, r"stages\.p\.sparsity"),
        (("device",), "tpu", r"'device'"),
        (("measure", "runs"), 10, r"measure\.runs"),
        (
            ("measure", "throughput_rounds"),
            2,
            r"measure\.throughput_rounds.*0: not measured; else at least 4",
        ),  # 0 (off) or >= 4
        (("stages", "d", "temprature"), 2.0, r"Additional properties"),
    ],
)
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
    cfg = resolved()
    p = pc.stage_params(cfg, "resnet20_digits", "p")
    assert p.settings == cfg["stages"]["p"] and p.epochs == cfg["protocols"]["quick"]["p"] == 1
    assert p.quant is None  # FP32-only chains do not rerun when QAT settings change
    assert pc.stage_params(cfg, "resnet20_digits", "pq").quant == cfg["quant"]
    assert pc.stage_params(cfg, "resnet20_digits", "qd").settings == cfg["stages"]["d"]
    cfg = resolved("paper")
    assert [pc.stage_params(cfg, "e", c).epochs for c in ("p", "pq", "pqd", "d", "dq", "dqp")] == [
        20,
        40,
        40,
        40,
        40,
        20,
    ]


def test_non_finite_numbers_are_found_with_their_path_even_under_dotted_keys():
    from pqd.config import _non_finite, command_line_values

    assert _non_finite({"backbones": {"my.net": {"kwargs": {"x": float("nan")}}}}) == (
        "backbones.my.net.kwargs.x",
        pytest.approx(float("nan"), nan_ok=True),
    )
    assert _non_finite({"stages": {"p": {"sparsity": 0.5}}, "seeds": [0, 1]}) is None
    # nested --config values arrive as strings (Snakemake's BaseLoader); re-read as YAML, idempotently
    once = command_line_values({"seeds": ["0", "1"], "stages": {"p": {"sparsity": "0.9"}}, "width": 0.5})
    assert once == {"seeds": [0, 1], "stages": {"p": {"sparsity": 0.9}}} and command_line_values(once) == once
    assert command_line_values({"controls": "false", "results": "on", "width": 0.5}) == {"controls": False}


def test_the_generated_schema_file_is_removed_when_the_process_exits(tmp_path):
    """Every Snakemake process validates the config through a generated schema file: it must not be
    left behind in the temp directory (hundreds piled up in a day of jobs)."""
    import os
    import subprocess
    import sys

    code = f"from pqd import config as pc; print(pc._schema_file({SCHEMA!r}))"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    written = Path(out.stdout.strip())
    assert written.parent == tmp_path and written.name.startswith("pqd-schema-")
    assert not written.exists() and list(tmp_path.iterdir()) == []


def test_settings_without_effect_in_the_chosen_mode_are_named():
    """Silence was the defect: nesterov under AdamW, an s latency_form under a MACs target, KD's
    temperature with distill off; the shipped config (which lists every setting) has none."""
    assert pc.inert_settings(base()) == []
    cfg = {
        "train": {"optimizer": "adamw", "nesterov": True},
        "stages": {"s": {"latency_form": "fp32", "taylor_batches": 4, "distill": False, "alpha": 0.5}},
        "overrides": {"vit_c10": {"stages": {"b": {"distill": False, "temperature": 2.0}}}},
    }
    assert pc.inert_settings(cfg) == [
        "train.nesterov has no effect (it applies to SGD only)",
        "stages.s.latency_form has no effect (target is macs)",
        "stages.s.taylor_batches has no effect (importance is magnitude)",
        "stages.s.alpha has no effect (distill is false)",
        "overrides.vit_c10.stages.b.temperature has no effect (distill is false)",
    ]
    cfg["stages"]["s"] |= {"target": "latency", "importance": "taylor", "distill": True}
    cfg["train"]["optimizer"] = "sgd"
    assert pc.inert_settings(cfg) == ["overrides.vit_c10.stages.b.temperature has no effect (distill is false)"]
