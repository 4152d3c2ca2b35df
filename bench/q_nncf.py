"""pqd's Q stage (torch.ao FX QAT) against NNCF's QAT on the same trained model, at equal training:
top-1 of each INT8 model in OpenVINO on every test image, and their OpenVINO INT8 latency timed
interleaved in one process (issue 20 item 6: which QAT path "at equal accuracy and latency").

    python bench/q_nncf.py --dense results_c10jpg_latency/macs/resnet20_c10jpg/dense/dense.pt \\
        --data data/pqd-cache/c10jpg-32px.pt --imagenet-normalize --train-subset 5000 --seeds 0 1 2
    python bench/q_nncf.py --smoke      # a briefly trained tiny ResNet-20 on digits (the tests' smoke run)

Both paths start from the same dense checkpoint and train the same epochs with pqd's own loop
(:func:`pqd.train.fit`: the same optimiser, learning rate, batches and data order per seed).
FX is what the ``q`` stage does (:func:`pqd.qat.prepare_qat`, observers frozen for the last quarter
of the epochs, which one epoch never reaches), deployed as the workflow deploys it (``deploy``, then
the OpenVINO export of the fake-quantized model); NNCF is ``nncf.quantize`` on the eager model
(300 training images to calibrate), fine-tuned, then ``openvino.convert_model``. Both INT8 graphs
are run by pqd's OpenVINO runner (f32 hint, one static input shape). Needs ``pip install nncf`` (not
a pqd dependency).
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import header, parse, row, stamp

from pqd import qat, stats
from pqd.checkpoint import save_checkpoint
from pqd.data import load_data, prepare
from pqd.measure import fake_quant_runner, interleaved_latency
from pqd.model_io import load_model
from pqd.runtimes import import_openvino, openvino_runner
from pqd.train import Callbacks, FitSettings, fit, predict

warnings.filterwarnings("ignore")
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def fx_path(dense, meta, data, settings, tmp: Path, threads: int):
    """pqd's q stage: FX QAT, then the workflow's deploy and OpenVINO export."""
    fake = qat.prepare_qat(copy.deepcopy(dense), meta["model"]["image_size"], meta.get("reduce_range", True))
    fit(fake, data, settings, callbacks=Callbacks(log=io.StringIO()))
    return fake_quant_runner(fake, meta, str(tmp), "fx", "openvino", threads)


def nncf_path(dense, meta, data, settings, tmp: Path, threads: int):
    """NNCF's QAT: quantizers hooked into the eager model, calibrated, fine-tuned, converted by OpenVINO
    and run by pqd's OpenVINO runner (compiled per static input shape: compiling the converted model
    as it comes, with a dynamic batch, timed it 1.8x slower)."""
    import nncf

    size = meta["model"]["image_size"]
    calib = [x for x, _ in data.batches("train", 100, limit=300)]  # NNCF counts items: here batches
    q = nncf.quantize(copy.deepcopy(dense).eval(), nncf.Dataset(calib), subset_size=len(calib))
    fit(q, data, settings, callbacks=Callbacks(log=io.StringIO()))
    ov = import_openvino()
    ov.save_model(ov.convert_model(q.eval(), example_input=torch.zeros(1, 3, size, size)), str(tmp / "nncf.xml"))
    return openvino_runner(None, str(tmp / "nncf.xml"), threads)


def smoke_dense(tmp: Path) -> tuple[str, str]:
    """A ResNet-20 (width 0.5) trained two epochs on digits, saved as a pqd dense checkpoint."""
    from pqd.catalog import BACKBONES
    from pqd.models import build_model

    cache = str(tmp / "digits.pt")
    prepare("digits", {"kind": "digits"}, str(tmp), cache)
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 0.5)
    fit(model, load_data(cache), FitSettings(epochs=2, lr=0.05, batch_size=64), callbacks=Callbacks(log=io.StringIO()))
    meta = {"backbone": "resnet20", "model": BACKBONES.get("resnet20").to_dict(), "num_classes": 10, "width": 0.5}
    save_checkpoint(tmp / "dense.pt", model.state_dict(), {**meta, "form": "fp32", "reduce_range": True})
    return str(tmp / "dense.pt"), cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", help="a pqd dense checkpoint (results/<exp>/dense/dense.pt)")
    ap.add_argument("--data", help="its dataset cache (data/pqd-cache/<name>-<size>px.pt)")
    ap.add_argument(
        "--imagenet-normalize", action="store_true", help="the model was trained on ImageNet-normalised inputs"
    )
    ap.add_argument("--train-subset", type=int, help="train on this many class-balanced training images")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01, help="the q stage's default")
    ap.add_argument("--nncf-lr", type=float, help="NNCF's own learning rate (default: --lr; its guide suggests 1e-5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=40)
    a = parse(ap, {"seeds": [0], "runs": 20, "rounds": 4})
    torch.set_num_threads(2)  # training; the INT8 models are timed at --threads
    print(stamp(f"{a.threads} thread(s), batch 1, OpenVINO INT8 (f32 hint, as pqd compiles)"))
    with tempfile.TemporaryDirectory(prefix="pqd-qnncf-") as tmp:
        if a.smoke:
            a.dense, a.data = smoke_dense(Path(tmp))
        dense, meta = load_model(a.dense)
        normalize = IMAGENET if a.imagenet_normalize else None
        data = load_data(
            a.data, normalize=normalize, augment={"crop_pad": 4, "flip": True}, train_subset=a.train_subset
        )
        size = meta["model"]["image_size"]
        print(f"# {a.dense}: {len(data.train_y)} training and {len(data.test_y)} test images, {size} px")
        print(header(["seed", "path", "top-1 % (OpenVINO INT8)", "INT8 ms (median of rounds)"]))
        correct, rounds = {"fx": [], "nncf": []}, {"fx": [], "nncf": []}
        for seed in a.seeds:
            settings = FitSettings(epochs=a.epochs, lr=a.lr, seed=seed)
            runners = {}
            for path in correct:
                torch.manual_seed(seed)
                out = Path(tmp) / f"{path}{seed}"
                out.mkdir()
                runners[path] = (
                    fx_path(dense, meta, data, settings, out, a.threads)
                    if path == "fx"
                    else nncf_path(dense, meta, data, replace(settings, lr=a.nncf_lr or a.lr), out, a.threads)
                )
                correct[path].append((predict(runners[path], data, batch_size=1) == data.test_y).numpy())
            lat = interleaved_latency(
                runners, runs=a.runs, warmup=20, rounds=a.rounds, threads=a.threads, image_size=size
            )
            for path in correct:
                rounds[path].append(np.array(lat[path]["round_ms"]))
                top1 = 100 * correct[path][-1].mean()
                print(row([seed, path, f"{top1:.2f}", f"{lat[path]['median_ms']:.4f}"]), flush=True)
    # the workflow's own statistics (pqd.stats): seeds and test images, paired image by image
    table = {k: np.stack(v) for k, v in correct.items()}
    for path, c in table.items():
        i = stats.accuracy_interval(c)
        print(f"{path}: top-1 {i.mean:.2f} [{i.low:.2f}, {i.high:.2f}] over {len(c)} seed(s)")
    d = stats.paired_comparison("nncf", "fx", table["nncf"], table["fx"])
    print(f"nncf - fx: {d.diff:+.2f} points [{d.low:+.2f}, {d.high:+.2f}], p = {d.p_value:.3g}")
    r = stats.ratio_interval(rounds["nncf"], rounds["fx"])
    print(f"latency nncf / fx: {r.mean:.3f} [{r.low:.3f}, {r.high:.3f}] (per-round ratios, timed interleaved)")


if __name__ == "__main__":
    main()
