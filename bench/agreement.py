"""Top-1 of deployed models in every runtime on the same test images, and how often each runtime's
prediction equals PyTorch's, image by image.

    python bench/agreement.py --data data/pqd-cache/c10jpg.pt \\
        results_c10jpg/resnet20_c10jpg/{q,pqd}/deployed.pt        # models made by the workflow
    python bench/agreement.py --smoke                              # a tiny trained model on digits (CI)

Each deployed model is exported to ONNX exactly as the ``export_onnx`` rule does (into a
temporary folder), then evaluated in PyTorch, ONNX Runtime and OpenVINO. Issue 3's bar: every
runtime's top-1 within 0.3 points of PyTorch's on the same INT8 model.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import torch
from common import header, parse, row, stamp

from pqd.data import load_data
from pqd.runtimes import export_onnx, make_runner

RUNTIMES_COMPARED = ("torch", "onnxruntime", "openvino")


@torch.inference_mode()
def predictions(run, data, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([run(x).argmax(1) for x, _ in data.batches("test", batch_size)])


def smoke_model(tmp: Path) -> tuple[str, str]:
    """A briefly trained INT8 ResNet-20 (width 0.25) on digits, deployed like the workflow does."""
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
    meta = {"backbone": "resnet20", "num_classes": 10, "width": 0.25, "form": "int8", "reduce_range": True}
    save_checkpoint(tmp / "deployed.pt", quant.convert(q).state_dict(), meta)
    return str(tmp / "deployed.pt"), cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("deployed", nargs="*")
    ap.add_argument("--data", help="a pqd dataset cache (data/pqd-cache/<name>.pt)")
    ap.add_argument("--mean", type=float, nargs=3, help="normalisation the model was trained with, if not the cache's")
    ap.add_argument("--std", type=float, nargs=3)
    ap.add_argument("--threads", type=int, default=2)
    a = parse(ap, {}, help="a briefly trained tiny INT8 model on digits instead of the given ones")
    torch.set_num_threads(a.threads)
    print(stamp())
    with tempfile.TemporaryDirectory() as tmp:
        if a.smoke:
            deployed, a.data = smoke_model(Path(tmp))
            a.deployed = [deployed]
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
        for i, path in enumerate(a.deployed):
            onnx_path = str(Path(tmp) / f"m{i}.onnx")
            export_onnx(path, onnx_path)
            preds = {r: predictions(make_runner(r, path, onnx_path, a.threads), data) for r in RUNTIMES_COMPARED}
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
