import pytest

from pqd.errors import PqdError
from pqd.catalog import BACKBONES
from pqd.pipeline import (STAGES, all_pipelines, artifact_name, model_path, parse_experiment,
                          parse_pipeline)


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


@pytest.mark.parametrize("bad, message", [
    ("pqx", "unknown stage letter 'x'"),
    ("ppq", "repeats stage 'p'"),
    ("", "empty pipeline"),
])
def test_bad_pipelines_fail_with_one_clear_line(bad, message):
    with pytest.raises(PqdError, match=message) as e:
        parse_pipeline(bad)
    assert "\n" not in str(e.value)


def test_experiment_names_split_on_known_backbones_even_with_underscores():
    assert parse_experiment("wrn28_10_c100", ["c10", "c100"]) == ("wrn28_10", "c100")
    assert parse_experiment("vgg16_c10", ["c10"]) == ("vgg16", "c10")
    with pytest.raises(PqdError, match="unknown backbone"):
        parse_experiment("alexnet_c10", ["c10"])
    with pytest.raises(PqdError, match="unknown dataset 'svhn'"):
        parse_experiment("vgg16_svhn", ["c10"])


def test_registries_list_known_names_on_error():
    with pytest.raises(PqdError, match="choose one of: .*resnet20"):
        BACKBONES.get("resnet1000")
    assert {"p", "q", "d"} <= set(STAGES)


@pytest.mark.parametrize("pipeline, message", [
    ("qs", r"stage 's' \(structured\) reshapes FP32 layers, so it must come before.*'sq'"),
    ("pql", r"stage 'l' \(lowrank\).*must come before the quantizing stage"),
    ("pe", r"stage 'e' \(epsd\) trains its model from scratch, so it must come first.*'ep'"),
    ("qk", r"stage 'k' \(pqk\) needs stage 'p' \(prune\) earlier"),
])
def test_stage_order_rules_are_one_clear_error(pipeline, message):
    with pytest.raises(PqdError, match=message):
        parse_pipeline(pipeline)


def test_second_inputs_come_from_the_registry():
    from pqd.pipeline import teacher_chain

    assert teacher_chain("pqd") == "" and teacher_chain("qd") == ""  # d: the dense model
    assert teacher_chain("pqk") == "" and teacher_chain("qpk") == "q"  # k: the model that entered p
    assert teacher_chain("pq") is None
    assert model_path("r", "x", "e") == "r/x/e/epsd.pt" and model_path("r", "x", "sq") == "r/x/sq/qat_int8.pt"
