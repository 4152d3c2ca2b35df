"""What each stage needs of a model, checked on a fresh build of a backbone in seconds.

A user's classifier can stop a stage that pqd's own backbones never stop: FX tracing breaks on
Python control flow over tensor values, the ONNX exporter lacks a mapping for a quantized op,
Torch-Pruning cannot follow a coupling. Finding that out after hours of dense training is the
failure this module prevents: :mod:`pqd.capability` runs :func:`probe` (as ``python -m pqd probe``)
once per backbone entry before the DAG schedules any job, and every stage whose check fails is
refused with one line naming the stage, the layer or operation and what to do.

Each check runs the stage's *own* mechanics on a randomly initialised model at the backbone's
input size: QAT prepare, convert and the ONNX export the pipeline uses; a structured-pruning
step and the weights-only reload of its architecture; low-rank factorisation and its reload.
Weights do not matter to any of these, so no data and no training are needed.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from pqd import arch as arch_mod
from pqd import qat
from pqd.catalog import RUNTIMES, BackboneSpec
from pqd.checkpoint import save_checkpoint
from pqd.constants import input_shape
from pqd.errors import PqdError
from pqd.macs import macs
from pqd.models import build_model

# The class count a probe builds with: what a check exercises does not depend on it.
PROBE_CLASSES = 10


class Refusal(Exception):
    """A check's failure: ``where`` (the layer or operation), ``what`` (why), ``fix`` (what to do)."""

    def __init__(self, where: str, what: str, fix: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where, self.what, self.fix = where, what, fix


def _first_line(e: BaseException, limit: int = 140) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}".rstrip(": ")


def _library_roots() -> tuple[Path, ...]:
    """The installed folders whose frames are not the model's code: torch, Torch-Pruning, ONNX and
    pqd's own package (by location: a user's workflow folder may well be called ``pqd`` too)."""
    import importlib.util

    roots = [Path(__file__).resolve().parent]
    for name in ("torch", "torch_pruning", "onnx"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            roots.append(Path(spec.origin).resolve().parent)
    return tuple(roots)


def _user_frame(e: BaseException) -> str:
    """Where in the model's own code an exception was raised: the innermost frame outside the
    libraries of :func:`_library_roots` and Python's import machinery (``Block.forward``, with its
    file and line), or ``''``."""
    roots, found = _library_roots(), ""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith("<"):  # <frozen importlib...>, <string>, FX's generated code
            path = Path(code.co_filename).resolve()
            if not any(path.is_relative_to(root) for root in roots):
                found = f"{getattr(code, 'co_qualname', code.co_name)} ({path.name}:{tb.tb_lineno})"
        tb = tb.tb_next
    return found


def _where(e: BaseException, default: str) -> str:
    return _user_frame(e) or default


def _forward(model: nn.Module, size: int, batch: int = 2) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(*input_shape(batch, size)))


def check_build(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """Every stage: the model runs at its input size and returns one logit per class, and its
    MACs can be counted; with an ONNX runtime its FP32 form exports (every pipeline times dense
    in that runtime)."""
    try:
        out = _forward(model.eval(), spec.image_size)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward is the answer
        raise Refusal(
            _where(e, "forward"),
            f"the model does not run on {spec.image_size}x{spec.image_size} inputs ({_first_line(e)})",
            "set the backbone's image_size to a size it accepts",
        ) from None
    if tuple(out.shape) != (2, PROBE_CLASSES):
        raise Refusal(
            "forward",
            f"returned shape {tuple(out.shape)} for a batch of 2 and {PROBE_CLASSES} classes",
            "make it return logits of shape (batch, num_classes)",
        )
    try:
        macs(model, spec.image_size)
    except Exception as e:  # noqa: BLE001
        raise Refusal(_where(e, "MAC counting"), _first_line(e), "report it; pqd counts MACs of every model") from None
    if ctx["onnx"]:
        _export(model, spec, ctx, form="fp32")


def check_masks(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """Unstructured pruning (``p``, ``k``, ``e``): some conv or linear weight besides the first conv
    and the classifier to prune."""
    from pqd.masks import prunable_layers

    if not prunable_layers(model):
        raise Refusal(
            "model",
            "no conv or linear layer to prune besides the first conv and the classifier",
            "use a model with more layers, or set exclude_first_conv/exclude_classifier: false",
        )


def _meta(spec: BackboneSpec, ctx: dict) -> dict:
    """Checkpoint metadata of a probe model, as a stage job writes it (what reloading reads)."""
    return {
        "experiment": "probe",
        "backbone": spec.name,
        "model": spec.to_dict(),
        "dataset": "probe",
        "num_classes": PROBE_CLASSES,
        "width": ctx["width"],
        "reduce_range": True,
    }


def _export(model: nn.Module, spec: BackboneSpec, ctx: dict, form: str, source: nn.Module | None = None) -> None:
    """The pipeline's own deploy path: a checkpoint of ``model`` in ``form`` reloaded from its
    metadata (weights only) and exported to ONNX as the ``export_onnx`` job does."""
    from pqd.runtimes import export_onnx

    meta = _meta(spec, ctx)
    with tempfile.TemporaryDirectory(prefix="pqd-probe-") as tmp:
        path, src = Path(tmp) / "model.pt", None
        save_checkpoint(path, model.state_dict(), {**meta, "form": form})
        if source is not None:
            src = Path(tmp) / "qat.pt"
            save_checkpoint(src, source.state_dict(), {**meta, "form": "qat"})
        try:
            export_onnx(
                str(path), str(Path(tmp) / "model.onnx"), source=str(src) if src else None, runtime=ctx["runtime"]
            )
        except PqdError as e:
            raise Refusal(
                f"the {form.upper()} ONNX export",
                str(e).split(": ", 1)[-1].split("; measure")[0],
                "set measure.runtime: torch (no ONNX), or change the operation",
            ) from None


def check_quantize(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """INT8 QAT (``q``): FX tracing and fake-quantization, a training-mode forward, conversion to
    INT8 kernels, an INT8 forward and, with an ONNX runtime, the INT8 export."""
    try:
        fake = qat.prepare_qat(copy.deepcopy(model), spec.image_size)
    except Exception as e:  # noqa: BLE001
        kind = type(e).__name__
        why = (
            "data-dependent control flow or an untraceable call"
            if "TraceError" in kind or "traced" in str(e)
            else _first_line(e)
        )
        raise Refusal(
            f"FX tracing stops at {_where(e, 'the model')}",
            why,
            "make forward() traceable by torch.fx (no Python branching on tensor values; wrap the "
            "offending call with torch.fx.wrap) or drop 'q'",
        ) from None
    try:
        fake.train()
        with torch.no_grad():
            fake(torch.randn(*input_shape(4, spec.image_size)))
        int8 = qat.convert(copy.deepcopy(fake))
        _forward(int8, spec.image_size)
    except Exception as e:  # noqa: BLE001
        raise Refusal(
            _where(e, "INT8 conversion"), _first_line(e), "drop 'q' from this experiment's pipelines"
        ) from None
    if ctx["onnx"]:
        try:
            _export(int8, spec, ctx, form="int8", source=qat.for_export(fake))
        except Refusal as r:
            if spec.onnx_int8 == "fake_quant" or RUNTIMES.get(ctx["runtime"]).int8_placement != "every_op":
                raise
            try:  # the other export path (what the ViT uses): if it works, say so
                _export(
                    int8,
                    dataclasses.replace(spec, onnx_int8="fake_quant"),
                    ctx,
                    form="int8",
                    source=qat.for_export(fake),
                )
            except Refusal:
                raise r from None
            raise Refusal(
                r.where,
                r.what,
                f"set backbones.{spec.name}.onnx_int8: fake_quant (its fake-quantized "
                "graph exports), or measure.runtime: torch",
            ) from None


def _round_trip(model: nn.Module, spec: BackboneSpec, ctx: dict, what: str) -> None:
    """The reshaped model, saved as a stage job saves it (state dict plus recorded architecture),
    reloads through the jobs' own path (:func:`pqd.model_io.load_model`, ``weights_only=True``)
    with equal outputs."""
    from pqd.model_io import load_model

    arch = arch_mod.describe(model, build_model(spec, PROBE_CLASSES, ctx["width"]))
    try:
        with tempfile.TemporaryDirectory(prefix="pqd-probe-") as tmp:
            path = Path(tmp) / "model.pt"
            save_checkpoint(path, model.state_dict(), {**_meta(spec, ctx), "form": "fp32", "arch": arch})
            rebuilt, _ = load_model(str(path))
        x = torch.randn(*input_shape(2, spec.image_size))
        with torch.no_grad():
            same = torch.allclose(rebuilt.eval()(x), model.eval()(x), atol=1e-4, rtol=1e-3)
    except Exception as e:  # noqa: BLE001
        raise Refusal(
            _where(e, f"reloading the {what} model"),
            _first_line(e),
            "a module of the model keeps a size pqd does not record (pqd.arch.SIZE_ATTRS); drop the stage",
        ) from None
    if not same:
        raise Refusal(
            f"reloading the {what} model",
            "the rebuilt model computes something else",
            "a module keeps a size in an attribute pqd does not record (pqd.arch.SIZE_ATTRS); drop the stage",
        )


def check_structured(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """Structured pruning (``s``): a Torch-Pruning step at 30% of the channels, a forward, and the
    weights-only reload of the thinner architecture."""
    from pqd.channels import prune_once

    try:
        pruned = prune_once(model.eval(), 0.3, spec.image_size)
    except PqdError as e:
        raise Refusal(
            "channel dependency graph",
            str(e).split("; use a backbone")[0],
            "use stage 'l' (low-rank) or 'p' (unstructured) instead",
        ) from None
    except Exception as e:  # noqa: BLE001
        raise Refusal(
            _where(e, "channel dependency graph"),
            _first_line(e),
            "use stage 'l' (low-rank) or 'p' (unstructured) instead",
        ) from None
    _round_trip(pruned, spec, ctx, "channel-pruned")


def check_lowrank(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """Low-rank factorisation (``l``): some layer a factor pair makes smaller, a forward, and the
    weights-only reload of the factorised architecture."""
    from pqd.factorize import factorize_model

    m = copy.deepcopy(model)
    try:
        layers = factorize_model(m, energy=None, rank_ratio=0.25)
        _forward(m, spec.image_size)
    except Exception as e:  # noqa: BLE001
        raise Refusal(_where(e, "factorisation"), _first_line(e), "drop 'l' from this experiment's pipelines") from None
    if not layers:
        raise Refusal("model", "no conv or linear layer that a factor pair makes smaller", "drop 'l'")
    _round_trip(m, spec, ctx, "factorised")


def check_depth(model: nn.Module, spec: BackboneSpec, ctx: dict) -> None:
    """Depth pruning (``b``): a residual block with an identity shortcut to remove, a forward
    without it, and the weights-only reload of the shallower architecture."""
    from pqd.blocks import removable_blocks, remove

    try:
        found = removable_blocks(model, spec.image_size)
    except Exception as e:  # noqa: BLE001
        raise Refusal(_where(e, "finding residual blocks"), _first_line(e), "drop 'b'; use 's' (width)") from None
    if not found:
        raise Refusal(
            "model",
            "no residual block with an identity shortcut (a module computing x + f(x) with its input's shape)",
            "drop 'b' from this experiment's pipelines; use 's' (width) instead",
        )
    try:
        remove(model, found[-1:])
        _forward(model.eval(), spec.image_size)
    except Exception as e:  # noqa: BLE001
        raise Refusal(_where(e, f"without block {found[-1]}"), _first_line(e), "drop 'b'; use 's' (width)") from None
    _round_trip(model, spec, ctx, "depth-pruned")


CHECKS: dict[str, Callable[[nn.Module, BackboneSpec, dict], None]] = {
    "build": check_build,
    "masks": check_masks,
    "quantize": check_quantize,
    "structured": check_structured,
    "lowrank": check_lowrank,
    "depth": check_depth,
}


def probe(spec: BackboneSpec, width: float, runtime: str) -> dict:
    """Run every check on a fresh build of ``spec``: ``{check: {"ok", "where", "what", "fix", "s"}}``.
    A model that does not build or run fails every check with that reason."""
    ctx = {"width": width, "onnx": RUNTIMES.get(runtime).onnx, "runtime": runtime}
    torch.manual_seed(0)
    out: dict = {}
    try:
        model = build_model(spec, PROBE_CLASSES, width)
    except PqdError as e:
        failure = {"ok": False, "where": "builder", "what": str(e), "fix": "", "s": 0.0}
        return {name: failure for name in CHECKS}
    except Exception as e:  # noqa: BLE001 - the user's constructor
        failure = {
            "ok": False,
            "where": _where(e, spec.builder),
            "what": f"building the model failed ({_first_line(e)})",
            "fix": "fix the builder or its kwargs",
            "s": 0.0,
        }
        return {name: failure for name in CHECKS}
    for name, check in CHECKS.items():
        t0 = time.perf_counter()
        try:
            check(copy.deepcopy(model), spec, ctx)
            out[name] = {"ok": True, "s": time.perf_counter() - t0}
        except Refusal as r:
            out[name] = {"ok": False, "where": r.where, "what": r.what, "fix": r.fix, "s": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 - a check's own failure is still an answer, with its trace
            out[name] = {
                "ok": False,
                "where": _where(e, name),
                "what": _first_line(e),
                "fix": "report it with the probe log",
                "trace": traceback.format_exc()[-2000:],
                "s": time.perf_counter() - t0,
            }
        if name == "build" and not out[name]["ok"]:
            return {n: out["build"] for n in CHECKS}
    return out
