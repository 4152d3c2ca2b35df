"""The stages beyond P, Q and D: structured pruning (s), low-rank (l), PQK (k), EPSD (e),
each tested for its real effect, end to end through run_stage (checkpoint in, checkpoint out)."""

from pathlib import Path

import pytest
import torch
from helpers import stage_params as params

from pqd.macs import macs
from pqd.measure import deploy, deployed_macs
from pqd.model_io import load_model
from pqd.runner import run_stage


def dense(tmp: Path, digits_cache: str, backbone: str = "resnet20", width: float = 0.5, epochs: int = 2) -> str:
    out = str(tmp / f"{backbone}_dense.pt")
    run_stage(params("", backbone, width, epochs=epochs), digits_cache, out)
    return out


@pytest.fixture(scope="module")
def resnet_dense(resnet20_dense):
    return resnet20_dense


@pytest.fixture(scope="module")
def vgg_dense(tmp_path_factory, digits_cache):
    return dense(tmp_path_factory.mktemp("ext"), digits_cache, "vgg16", 0.25)


def test_structured_pruning_removes_the_configured_macs_and_reloads_without_the_pruner(
    vgg_dense, digits_cache, tmp_path
):
    before, _ = load_model(vgg_dense)
    out = str(tmp_path / "slim.pt")
    rec = run_stage(params("s", "vgg16", 0.25, macs_keep=0.5, steps=2), digits_cache, out, vgg_dense)
    s = rec["structured"]
    assert abs(s["macs_kept"] - 0.5) < 0.05 and s["macs_after"] < s["macs_before"]
    assert s["params_after"] < 0.6 * s["params_before"] and s["rounds"] == 2
    after, meta = load_model(out)  # rebuilt from meta["arch"], weights_only load, no torch_pruning
    assert meta["arch"]["modules"] and macs(after, 32) == s["macs_after"]
    assert sum(p.numel() for p in after.parameters()) == s["params_after"]
    x = torch.randn(4, 3, 32, 32)
    assert after.eval()(x).shape == (4, 10) and before.eval()(x).shape == (4, 10)
    # pruning half the MACs then fine-tuning with KD from the unpruned model keeps the accuracy
    assert rec["accuracy"] >= load_model(vgg_dense)[1]["accuracy"] - 5
    # ... and it combines with q: sq trains fake-quantized, deploys to INT8 with the thin layers
    sq = str(tmp_path / "sq.pt")
    run_stage(params("sq", "vgg16", 0.25), digits_cache, sq, out)
    deploy(sq, str(tmp_path / "deployed.pt"))
    int8, dmeta = load_model(str(tmp_path / "deployed.pt"))
    assert dmeta["form"] == "int8" and deployed_macs(str(tmp_path / "deployed.pt")) == s["macs_after"]
    assert int8(x).shape == (4, 10)


def test_structured_pruning_with_taylor_importance_differs_from_magnitude(vgg_dense, digits_cache, tmp_path):
    for name, imp in (("m", "magnitude"), ("t", "taylor")):
        run_stage(
            params("s", "vgg16", 0.25, importance=imp, steps=1, distill=False),
            digits_cache,
            str(tmp_path / f"{name}.pt"),
            vgg_dense,
        )
    m, _ = load_model(str(tmp_path / "m.pt"))
    t, _ = load_model(str(tmp_path / "t.pt"))
    assert macs(m, 32) == macs(t, 32)  # same ratio ...
    diffs = [not torch.equal(a, b) for a, b in zip(m.state_dict().values(), t.state_dict().values())]
    assert any(diffs)  # ... different channels kept


def test_option_a_shortcut_is_a_channel_map_that_thins_like_a_1x1_convolution():
    """Dropping inputs and outputs of the zero-padding shortcut gives exactly the kept outputs of
    the full shortcut, with zeros where the feeding input channel was dropped; the unthinned map
    is the plain pad, and a checkpoint without the map (older, or foreign) loads the default."""
    from pqd.models.resnet_cifar import PadShortcut

    full = PadShortcut(8, 16, 2)
    x = torch.randn(2, 8, 8, 8)
    assert torch.equal(full(x), torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4)))
    keep_in, keep_out = [0, 2, 3, 5, 6], [1, 4, 5, 7, 9, 10, 13, 15]
    thin = PadShortcut(8, 16, 2)
    thin.keep_inputs(keep_in)
    thin.keep_outputs(keep_out)
    assert (thin.in_channels, thin.out_channels) == (5, 8)
    want = full(x)[:, keep_out].clone()
    for j, out in enumerate(keep_out):
        if out - 4 not in keep_in:  # a padded channel, or fed by a dropped input
            want[:, j] = 0
    assert torch.equal(thin(x[:, keep_in]), want)
    old = PadShortcut(8, 16, 2)
    old.load_state_dict({})  # no 'source' key
    assert torch.equal(old.source, full.source)


def test_structured_pruning_of_option_a_resnet20_combines_with_q_and_d(resnet_dense, digits_cache, tmp_path):
    """``s`` on the He et al. CIFAR ResNet: channels go in every stage (the zero-padded shortcuts
    follow their blocks), the result reloads with weights_only=True without Torch-Pruning, and
    trains on through q (deployed INT8, exported to ONNX and run by OpenVINO) and d."""
    from pqd.runtimes import export_onnx, make_runner

    out = str(tmp_path / "slim.pt")
    rec = run_stage(params("s", "resnet20", 0.5, macs_keep=0.5, steps=1), digits_cache, out, resnet_dense)
    s = rec["structured"]
    assert abs(s["macs_kept"] - 0.5) < 0.05 and s["params_after"] < 0.7 * s["params_before"]
    slim, meta = load_model(out)
    widths = [m.out_channels for m in slim.modules() if isinstance(m, torch.nn.Conv2d)]
    dense_widths = [m.out_channels for m in load_model(resnet_dense)[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w <= d for w, d in zip(widths, dense_widths)) and widths[-1] < dense_widths[-1]
    assert rec["accuracy"] > 50.0  # digits: far above the 10% of chance after the fine-tuning
    sq, sqd = str(tmp_path / "sq.pt"), str(tmp_path / "sqd.pt")
    run_stage(params("sq", "resnet20", 0.5), digits_cache, sq, out)
    run_stage(params("sqd", "resnet20", 0.5), digits_cache, sqd, sq, teacher=resnet_dense)
    deployed = str(tmp_path / "deployed.pt")
    deploy(sqd, deployed)
    int8, dmeta = load_model(deployed)
    assert dmeta["form"] == "int8" and deployed_macs(deployed) == s["macs_after"]
    x = torch.randn(4, 3, 32, 32)
    export_onnx(deployed, str(tmp_path / "deployed.onnx"))
    ov = make_runner("openvino", deployed, str(tmp_path / "deployed.onnx"), 1)
    agree = (ov(x).argmax(1) == int8(x).argmax(1)).float().mean().item()
    assert agree >= 0.75, agree


def test_vit_heads_and_mlp_width_are_pruned_and_the_model_reloads_and_quantizes(digits_cache, tmp_path):
    from pqd.channels import prune_once
    from pqd.models import build_model

    vit = build_model("vit", 10, 0.5)
    slim = prune_once(vit, 0.5, 32)
    heads = [m.num_heads for m in slim.modules() if hasattr(m, "qkv")]
    assert heads and all(h < 4 for h in heads)
    assert all(b.mlp.fc1.out_features < vit.blocks[0].mlp.fc1.out_features for b in slim.blocks)
    assert macs(slim, 32) < 0.7 * macs(vit, 32)
    vd = dense(tmp_path, digits_cache, "vit", 0.5, epochs=1)
    out = str(tmp_path / "vs.pt")
    rec = run_stage(params("s", "vit", 0.5, epochs=1, macs_keep=0.6, steps=1), digits_cache, out, vd)
    assert rec["structured"]["macs_kept"] < 0.7 and set(rec["structured"]["heads"].values()) < {1, 2, 3, 4}
    model, meta = load_model(out)
    assert [m.num_heads for m in model.modules() if hasattr(m, "qkv")] == list(rec["structured"]["heads"].values())
    run_stage(params("sq", "vit", 0.5, epochs=1), digits_cache, str(tmp_path / "vsq.pt"), out)
    deploy(str(tmp_path / "vsq.pt"), str(tmp_path / "vd.pt"))
    int8, dmeta = load_model(str(tmp_path / "vd.pt"))
    assert dmeta["form"] == "int8" and int8(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lowrank_replaces_layers_by_factor_pairs_within_the_kept_energy(resnet_dense):
    from pqd.factorize import LowRank, factorize_model

    model, _ = load_model(resnet_dense)
    originals = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    report = factorize_model(model, energy=0.8)
    assert report
    for name, r in report.items():
        pair = model.get_submodule(name)
        assert isinstance(pair, LowRank) and pair[0].out_channels == r["rank"] == pair[1].in_channels
        w = originals[name]
        product = (pair[1].weight.flatten(1) @ pair[0].weight.flatten(1)).reshape(w.shape)
        residual = ((w - product) ** 2).sum() / (w**2).sum()
        assert residual <= 1 - 0.8 + 1e-4  # the dropped energy is exactly what is left out
        assert abs(residual.item() - (1 - r["kept_energy"])) < 1e-4
        assert r["params_after"] < r["params_before"]


def test_lowrank_stage_shrinks_the_model_and_reloads_and_quantizes(resnet_dense, digits_cache, tmp_path):
    dense_model, _ = load_model(resnet_dense)
    out = str(tmp_path / "l.pt")
    rec = run_stage(params("l", energy=0.8), digits_cache, out, resnet_dense)
    model, meta = load_model(out)
    assert meta["arch"]["lowrank"] == sorted(rec["factorized"], key=meta["arch"]["lowrank"].index)
    assert macs(model, 32) < macs(dense_model, 32)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense_model.parameters())
    run_stage(params("lq"), digits_cache, str(tmp_path / "lq.pt"), out)
    deploy(str(tmp_path / "lq.pt"), str(tmp_path / "d.pt"))
    assert load_model(str(tmp_path / "d.pt"))[1]["form"] == "int8"


def test_pqk_teacher_shares_kept_weights_and_restores_pruned_ones(resnet_dense, digits_cache, tmp_path):
    from pqd.stages.pqk import SharedTeacher, layer_weights

    pruned = str(tmp_path / "p.pt")
    run_stage(params("p"), digits_cache, pruned, resnet_dense)
    student, _ = load_model(pruned)
    source, _ = load_model(resnet_dense)
    teacher = SharedTeacher(student, source, follow=True)
    frozen = SharedTeacher(student, source)
    s_w, t_w, d_w = layer_weights(student), layer_weights(teacher.model), layer_weights(source)
    restored = 0
    for n in s_w:
        kept = s_w[n] != 0
        assert torch.equal(t_w[n][kept], s_w[n][kept])  # shared: the student's own values
        assert torch.equal(t_w[n][~kept], d_w[n][~kept])  # restored: the pre-pruning values
        assert bool((t_w[n][~kept] != 0).all())
        restored += int((~kept).sum())
    assert restored > 0
    name = next(iter(s_w))
    before = s_w[name].detach().clone()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the student's shared weights move...
        s_w[name].mul_(2.0)
    teacher(x), frozen(x)
    kept = s_w[name] != 0
    assert torch.equal(t_w[name][kept], s_w[name][kept])  # ...a following teacher moves with them
    f_w = layer_weights(frozen.model)[name]
    assert torch.equal(f_w[kept], before[kept]) and not torch.equal(f_w[kept], s_w[name][kept])  # a frozen one does not
    # the stage itself: keeps the student's sparsity (and fake quantization after q)
    pq = str(tmp_path / "pq.pt")
    run_stage(params("pq"), digits_cache, pq, pruned)
    out = str(tmp_path / "pqk.pt")
    rec = run_stage(params("pqk"), digits_cache, out, pq, teacher=resnet_dense)
    assert rec["teacher"]["restored_weights"] == restored
    final, meta = load_model(out)
    assert meta["form"] == "qat"
    for n, w in layer_weights(final).items():
        if n in s_w:
            assert torch.equal(w.detach() == 0, s_w[n] == 0)


def test_epsd_prunes_at_init_keeps_sparsity_and_scores_differ_from_snip(digits_cache, digits, tmp_path):
    from pqd.models import build_model
    from pqd.runner import StageContext
    from pqd.stages.epsd import masks_for

    p = params("e", sparsity=0.6)
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 0.5)
    ctx = StageContext(p, digits, torch.device("cpu"))
    m_epsd, s_epsd = masks_for(model, ctx, "epsd")
    m_snip, s_snip = masks_for(model, ctx, "snip")
    assert s_epsd.keys() == s_snip.keys()
    assert abs(sum(v.sum() for v in s_epsd.values()).item() - 1) < 1e-4  # normalised
    assert any(not torch.allclose(s_epsd[n], s_snip[n]) for n in s_epsd)
    assert any(not torch.equal(m_epsd[n], m_snip[n]) for n in m_epsd)
    kept = sum(int(m.sum()) for m in m_epsd.values()) / sum(m.numel() for m in m_epsd.values())
    assert abs(kept - 0.4) < 1e-3
    out = str(tmp_path / "e.pt")
    rec = run_stage(params("e", epochs=2, sparsity=0.6), digits_cache, out)
    assert abs(rec["epsd"]["sparsity_at_init"] - 0.6) < 1e-3
    assert abs(rec["epsd"]["sparsity_at_end"] - 0.6) < 1e-3
    assert 0 < rec["epsd"]["mask_agreement_with_snip"] < 1
    final, meta = load_model(out)
    assert [h["stage"] for h in meta["history"]] == ["e"] and rec["accuracy"] > 20


def test_global_allocation_thins_layers_unevenly_and_round_to_keeps_multiples():
    """allocation: global ranks channels across layers, so kept fractions differ by layer at the
    same MACs; round_to: 8 leaves every pruned layer a multiple of 8 channels."""
    import statistics

    from pqd.channels import prune_once, ratio_for_macs
    from pqd.models import build_model

    torch.manual_seed(0)
    vgg = build_model("vgg16", 10, 0.5)
    for m in vgg.modules():  # uneven importance: later layers' weights scaled down
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data *= 1.0 / (1 + m.out_channels / 32)
    dense_w = [m.out_channels for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    fractions = {}
    for allocation in ("uniform", "global"):
        ratio = ratio_for_macs(vgg, 0.5, 32, allocation=allocation)
        slim = prune_once(vgg, ratio, 32, allocation)
        assert abs(macs(slim, 32) / macs(vgg, 32) - 0.5) < 0.05
        widths = [m.out_channels for m in slim.modules() if isinstance(m, torch.nn.Conv2d)]
        fractions[allocation] = [w / d for w, d in zip(widths, dense_w)]
    assert statistics.pstdev(fractions["uniform"]) < 0.05 < statistics.pstdev(fractions["global"])
    rounded = prune_once(vgg, 0.3, 32, round_to=8)
    assert all(m.out_channels % 8 == 0 for m in rounded.modules() if isinstance(m, torch.nn.Conv2d))
