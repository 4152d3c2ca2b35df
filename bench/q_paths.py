"""Which INT8 QAT path takes which model (issue 20 item 6): pqd's torch.ao FX QAT against the two
successors, torchao's PT2E QAT (``torch.export`` + ``prepare_qat_pt2e`` with the x86 quantizer) and
NNCF's PyTorch QAT (``nncf.quantize`` on the eager model, then fine-tuned), on the same models.

    PYTHONPATH=/tmp/torchao_pkg python bench/q_paths.py            # coverage table
    PYTHONPATH=/tmp/torchao_pkg python bench/q_paths.py --latency  # plus OpenVINO INT8 latency per path

Needs ``pip install nncf`` and ``pip install --target /tmp/torchao_pkg --no-deps torchao==0.18.0``
(neither is a dependency of pqd). Per model and path, the steps a Q stage needs run in order and
the first that fails is printed: ``prepare`` (trace and insert fake quantization), ``train`` (a
training-mode forward, backward and SGD step), ``int8`` (convert or strip to the deployable model
and run it), ``openvino`` (the INT8 model compiled by OpenVINO and run at batch 1). Random
weights and data: this measures whether a path takes a model, and how fast its INT8 graph runs,
not accuracy (that needs training, see BENCHMARKS.md section 10).
"""

from __future__ import annotations

import argparse
import copy
import time
import traceback
import warnings

import torch
import torch.nn as nn

from pqd import qat
from pqd.catalog import BACKBONES, BackboneSpec
from pqd.measure import cpu_info, interleaved_latency
from pqd.models import build_model
from pqd.runtimes import import_openvino

warnings.filterwarnings("ignore")


class BranchOnValue(nn.Module):
    """Python control flow on a tensor's value: no symbolic tracer can take it."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 16, 5, padding=2)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        y = self.a(x) if x.mean() > 0 else self.b(x)
        return self.head(torch.relu(y).mean((2, 3)))


class BranchOnShape(nn.Module):
    """Python control flow on the input's shape (pool only large inputs): common in user models."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        if x.shape[-1] >= 64:
            x = nn.functional.avg_pool2d(x, 2)
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def models(size: int) -> dict[str, tuple[nn.Module, int]]:
    out = {}
    for name in ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"]:
        out[name] = (build_model(BackboneSpec(name, f"torchvision.models:{name}", image_size=size), 10), size)
    for name in ["resnet20", "vit"]:
        out[f"pqd {name}"] = (build_model(BACKBONES.get(name), 10, 1.0), 32)
    out["BranchOnValue"], out["BranchOnShape"] = (BranchOnValue(), size), (BranchOnShape(), size)
    return out


def train_step(model: nn.Module, size: int) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, size, size)), torch.randint(0, 10, (4,)))
    loss.backward()
    opt.step()


def ov_compiled(ov_model, threads: int):
    ov = import_openvino()
    import openvino.properties as props
    import openvino.properties.hint as hints

    compiled = ov.Core().compile_model(
        ov_model, "CPU", {props.inference_num_threads: threads, hints.inference_precision: ov.Type.f32}
    )
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def path_fx(model: nn.Module, size: int, threads: int, steps: dict):
    """pqd today: FX QAT, convert; OpenVINO gets the weighted_inputs graph of the fake-quantized model."""
    fake = qat.prepare_qat(copy.deepcopy(model), size)
    steps["prepare"] = True
    train_step(fake, size)
    steps["train"] = True
    int8 = qat.convert(copy.deepcopy(fake))
    int8(torch.randn(1, 3, size, size))
    steps["int8"] = True
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        torch.onnx.export(
            qat.weighted_inputs_graph(fake),
            (torch.randn(1, 3, size, size),),
            f"{tmp}/m.onnx",
            opset_version=17,
            dynamo=False,
        )
        run = ov_compiled(import_openvino().Core().read_model(f"{tmp}/m.onnx"), threads)
    run(torch.randn(1, 3, size, size))
    steps["openvino"] = run


def path_pt2e(model: nn.Module, size: int, threads: int, steps: dict):
    """torchao PT2E QAT: torch.export, prepare_qat_pt2e (X86InductorQuantizer), convert_pt2e."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    x = torch.randn(2, 3, size, size)
    batch = ({0: torch.export.Dim("batch", min=1, max=64)},)  # the batch size varies between training and deployment
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=True))
    exported = torch.export.export(copy.deepcopy(model).train(), (x,), dynamic_shapes=batch).module()
    prepared = prepare_qat_pt2e(exported, quantizer)
    steps["prepare"] = True
    move_exported_model_to_train(prepared)
    train_step(prepared, size)
    steps["train"] = True
    move_exported_model_to_eval(prepared)
    int8 = convert_pt2e(prepared)
    int8(torch.randn(2, 3, size, size))
    steps["int8"] = True
    ov = import_openvino()
    run = ov_compiled(ov.convert_model(torch.export.export(int8, (x,), dynamic_shapes=batch)), threads)
    run(torch.randn(1, 3, size, size))
    steps["openvino"] = run


def path_nncf(model: nn.Module, size: int, threads: int, steps: dict):
    """NNCF's PyTorch QAT: nncf.quantize on the eager model (quantizers hooked by execution), fine-tune,
    then OpenVINO's conversion of the quantized module."""
    import nncf

    calib = [torch.randn(1, 3, size, size) for _ in range(4)]
    q = nncf.quantize(copy.deepcopy(model).eval(), nncf.Dataset(calib), subset_size=4)
    steps["prepare"] = True
    q.train()
    train_step(q, size)
    steps["train"] = True
    q.eval()
    q(torch.randn(1, 3, size, size))
    steps["int8"] = True
    ov = import_openvino()
    run = ov_compiled(ov.convert_model(q, example_input=torch.randn(1, 3, size, size)), threads)
    run(torch.randn(1, 3, size, size))
    steps["openvino"] = run


PATHS = {"fx (pqd)": path_fx, "pt2e (torchao)": path_pt2e, "nncf": path_nncf}
NEEDS = {"pt2e (torchao)": "torchao", "nncf": "nncf"}  # libraries pqd does not install
STEPS = ["prepare", "train", "int8", "openvino"]


def first_line(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "site-packages" not in f.filename]
    where = f" ({frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:110] if str(e).strip() else ''}{where}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency", action="store_true", help="also time each path's INT8 graph in OpenVINO")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="two small models, paths whose library is absent skipped (CI)")
    a = ap.parse_args()
    import importlib.util

    absent = {p for p, lib in NEEDS.items() if importlib.util.find_spec(lib) is None}
    torch.manual_seed(0)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}  {cpu_info()}")
    print("| model | " + " | ".join(PATHS) + " |" + (" OpenVINO INT8 ms per path (same order) |" if a.latency else ""))
    print("|---|" + "---|" * len(PATHS) + ("---|" if a.latency else ""))
    totals = dict.fromkeys(PATHS, 0)
    chosen = models(32 if a.smoke else a.size)
    if a.smoke:
        chosen = {k: v for k, v in chosen.items() if k in ("pqd resnet20", "BranchOnValue")}
    for name, (model, size) in chosen.items():
        cells, runners = [], {}
        for path, fn in PATHS.items():
            steps = {}
            if path in absent:
                cells.append(f"not installed (pip install {NEEDS[path]})")
                continue
            try:
                fn(model, size, a.threads, steps)
                cells.append("all steps")
                totals[path] += 1
                runners[path] = steps["openvino"]
            except Exception as e:  # noqa: BLE001 - the failure is the measurement
                done = [s for s in STEPS if s in steps]
                failed = STEPS[len(done)] if len(done) < len(STEPS) else "?"
                cells.append(f"fails at {failed}: {first_line(e)}")
        lat = ""
        if a.latency and runners:
            res = interleaved_latency(
                runners, runs=a.runs, warmup=10, rounds=a.rounds, threads=a.threads, image_size=size
            )
            lat = " " + " / ".join(f"{res[p]['median_ms']:.2f}" if p in res else "-" for p in PATHS) + " |"
        print(f"| {name} ({size} px) | " + " | ".join(cells) + " |" + lat, flush=True)
    print(
        "\ntakes all steps: "
        + ", ".join(f"{p} {n}/{len(chosen)}" + (" (not installed)" if p in absent else "") for p, n in totals.items())
    )


if __name__ == "__main__":
    main()
