import pytest

from pqd.catalog import BACKBONES
from pqd.errors import PqdError
from pqd.pipeline import STAGES, all_pipelines, artifact_name, model_path, parse_experiment, parse_pipeline


def test_every_order_pair_and_single_is_a_valid_pipeline():
    pipes = all_pipelines()
    assert len(pipes) == 16 and pipes[0] == "dense"
    for order in ("pqd", "pdq", "qpd", "qdp", "dpq", "dqp", "pq", "qd", "p", "q", "d"):
        assert order in pipes
        assert parse_pipeline(order) == order


def test_files_are_named_for_what_they_hold_and_prefixes_are_shared():
    assert model_path("results", "e", "") == "results/e/dense/dense.pt"
    assert model_path("results", "e", "p") == "results/e/p/pruned.pt"
    assert model_path("results", "e", "pq") == "results/e/pq/qat_int8.pt"
    assert model_path("results", "e", "pqd") == "results/e/pqd/distilled_int8.pt"
    assert model_path("results", "e", "d") == "results/e/d/distilled.pt"
    assert artifact_name("qp") == "pruned_int8"
    # pqd and pdq depend on the same pruned model file
    assert model_path("r", "e", "pqd"[:1]) == model_path("r", "e", "pdq"[:1])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("pqx", "unknown stage letter 'x'"),
        ("ppq", "repeats stage 'p'"),
        ("", "empty pipeline"),
    ],
)
def test_bad_pipelines_fail_with_one_clear_line(bad, message):
    with pytest.raises(PqdError, match=message) as e:
        parse_pipeline(bad)
    assert "\n" not in str(e.value)


def test_experiment_names_split_on_known_backbones_even_with_underscores():
    assert parse_experiment("wrn28_10_c100", ["c10", "c100"], BACKBONES.names()) == ("wrn28_10", "c100")
    assert parse_experiment("vgg16_c10", ["c10"], BACKBONES.names()) == ("vgg16", "c10")
    with pytest.raises(PqdError, match="unknown backbone"):
        parse_experiment("alexnet_c10", ["c10"], BACKBONES.names())
    with pytest.raises(PqdError, match="unknown dataset 'svhn'"):
        parse_experiment("vgg16_svhn", ["c10"], BACKBONES.names())


def test_registries_list_known_names_on_error():
    with pytest.raises(PqdError, match="choose one of: .*resnet20"):
        BACKBONES.get("resnet1000")
    assert {"p", "q", "d"} <= set(STAGES)


@pytest.mark.parametrize(
    "pipeline, message",
    [
        ("qs", r"stage 's' \(structured\) reshapes FP32 layers, so it must come before.*'sq'"),
        ("pql", r"stage 'l' \(lowrank\).*must come before the quantizing stage"),
        ("pe", r"stage 'e' \(epsd\) trains its model from scratch, so it must come first.*'ep'"),
        ("qk", r"stage 'k' \(pqk\) needs stage 'p' \(prune\) earlier"),
    ],
)
def test_stage_order_rules_are_one_clear_error(pipeline, message):
    with pytest.raises(PqdError, match=message):
        parse_pipeline(pipeline)


def test_second_inputs_come_from_the_registry_or_the_teacher_setting():
    from pqd.config import control_name, teacher_pipeline
    from pqd.errors import PqdError

    def cfg(teacher, p_epochs=1):
        return {
            "protocol": "quick",
            "protocols": {"quick": {"p": p_epochs, "q": 1, "d": 1}},
            "stages": {"p": {"lr": 0.01}, "q": {"lr": 0.01}, "d": {"lr": 0.01, "teacher": teacher}},
        }

    assert teacher_pipeline(cfg("dense"), "pqd") == "dense" and teacher_pipeline(cfg("dense"), "d") == "dense"
    assert teacher_pipeline(cfg("input"), "pqd") == "pq" and teacher_pipeline(cfg("input"), "d") == "dense"
    assert teacher_pipeline(cfg("after:p"), "pqd") == "p"
    with pytest.raises(PqdError, match="'p' is not a prefix of 'q'"):
        teacher_pipeline(cfg("after:p"), "qd")
    # the control of the pipeline up to d: one shared by all orders with the same epochs and lrs
    assert teacher_pipeline(cfg("control"), "pqd") == "ctl-dpq"
    assert teacher_pipeline(cfg("control", p_epochs=2), "pqd") == "ctl-pdq"  # p (2 epochs) stays first
    # a control depends on the budget alone: the singles share one, named by the first such letter
    assert teacher_pipeline(cfg("control"), "d") == "ctl-d"
    with_pipelines = {**cfg("control"), "pipelines": ["dense", "p", "q", "d", "pd", "qd"]}
    assert control_name(with_pipelines, "p") == control_name(with_pipelines, "q") == "ctl-d"
    assert control_name(with_pipelines, "qd") == control_name(with_pipelines, "pd") == "ctl-dp"
    assert control_name({**cfg("control", p_epochs=2), "pipelines": ["p", "q"]}, "p") == "ctl-p"  # 2 epochs: its own
    assert teacher_pipeline(cfg("dense"), "pqk") == "dense" and teacher_pipeline(cfg("dense"), "qpk") == "q"
    assert teacher_pipeline(cfg("dense"), "pq") is None
    assert model_path("r", "x", "e") == "r/x/e/epsd.pt" and model_path("r", "x", "sq") == "r/x/sq/qat_int8.pt"


@pytest.mark.parametrize("name", ["resnet20", "vit"])
def test_built_in_backbones_pass_every_stage_probe(name):
    """The probe (pqd/probe.py) runs each stage's own mechanics on a fresh build: the option-A
    ResNet (channel maps) and the ViT (fake-quant ONNX export, heads) take every stage, with
    the runtime's ONNX export included; the refusal line names stage, backbone, place and fix."""
    from pqd import capability
    from pqd.catalog import BACKBONES
    from pqd.probe import probe

    spec = BACKBONES.get(name)
    found = probe(spec, 0.25, "openvino")
    assert {k: v["ok"] for k, v in found.items()} == dict.fromkeys(found, True), found
    assert capability.refusal(spec, [STAGES.get(c) for c in "pqdslke"], found) is None
    found["quantize"] = {
        "ok": False,
        "where": "Block.forward (net.py:3)",
        "what": "data-dependent control flow",
        "fix": "drop 'q'",
    }
    assert capability.refusal(spec, [STAGES.get(c) for c in "pq"], found) == (
        f"stage 'q' cannot run on backbone '{name}': Block.forward (net.py:3) (data-dependent control flow); drop 'q'"
    )
