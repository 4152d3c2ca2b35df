"""Building a backbone from its catalogue entry (:class:`pqd.catalog.BackboneSpec`).

pqd's own backbones take ``num_classes`` and a ``width`` multiplier (channels scale, depth does
not) so that the same architecture can run small on a CPU; a user's builder takes
``num_classes`` and its entry's ``kwargs``. Models are plain ``nn.Module`` trees with no
quantization stubs: FX graph-mode QAT traces them. This package's ``__init__`` stays
torch-free: every backbone module imports it for :func:`scaled`, and the catalogue names
backbones without building them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Union

from pqd.catalog import BACKBONES, BackboneSpec, resolve
from pqd.errors import PqdError

if TYPE_CHECKING:
    import torch.nn as nn


def backbone_of(meta: Mapping) -> BackboneSpec:
    """The entry a checkpoint's model was built from: recorded in its metadata (``model``), or,
    for checkpoints written before entries were recorded, the built-in backbone of that name."""
    if meta.get("model"):
        return BackboneSpec.from_dict(meta["model"])
    return BACKBONES.get(meta["backbone"])


def build_model(backbone: Union[BackboneSpec, str], num_classes: int, width: float = 1.0) -> "nn.Module":
    """A freshly initialised model of ``backbone`` (an entry, or a built-in backbone's name)."""
    import torch.nn as nn

    spec = BACKBONES.get(backbone) if isinstance(backbone, str) else backbone
    kwargs = dict(spec.kwargs)
    if spec.takes_width:
        kwargs["width"] = width
    elif width != 1.0:
        raise PqdError(
            f"backbone {spec.name!r} ({spec.builder}) has no width multiplier, but width is {width}; "
            f"set width: 1.0 for its experiments (overrides.<experiment>.width)"
        )
    try:
        model = resolve(spec.builder)(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise PqdError(
            f"backbone {spec.name!r}: {spec.builder}(num_classes={num_classes}, "
            f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed ({e}); fix its kwargs "
            "or make the builder accept num_classes"
        ) from None
    if not isinstance(model, nn.Module):
        raise PqdError(
            f"backbone {spec.name!r}: {spec.builder} returned a {type(model).__name__}, not an "
            "nn.Module; the builder must return the model"
        )
    return model


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier, at least 1 (and 4 when the base is >= 4)."""
    return max(min(channels, 4), int(round(channels * width)))
