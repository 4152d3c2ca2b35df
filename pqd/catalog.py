"""The catalogues of what a config can name: backbones, dataset kinds and runtimes.

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
from dataclasses import dataclass
from typing import Any

from pqd.registry import Registry


def resolve(target: str) -> Any:
    """The object a ``"module:callable"`` string names (imported on first use)."""
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def target_module(target: str) -> str:
    return target.split(":")[0]


@dataclass(frozen=True)
class BackboneSpec:
    """A 32x32 backbone. ``traceable``: Torch-Pruning can trace its channel couplings (every
    backbone here can; a new one with an untraceable layer says so). ``onnx_int8``: how its INT8
    form reaches ONNX: ``converted`` exports the converted model (PyTorch's exporter maps its
    quantized kernels to QuantizeLinear/DequantizeLinear around float ops); ``fake_quant`` exports
    the fake-quantized QAT graph instead (each FakeQuantize becomes a QuantizeLinear/
    DequantizeLinear pair with the learned scale and zero point, which the runtime fuses into
    integer kernels), for models whose converted ops have no ONNX mapping: the ViT's quantized
    reshapes and matrix products. LayerNorm, softmax and GELU stay float either way."""

    name: str
    target: str
    traceable: bool = True
    onnx_int8: str = "converted"


@dataclass(frozen=True)
class DatasetKindSpec:
    """A kind of dataset: ``loader(name, spec, root)`` returns the decoded uint8 arrays."""

    name: str
    loader: str
    doc: str = ""


@dataclass(frozen=True)
class RuntimeSpec:
    """Where a deployed model is evaluated and timed. ``onnx``: it runs the exported
    ``deployed.onnx`` (the workflow then adds the export job); ``runner(deployed, onnx, threads)``
    returns a ``Tensor -> Tensor`` callable; ``package`` is recorded with its version."""

    name: str
    runner: str
    onnx: bool
    package: str
    doc: str = ""


BACKBONES: Registry[BackboneSpec] = Registry("backbone", {s.name: s for s in (
    BackboneSpec("vgg16", "pqd.models.vgg:vgg16_bn"),
    BackboneSpec("resnet18", "pqd.models.resnet:resnet18"),
    BackboneSpec("wrn28_10", "pqd.models.wrn:wrn28_10"),
    BackboneSpec("resnet20", "pqd.models.resnet_cifar:resnet20"),
    BackboneSpec("resnet32", "pqd.models.resnet_cifar:resnet32"),
    BackboneSpec("resnet44", "pqd.models.resnet_cifar:resnet44"),
    BackboneSpec("resnet56", "pqd.models.resnet_cifar:resnet56"),
    BackboneSpec("vit", "pqd.models.vit:vit", onnx_int8="fake_quant"),
)})

DATASET_KINDS: Registry[DatasetKindSpec] = Registry("dataset kind", {s.name: s for s in (
    DatasetKindSpec("c10", "pqd.data:load_cifar10", "CIFAR-10 through torchvision (downloaded into data_root)"),
    DatasetKindSpec("c100", "pqd.data:load_cifar100", "CIFAR-100 through torchvision (downloaded into data_root)"),
    DatasetKindSpec("digits", "pqd.data:load_digits", "scikit-learn's bundled digits, offline"),
    DatasetKindSpec("imagefolder", "pqd.data:load_imagefolder", "root/train/<class>/* and root/test/<class>/*"),
)})

RUNTIMES: Registry[RuntimeSpec] = Registry("runtime", {s.name: s for s in (
    RuntimeSpec("torch", "pqd.runtimes:torch_runner", onnx=False, package="torch",
                doc="PyTorch eager; INT8 through its quantized kernels"),
    RuntimeSpec("onnxruntime", "pqd.runtimes:onnxruntime_runner", onnx=True, package="onnxruntime",
                doc="ONNX Runtime on the exported QDQ graph"),
    RuntimeSpec("openvino", "pqd.runtimes:openvino_runner", onnx=True, package="openvino",
                doc="OpenVINO's CPU plugin on the exported QDQ graph (the fastest INT8 runtime here)"),
)})
DEFAULT_RUNTIME = "openvino"
