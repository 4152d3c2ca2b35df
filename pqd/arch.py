"""The architecture of a model whose layers a stage has reshaped or replaced.

Structured pruning (``s``) thins layers, depth pruning (``b``) removes whole residual blocks and
low-rank factorisation (``l``) replaces layers, so the backbone's constructor alone no longer
rebuilds the model. A checkpoint therefore stores, as plain JSON in its metadata, what differs
from a freshly built backbone: the names of removed blocks (now ``nn.Identity``), of factorised
layers and, for every module whose tensors changed shape, those shapes
and the size attributes (``in_channels``, ``num_heads`` ...) its ``forward`` reads. Rebuilding
is generic (build, swap in factor pairs, reshape tensors), so it works for any backbone and
needs neither the pruning library nor pickled code: ``weights_only=True`` still applies.
"""

from __future__ import annotations

from itertools import chain

import torch
import torch.nn as nn

from pqd import blocks, factorize

# Size attributes that modules read in forward(); ints or tuples of ints.
SIZE_ATTRS = (
    "in_channels",
    "out_channels",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "normalized_shape",
    "num_heads",
    "head_dim",
    "inner_dim",
)


def _tensors(m: nn.Module) -> dict[str, list[int]]:
    return {
        k: list(v.shape)
        for k, v in chain(m.named_parameters(recurse=False), m.named_buffers(recurse=False))
        if v is not None
    }


def _attrs(m: nn.Module) -> dict:
    out = {}
    for a in SIZE_ATTRS:
        v = getattr(m, a, None)
        if isinstance(v, bool) or not isinstance(v, (int, tuple)):
            continue
        out[a] = list(v) if isinstance(v, tuple) else v
    return out


def describe(model: nn.Module, reference: nn.Module) -> dict:
    """What differs between ``model`` and ``reference`` (a fresh build of the same backbone)."""
    removed = blocks.removed_blocks(model, reference)
    factorised = [n for n, m in model.named_modules() if isinstance(m, factorize.LowRank)]
    reference = apply(reference, {"removed": removed, "lowrank": factorised, "modules": {}})
    ref = dict(reference.named_modules())
    modules = {}
    for name, m in model.named_modules():
        spec = {"tensors": _tensors(m), "attrs": _attrs(m)}
        r = ref.get(name)
        if r is None or spec != {"tensors": _tensors(r), "attrs": _attrs(r)}:
            modules[name] = spec
    return {"removed": removed, "lowrank": factorised, "modules": modules}


def apply(model: nn.Module, arch: dict) -> nn.Module:
    """Reshape a freshly built backbone to the recorded architecture (values left to load)."""
    blocks.remove(model, arch.get("removed", []))
    for name in arch.get("lowrank", []):
        factorize.set_submodule(model, name, factorize.skeleton(model.get_submodule(name)))
    for name, spec in arch.get("modules", {}).items():
        m = model.get_submodule(name)
        for a, v in spec["attrs"].items():
            setattr(m, a, tuple(v) if isinstance(getattr(m, a, None), tuple) else v)
        for k, shape in spec["tensors"].items():
            t = getattr(m, k)
            if list(t.shape) == shape:
                continue
            new = torch.zeros(shape, dtype=t.dtype)
            if isinstance(t, nn.Parameter):
                setattr(m, k, nn.Parameter(new, requires_grad=t.requires_grad))
            else:
                m.register_buffer(k, new)
    return model
