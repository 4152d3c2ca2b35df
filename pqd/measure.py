"""Measure the deployed model: accuracy, size on disk, sparsity, batch-1 CPU latency.

Latency is compared against the dense FP32 model *in the same process*, with the two
models timed in alternating rounds, because a shared CPU's speed drifts by up to 2x
within seconds: only a ratio measured side by side is trustworthy.
"""

from __future__ import annotations

import copy
import functools
import gzip
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from pqd import arch as arch_mod
from pqd import qat
from pqd.catalog import RUNTIMES
from pqd.checkpoint import atomic_path, code_version, load_checkpoint, save_checkpoint
from pqd.constants import input_shape
from pqd.errors import PqdError
from pqd.macs import macs
from pqd.masks import sparsity
from pqd.model_io import build_from_meta, load_model
from pqd.models import backbone_of, build_model
from pqd.params import MeasureSettings
from pqd.runtimes import Runner, export_onnx, import_openvino, make_runner, runtime_versions, throughput_runner

META_KEYS = (
    "experiment",
    "backbone",
    "model",
    "dataset",
    "num_classes",
    "width",
    "reduce_range",
)  # what rebuilding a deployed model needs


def deploy(src: str, output: str) -> dict:
    """Write the deployable form of a pipeline's final model: INT8-converted if it was
    trained fake-quantized, FP32 otherwise; metadata trimmed to what rebuilding needs."""
    model, meta = load_model(src)
    form = "fp32"
    if meta["form"] == "qat":
        model, form = qat.convert(model), "int8"
    keep = {k: meta[k] for k in (*META_KEYS, "arch") if k in meta}
    save_checkpoint(
        output, model.state_dict(), {**keep, "form": form, "source": str(src), "code_version": code_version()}
    )
    return {"form": form}


def deployed_runner(
    model: nn.Module,
    meta: dict,
    form: str,
    workdir: str,
    name: str,
    runtime: str,
    threads: int,
    precision: str = "f32",
) -> Callable:
    """``model`` (FP32) deployed in ``form`` and ready to time in ``runtime``: written under ``workdir``
    as ``{name}.pt`` and, for an ONNX runtime, its export ``{name}.onnx`` (the graph that runtime gets
    from the ``export_onnx`` rule). INT8 goes through the pipeline's own path (QAT prepare, then
    :func:`fake_quant_runner`), after a few random batches have given the observers ranges: latency
    depends on shapes and kernels, not on trained weights. ``precision``: see :func:`make_runner`.
    The bench scripts build every deployed model they time through this function, so they time what
    the workflow deploys."""
    base = {k: meta[k] for k in META_KEYS if k in meta}
    spec = backbone_of(meta)
    base["arch"] = arch_mod.describe(model, build_model(spec, meta["num_classes"], meta["width"]))
    if form == "int8":
        fake = qat.prepare_qat(copy.deepcopy(model), spec.image_size, meta.get("reduce_range", True))
        with torch.no_grad():
            for _ in range(2):
                fake(torch.randn(*input_shape(8, spec.image_size)))
        return fake_quant_runner(fake, base, workdir, name, runtime, threads, precision)
    if form != "fp32":
        raise PqdError(f"unknown latency form {form!r}; use int8 or fp32")
    out = str(Path(workdir) / f"{name}.pt")
    save_checkpoint(out, model.state_dict(), {**base, "form": "fp32"})
    return _runner(out, None, workdir, name, runtime, threads, precision)


def fake_quant_runner(
    fake: nn.Module, meta: dict, workdir: str, name: str, runtime: str, threads: int, precision: str = "f32"
) -> Callable:
    """A fake-quantized (QAT) model deployed INT8 as the workflow deploys it: saved as
    ``{name}_qat.pt``, converted by :func:`deploy` to ``{name}.pt`` and, for an ONNX runtime, exported
    from the fake-quantized model as the ``export_onnx`` rule does; ready to run in ``runtime``."""
    fake_path, out = str(Path(workdir) / f"{name}_qat.pt"), str(Path(workdir) / f"{name}.pt")
    save_checkpoint(fake_path, fake.state_dict(), {**meta, "form": "qat"})
    deploy(fake_path, out)
    return _runner(out, fake_path, workdir, name, runtime, threads, precision)


def _runner(out: str, source: Optional[str], workdir: str, name: str, runtime: str, threads: int, precision: str):
    onnx = None
    if RUNTIMES.get(runtime).onnx:
        onnx = str(Path(workdir) / f"{name}.onnx")
        export_onnx(out, onnx, source=source, runtime=runtime)
    return make_runner(runtime, out, onnx, threads, precision)


def load_unpruned(model_path: str) -> tuple[nn.Module, dict]:
    """The model that enters structured pruning (FP32, as ``s`` runs before ``q``), in eval mode."""
    model, meta = load_model(model_path)
    if meta.get("form", "fp32") != "fp32":
        raise PqdError(
            f"{model_path} is {meta['form']}, but structured and depth pruning and their latency reference start "
            "from an FP32 model; put s and b before q in the pipeline"
        )
    return model.eval(), meta


def reference_runner(model_path: str, form: str, runtime: str, threads: int, workdir: str) -> Callable:
    """The unpruned model (the one that entered ``s``) deployed in ``form`` and ready to time in
    ``runtime``: what a latency target is a fraction of."""
    model, meta = load_unpruned(model_path)
    return deployed_runner(model, meta, form, workdir, "reference", runtime, threads)


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of every conv/linear layer as stored for inference (integers for INT8)."""
    ints = qat.int8_layers(model)
    if ints:
        return ints
    return {
        n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    }


def sizes(path: str) -> dict:
    """Bytes on disk, raw and gzip-compressed (pruned zeros compress)."""
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0))}


def sparsity_report(model: nn.Module) -> dict:
    w = layer_weights(model)
    names = list(w)
    inner = {n: w[n] for n in names[1:-1]}
    return {
        "weight_sparsity": sparsity(w),
        "weight_sparsity_inner": sparsity(inner),
        "conv_linear_params": sum(t.numel() for t in w.values()),
    }


# The instruction sets that decide INT8/BF16 kernel speed: a figure is only comparable with figures
# from a CPU with the same ones (a VNNI CPU runs INT8 convolutions at about twice an AVX2 one's rate).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    model_name, flags, named = platform.processor() or "", set(), False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not named:
                model_name, named = line.split(":", 1)[1].strip(), True
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "cpu": model_name,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch": str(torch.__version__),
        "quantized_engine": torch.backends.quantized.engine,
        "python": platform.python_version(),
    }


@torch.inference_mode()  # no autograd graph: it would slow the FP32 modules and not the INT8 ones
def interleaved_latency(
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    runs: int = 200,
    warmup: int = 20,
    rounds: int = 40,
    threads: int = 1,
    batch_size: int = 1,
    image_size: int,
    settle_ms: float = 20.0,
) -> dict[str, dict]:
    """Batch-``batch_size`` latency of each model on ``image_size`` inputs, timed in alternating rounds.

    Each round runs every model ``runs / rounds`` times back to back, so slow and fast
    phases of a shared CPU hit all models alike. Before each model's block the process sleeps
    ``settle_ms`` and makes one untimed call: runtimes leave their worker threads spinning
    after a call (ONNX Runtime, OpenMP), and with 2 threads on 2 cores those spinners slowed the
    next runtime's first calls by up to 1.6x (OpenVINO after ONNX Runtime, bench/latency.py).
    A model that can ``bind(x)`` (an ONNX runtime's :class:`~pqd.runtimes.Runner`) is timed on
    its own inference call with the input set once, as the runtime's own benchmark tool times it;
    a PyTorch module is called on the same prepared tensor. Returns median/p90/mean in ms.
    """
    torch.set_num_threads(threads)
    x = torch.randn(*input_shape(batch_size, image_size))
    calls = {}
    for name, m in models.items():
        if isinstance(m, nn.Module):
            m.eval()
        # an ONNX runtime's runner binds x once and times only its own inference call
        calls[name] = m.bind(x) if hasattr(m, "bind") else functools.partial(m, x)
        for _ in range(warmup):
            calls[name]()
    per_round = max(1, -(-runs // rounds))
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(settle_ms / 1e3)
            call()
            for _ in range(per_round):
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, ts in times.items():
        ts_sorted = sorted(ts)
        # per-round medians: the models of one round ran back to back, so round r of the model and
        # round r of dense form a pair (pqd.stats resamples them for the latency and speedup CIs)
        round_ms = [statistics.median(ts[r * per_round : (r + 1) * per_round]) for r in range(rounds)]
        out[name] = {
            "median_ms": statistics.median(ts),
            "p90_ms": ts_sorted[int(0.9 * (len(ts) - 1))],
            "mean_ms": statistics.fmean(ts),
            "runs": len(ts),
            "round_ms": round_ms,
        }
    return out


def deployed_macs(deployed: str, meta: Optional[dict] = None) -> int:
    """MACs of a deployed model, counted on its FP32 skeleton (INT8 kernels do the same MACs);
    pass ``meta`` when the checkpoint's metadata is already at hand."""
    meta = load_checkpoint(deployed)["meta"] if meta is None else meta
    return macs(build_from_meta(dict(meta, form="fp32")), backbone_of(meta).image_size)


def int8_peak_kernels(threads: int, size: int = 1024) -> dict[str, tuple[Callable[[torch.Tensor], object], int]]:
    """Small kernels that run near this CPU's INT8 multiply-accumulate peak, as
    ``name -> (callable, MACs per call)``: a ``size``-cubed INT8 GEMM in fbgemm (the kernels
    PyTorch's INT8 layers use) and, when OpenVINO is installed, a wide 3x3 INT8 convolution in
    OpenVINO. OpenVINO's direct convolutions outrun GEMMs on this CPU (AVX2, no VNNI; its own
    INT8 MatMul reached 29 GMAC/s against fbgemm's 74), so a GEMM-only figure let whole models
    exceed "the peak". The callables take (and ignore) an input, so they time like models."""
    import warnings

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
    lin = torch.ao.nn.quantized.Linear(size, size)
    w = torch.quantize_per_channel(
        torch.randn(size, size), torch.full((size,), 0.02), torch.zeros(size, dtype=torch.long), 0, torch.qint8
    )
    lin.set_weight_bias(w, None)
    x = torch.quantize_per_tensor(torch.rand(size, size), 1 / 255, 0, torch.quint8)
    kernels = {"fbgemm_gemm": ((lambda _: lin(x)), size**3)}
    if import_openvino() is None:
        return kernels
    # WRN-28-10's widest layer shape: the fastest of the conv shapes tried (256-640 channels)
    ch, hw, batch = 640, 8, 4
    fn, n = _openvino_qdq_kernel("conv", (batch, ch, hw, hw), (ch, ch, 3, 3), threads)
    kernels["openvino_conv3x3"] = ((lambda _: fn()), n)
    return kernels


def timed_with_peak(models: dict[str, Callable[[torch.Tensor], object]], threads: int, **timing) -> tuple[dict, dict]:
    """:func:`interleaved_latency` of ``models`` with the INT8 peak kernels timed in the same
    rounds, so that a model's fraction of the peak does not depend on the CPU's speed drift
    (up to 2x within seconds here). Returns (model timings, peak record)."""
    kernels = int8_peak_kernels(threads)
    res = interleaved_latency(
        {**models, **{f"peak:{k}": fn for k, (fn, _) in kernels.items()}}, threads=threads, **timing
    )
    rates = {k: n / (res.pop(f"peak:{k}")["median_ms"] / 1e3) for k, (_, n) in kernels.items()}
    return res, {"int8_peak_macs_per_s": max(rates.values()), "int8_peak_by_kernel": rates}


def _openvino_qdq_kernel(kind: str, x_shape: tuple, w_shape: tuple, threads: int) -> tuple[Callable[[], object], int]:
    """One INT8 MatMul or 3x3 Conv as an ONNX QDQ graph compiled by OpenVINO, and its MACs."""
    from onnx import TensorProto, helper, numpy_helper

    ov = import_openvino()  # before openvino.properties: the first import decides telemetry
    import openvino.properties as props

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, w_shape, dtype=np.int8), "w"),
        numpy_helper.from_array(np.array(0.02, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
    ]
    if kind == "gemm":
        op = helper.make_node("MatMul", ["xd", "wd"], ["y"])
        y_shape = [x_shape[0], w_shape[1]]
        n_macs = x_shape[0] * x_shape[1] * w_shape[1]
    else:
        op = helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])
        y_shape = [x_shape[0], w_shape[0], x_shape[2], x_shape[3]]
        n_macs = x_shape[0] * x_shape[2] * x_shape[3] * int(np.prod(w_shape))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
        op,
    ]
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    core = ov.Core()
    model = core.read_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), b""
    )
    req = core.compile_model(model, "CPU", {props.inference_num_threads: threads}).create_infer_request()
    xin = rng.random(x_shape, dtype=np.float32)
    return (lambda: req.infer({0: xin})), n_macs


# untrained forms of dense in the deployed runtime, in order of preference on a tie: f32 as pqd deploys
# it, then the runtime's default precision where that is a reduced one (bf16)
BASELINES = ("dense_runtime", "dense_default")


def latency(
    deployed: str,
    dense: str,
    settings: MeasureSettings,
    *,
    onnx_path: str | None = None,
    dense_onnx: str | None = None,
    reference: str | None = None,
) -> dict:
    """Latency of the deployed model in the configured runtime and of the dense FP32 model in
    PyTorch eager (the common baseline), measured together. When the runtime is not PyTorch,
    the dense FP32 model is also timed in that runtime (from ``dense_onnx``), so the report can
    separate what compression buys from what the runtime buys. With ``reference`` (the model that
    entered a latency-targeted ``s``), that model is timed too, deployed in the same form and
    runtime as this one: the pruned model's latency as a fraction of it is what the target set. In a
    runtime with a reduced default precision (:attr:`pqd.catalog.RuntimeSpec.default_precision`),
    dense is also timed as the runtime runs it by default (``dense_default``, bf16 where the CPU has
    it); ``baseline`` names the faster of the runtime's untrained dense forms (f32, or the default
    where it is a reduced precision) and ``speedup_vs_baseline`` is against it. ``inference_precision`` records what each timed model ran in."""
    runtime, threads = settings.runtime, settings.threads
    spec = RUNTIMES.get(runtime)
    meta = load_checkpoint(deployed)["meta"]
    if spec.onnx and not dense_onnx:
        raise PqdError(f"runtime '{runtime}' needs the dense model's deployed.onnx as well (--dense-onnx)")
    # name -> (runtime, checkpoint, onnx, precision) of every form timed: the latency runners and the
    # throughput runners below are made from this one table
    forms = {
        "model": (runtime, deployed, onnx_path, "f32"),
        "dense_fp32": ("torch", dense, None, "f32"),
        **({"dense_runtime": (runtime, dense, dense_onnx, "f32")} if spec.onnx else {}),
        # the dense model as the runtime runs it by default (bf16 where the CPU has it)
        **({"dense_default": (runtime, dense, dense_onnx, "default")} if spec.default_precision else {}),
    }
    # in PyTorch the dense model in the deployed runtime is dense_fp32 itself: timed once, named twice
    alias = {} if spec.onnx else {"dense_runtime": "dense_fp32"}
    models = {k: make_runner(rt, path, onnx, threads, prec) for k, (rt, path, onnx, prec) in forms.items()}
    with tempfile.TemporaryDirectory(prefix="pqd-reference-") as tmp:
        if reference:
            models["reference"] = reference_runner(reference, meta["form"], runtime, threads, tmp)
        res, peak = timed_with_peak(
            models,
            threads,
            runs=settings.runs,
            warmup=settings.warmup,
            rounds=settings.rounds,
            image_size=backbone_of(meta).image_size,
        )
    res.update({k: res[v] for k, v in alias.items()})
    shape = input_shape(1, backbone_of(meta).image_size)
    precision = {k: m.precision(shape) if isinstance(m, Runner) else "f32" for k, m in models.items()}
    # the fastest untrained form of the dense model this runtime offers on this CPU: what a user
    # gets without pqd (at forced f32 only, speedups were against a baseline 1.8x slower than bf16).
    # The default-precision form counts only where it is reduced: an f32 default is the same model.
    offered = [k for k in BASELINES if k in res and (k != "dense_default" or precision[k] != "f32")]
    baseline = min(offered, key=lambda k: res[k]["median_ms"])
    # every untrained form on offer is timed at throughput too: the one with the most images/s there (it
    # need not be the batch-1 baseline: bf16 can overtake f32 once every core is busy) is its baseline
    tput = (
        throughput(
            {"model": forms["model"], **{k: forms[alias.get(k, k)] for k in offered}},
            settings,
            backbone_of(meta).image_size,
        )
        if settings.throughput_rounds
        else None
    )
    tput_base = max(offered, key=lambda k: tput[k]["images_per_s"]) if tput else None
    n_macs = deployed_macs(deployed, meta)
    rate = n_macs / (res["model"]["median_ms"] / 1e3)
    return {
        "form": meta["form"],
        **runtime_versions(runtime),
        "threads": threads,
        "batch_size": 1,
        "image_size": backbone_of(meta).image_size,
        **res,
        "speedup_vs_dense_fp32": res["dense_fp32"]["median_ms"] / res["model"]["median_ms"],
        "speedup_vs_dense_same_runtime": res["dense_runtime"]["median_ms"] / res["model"]["median_ms"],
        "baseline": baseline,
        "speedup_vs_baseline": res[baseline]["median_ms"] / res["model"]["median_ms"],
        "inference_precision": precision,
        **(
            {
                "throughput": tput,
                "throughput_baseline": tput_base,
                "throughput_vs_baseline": tput["model"]["images_per_s"] / tput[tput_base]["images_per_s"],
            }
            if tput
            else {}
        ),
        "macs": n_macs,
        "macs_per_s": rate,
        **peak,
        "int8_peak_fraction": rate / peak["int8_peak_macs_per_s"],
        "system": cpu_info(),
        "code_version": code_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def throughput(forms: dict[str, tuple], settings: MeasureSettings, image_size: int) -> dict[str, dict]:
    """Images/s of each ``name -> (runtime, checkpoint, onnx, precision)`` at its runtime's throughput
    setting (:func:`pqd.runtimes.throughput_runner`), timed in ``settings.throughput_rounds``
    alternating rounds like latency. Batch-1 latency is what one user waits; a server batching
    requests cares about images/s, and the two can rank models differently (a pruned model that
    leaves a core idle at batch 1 may not be faster when every core is busy). Per round, ms per image
    (``round_ms_per_image``, paired by round across the forms, for the summary's CIs)."""
    calls = {
        name: throughput_runner(rt, path, onnx, settings.threads, image_size, precision)
        for name, (rt, path, onnx, precision) in forms.items()
    }
    rounds = settings.throughput_rounds
    res = interleaved_latency(
        calls, runs=2 * rounds, warmup=2, rounds=rounds, threads=settings.threads, image_size=image_size
    )
    return {
        name: {
            "images_per_s": 1e3 * c.images / res[name]["median_ms"],
            "round_ms_per_image": [ms / c.images for ms in res[name]["round_ms"]],
            **c.setting,
        }
        for name, c in calls.items()
    }


def evaluate(
    deployed: str,
    data,
    runtime: str = "torch",
    onnx_path: Optional[str] = None,
    threads: int = 1,
    predictions: Optional[str] = None,
    default_precision: bool = False,
) -> dict:
    """Accuracy of the deployed artifact in ``runtime`` and, for comparison, in PyTorch. With
    ``default_precision`` (dense: the untrained baseline), an FP32 model is also scored in the
    runtime's default precision where that is a reduced one (bf16). With
    ``predictions``, the runtime's predicted class of every test image and the labels go there
    (``.npz``, int16: 20 KB per 10,000 images), for paired per-image comparisons."""
    from pqd.train import predict

    model, meta = load_model(deployed)
    labels = data.test_y.cpu()
    preds_torch = predict(model, data)
    preds = preds_torch if runtime == "torch" else predict(make_runner(runtime, deployed, onnx_path, threads), data)

    def top1(p):
        return 100.0 * float((p == labels).double().mean()) if len(labels) else 0.0

    default = {}
    if default_precision and RUNTIMES.get(runtime).default_precision and meta["form"] == "fp32":
        # the FP32 model as the runtime runs it by default (bf16 where the CPU has it): the
        # untrained baseline's accuracy in the precision it is timed in
        runner = make_runner(runtime, deployed, onnx_path, threads, precision="default")
        default = {
            "default_precision": runner.precision(tuple(data.test_x[:1].shape)),
            "accuracy_default_precision": top1(predict(runner, data)),
        }
    if predictions:
        with atomic_path(predictions) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, predictions=preds.numpy().astype(np.int16), labels=labels.numpy().astype(np.int16))
    return {
        "form": meta["form"],
        "runtime": runtime,
        "accuracy": top1(preds),
        "accuracy_torch": top1(preds_torch),
        **default,
        "test_images": len(labels),
        **sparsity_report(model),
        **sizes(deployed),
        **({"onnx_bytes": sizes(onnx_path)["bytes"]} if onnx_path else {}),
        "code_version": code_version(),
    }
