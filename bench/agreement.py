"""Top-1 of deployed models in every runtime on the same test images, and how often each runtime's
prediction equals PyTorch's, image by image.

    python bench/agreement.py --data data/pqd-cache/c10jpg-32px.pt \\
        results_c10jpg/resnet20_c10jpg/q/qat_int8.pt results_c10jpg/resnet20_c10jpg/pqd/distilled_int8.pt
    python bench/agreement.py --smoke                              # a tiny trained model on digits (CI)

Each pipeline's final model (fake-quantized, or FP32) is deployed in every runtime as the workflow
deploys it (:func:`pqd.measure.fake_quant_runner` / :func:`pqd.measure.deployed_runner`: PyTorch's
converted INT8 model, ONNX Runtime's QDQ graph, OpenVINO's weighted-inputs graph; into a temporary
folder), then evaluated in PyTorch, ONNX Runtime and OpenVINO. Issue 3's bar: every runtime's top-1
within 0.3 points of PyTorch's on the same INT8 model.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import torch
from common import header, parse, row, stamp

from pqd.data import load_data
from pqd.measure import deployed_runner, fake_quant_runner
from pqd.model_io import load_model
from pqd.train import predict

RUNTIMES_COMPARED = ("torch", "onnxruntime", "openvino")


def smoke_model(tmp: Path) -> tuple[str, str]:
    """A briefly trained fake-quantized ResNet-20 (width 0.25) on digits, saved as a pipeline's final model."""
    from pqd import qat as quant
    from pqd.checkpoint import save_checkpoint
    from pqd.data import prepare
    from pqd.models import build_model
    from pqd.train import Callbacks, FitSettings, fit

    cache = str(tmp / "digits.pt")
    prepare("digits", {"kind": "digits"}, str(tmp), cache)
    data = load_data(cache, augment={"crop_pad": 2})
    torch.manual_seed(0)
    q = quant.prepare_qat(build_model("resnet20", 10, 0.25), 32)
    fit(q, data, FitSettings(epochs=2, lr=0.05, batch_size=64), callbacks=Callbacks(log=io.StringIO()))
    meta = {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "qat", "reduce_range": True}
    save_checkpoint(tmp / "qat_int8.pt", q.state_dict(), meta)
    return str(tmp / "qat_int8.pt"), cache


def deployed(path: str, workdir: str, threads: int) -> dict:
    """The runner of each compared runtime for the pipeline's final model at ``path``."""
    model, meta = load_model(path)
    if meta["form"] not in ("qat", "fp32"):
        raise SystemExit(f"{path} is {meta['form']}: pass the pipeline's final model (qat or fp32), not deployed.pt")
    if meta["form"] == "qat":
        return {rt: fake_quant_runner(model, meta, workdir, rt, rt, threads) for rt in RUNTIMES_COMPARED}
    return {rt: deployed_runner(model, meta, "fp32", workdir, rt, rt, threads) for rt in RUNTIMES_COMPARED}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", help="pipelines' final models (results/<exp>/<chain>/<stage>.pt)")
    ap.add_argument("--data", help="a pqd dataset cache (data/pqd-cache/<name>.pt)")
    ap.add_argument("--mean", type=float, nargs=3, help="normalisation the model was trained with, if not the cache's")
    ap.add_argument("--std", type=float, nargs=3)
    ap.add_argument("--threads", type=int, default=2)
    a = parse(ap, {}, help="a briefly trained tiny INT8 model on digits instead of the given ones")
    torch.set_num_threads(a.threads)
    print(stamp())
    with tempfile.TemporaryDirectory() as tmp:
        if a.smoke:
            final, a.data = smoke_model(Path(tmp))
            a.models = [final]
        normalize = {"mean": a.mean, "std": a.std} if a.mean else None
        data = load_data(a.data, normalize=normalize)
        print(f"# {len(data.test_y)} test images from {a.data}")
        print(
            header(
                ["model"]
                + [f"{r} top-1 %" for r in RUNTIMES_COMPARED]
                + [f"{r} Δ vs torch" for r in RUNTIMES_COMPARED[1:]]
                + [f"{r} same prediction %" for r in RUNTIMES_COMPARED[1:]]
            )
        )
        for i, path in enumerate(a.models):
            (Path(tmp) / f"m{i}").mkdir()
            preds = {
                r: predict(run, data, batch_size=500)
                for r, run in deployed(path, str(Path(tmp) / f"m{i}"), a.threads).items()
            }
            acc = {r: 100.0 * (p == data.test_y).float().mean().item() for r, p in preds.items()}
            same = {r: 100.0 * (preds[r] == preds["torch"]).float().mean().item() for r in RUNTIMES_COMPARED[1:]}
            print(
                row(
                    [path]
                    + [f"{acc[r]:.2f}" for r in RUNTIMES_COMPARED]
                    + [f"{acc[r] - acc['torch']:+.2f}" for r in RUNTIMES_COMPARED[1:]]
                    + [f"{same[r]:.2f}" for r in RUNTIMES_COMPARED[1:]]
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
