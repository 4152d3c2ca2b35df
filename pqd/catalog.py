"""The catalogues of what a config can name: built-in backbones, dataset kinds and runtimes.

Each entry is the single source of truth for what it registers: the config schema takes its
names (and choices) from here, the workflow decides from here which jobs a runtime needs, and
the code that builds a backbone, decodes a dataset or runs a deployed model looks its
implementation up here. Implementations are named as ``"module:callable"`` strings, so this
module imports nothing heavy: the Snakefile reads it while building the DAG, and the
import-closure code hash (:mod:`pqd.codehash`) adds exactly the named module of the entry a
job uses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from pqd.errors import PqdError
from pqd.registry import Registry


def resolve(target: str) -> Any:
    """The object a ``"module:callable"`` string names (imported on first use); a name that does
    not import is one line saying which part is missing."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        where = (
            f"install the package that provides it, or put {module_name.replace('.', '/')}.py in the workflow directory"
            if e.name and module_name.startswith(e.name)
            else "it imports a missing module"
        )
        raise PqdError(
            f"cannot import {module_name!r} (named by {target!r}): no module named {e.name!r}; {where}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PqdError(
            f"module {module_name!r} has no {attr!r} (named by {target!r}); name a callable it defines, "
            "as 'module:callable'"
        ) from None


def target_module(target: str) -> str:
    return target.split(":")[0]


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: how to build it and at which input size it runs.

    ``builder`` is ``"module:callable"``, from pqd's own models, an installed package
    (``torchvision.models:mobilenet_v3_small``) or a Python file of the workflow directory
    (``models/mynet.py`` -> ``models.mynet:build``); it is called with ``num_classes`` plus
    ``kwargs`` (and ``width`` when ``takes_width``: pqd's own builders scale their channels).
    ``image_size``: the square input the model is trained, traced, exported and timed at; datasets
    are decoded at that size for its experiments. ``onnx_int8``: how its INT8 form reaches ONNX:
    ``converted`` exports the converted model (PyTorch's exporter maps its quantized kernels to
    QuantizeLinear/DequantizeLinear around float ops); ``fake_quant`` exports the fake-quantized QAT
    graph instead (each FakeQuantize becomes a QuantizeLinear/DequantizeLinear pair with the learned
    scale and zero point, which the runtime fuses into integer kernels), for models whose converted
    ops have no ONNX mapping: the ViT's quantized reshapes and matrix products. This choice is for
    the ``every_op`` runtimes (ONNX Runtime); OpenVINO always gets the ``weighted_inputs`` graph,
    built from the fake-quantized model (:attr:`RuntimeSpec.int8_placement`).

    The built-in backbones below and the config's ``backbones:`` entries are the same kind of
    entry (:func:`pqd.config.backbones`); checkpoints record the entry they were built from
    (:meth:`to_dict`), so a model is rebuilt from its own file, never from a config."""

    name: str
    builder: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    image_size: int = 32
    takes_width: bool = False
    onnx_int8: str = "converted"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "builder": self.builder,
            "kwargs": dict(self.kwargs),
            "image_size": self.image_size,
            "takes_width": self.takes_width,
            "onnx_int8": self.onnx_int8,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BackboneSpec":
        return cls(
            **{k: d[k] for k in ("name", "builder", "kwargs", "image_size", "takes_width", "onnx_int8") if k in d}
        )

    @property
    def module(self) -> str:
        """The module that defines the builder (part of every job's code hash that builds it)."""
        return target_module(self.builder)


@dataclass(frozen=True)
class DatasetKindSpec:
    """A kind of dataset: ``loader(name, spec, root, size)`` returns the decoded uint8 arrays at
    ``size`` x ``size`` pixels, and ``decoded``: how many images it resized and converted."""

    name: str
    loader: str
    doc: str = ""


@dataclass(frozen=True)
class RuntimeSpec:
    """Where a deployed model is evaluated and timed. ``onnx``: it runs the exported
    ``deployed.onnx`` (the workflow then adds the export job); ``runner(deployed, onnx, threads)``
    returns a ``Tensor -> Tensor`` callable; ``package`` is recorded with its version.
    ``int8_placement``: where the INT8 ONNX graph it runs carries its quantize-dequantize pairs
    (:data:`pqd.qat.PLACEMENTS`): ``every_op`` (the converted model, or the fake-quantized one for
    ``onnx_int8: fake_quant`` backbones) or ``weighted_inputs`` (:func:`pqd.qat.weighted_inputs_graph`
    of the pipeline's fake-quantized model), whichever the runtime fuses into faster kernels.
    ``default_precision``: the runtime runs an FP32 model in a reduced precision by default where
    the CPU has it (OpenVINO: bf16 on AVX-512 BF16 / AMX CPUs), so the dense model a user gets for
    free is not the one timed at forced f32: the latency job times that default too, the summary's
    ``speedup_vs_baseline`` is against the fastest untrained dense form, and the evaluation scores
    FP32 models in that precision as well. ``throughput(runtime, deployed, onnx, threads, precision,
    image_size)`` returns a :class:`pqd.runtimes.Throughput`: the runtime at its own throughput
    setting (OpenVINO: its THROUGHPUT hint, the streams and requests it picks; others: a batch)."""

    name: str
    runner: str
    onnx: bool
    package: str
    doc: str = ""
    int8_placement: str = "every_op"
    default_precision: bool = False
    throughput: str = "pqd.runtimes:batched_throughput"


def _builtin(name: str, builder: str, **kw: Any) -> BackboneSpec:
    return BackboneSpec(name, builder, takes_width=True, **kw)


# pqd's own 32x32 backbones: the defaults of the config's ``backbones:`` block (an entry there with
# one of these names is merged over it, e.g. ``{vit: {image_size: 64, kwargs: {image_size: 64}}}``).
BACKBONES: Registry[BackboneSpec] = Registry.of(
    "backbone",
    _builtin("vgg16", "pqd.models.vgg:vgg16_bn"),
    _builtin("resnet18", "pqd.models.resnet:resnet18"),
    _builtin("wrn28_10", "pqd.models.wrn:wrn28_10"),
    _builtin("resnet20", "pqd.models.resnet_cifar:resnet20"),
    _builtin("resnet32", "pqd.models.resnet_cifar:resnet32"),
    _builtin("resnet44", "pqd.models.resnet_cifar:resnet44"),
    _builtin("resnet56", "pqd.models.resnet_cifar:resnet56"),
    _builtin("vit", "pqd.models.vit:vit", onnx_int8="fake_quant"),
)

DATASET_KINDS: Registry[DatasetKindSpec] = Registry.of(
    "dataset kind",
    DatasetKindSpec("c10", "pqd.data:load_cifar10", "CIFAR-10 through torchvision (downloaded into data_root)"),
    DatasetKindSpec("c100", "pqd.data:load_cifar100", "CIFAR-100 through torchvision (downloaded into data_root)"),
    DatasetKindSpec("digits", "pqd.data:load_digits", "scikit-learn's bundled digits, offline"),
    DatasetKindSpec("imagefolder", "pqd.data:load_imagefolder", "root/train/<class>/* and root/test/<class>/*"),
)

RUNTIMES: Registry[RuntimeSpec] = Registry.of(
    "runtime",
    RuntimeSpec(
        "torch",
        "pqd.runtimes:torch_runner",
        onnx=False,
        package="torch",
        doc="PyTorch eager; INT8 through its quantized kernels",
    ),
    RuntimeSpec(
        "onnxruntime",
        "pqd.runtimes:onnxruntime_runner",
        onnx=True,
        package="onnxruntime",
        doc="ONNX Runtime on the exported QDQ graph",
    ),
    RuntimeSpec(
        "openvino",
        "pqd.runtimes:openvino_runner",
        onnx=True,
        package="openvino",
        doc="OpenVINO's CPU plugin on the exported QDQ graph (the fastest INT8 runtime here)",
        int8_placement="weighted_inputs",
        default_precision=True,
        throughput="pqd.runtimes:openvino_throughput",
    ),
)
DEFAULT_RUNTIME = "openvino"
