"""Constants every module agrees on, in one place (torch-free).

Every backbone takes square RGB images of its entry's ``image_size`` (32 for the built-in
ones, the CIFAR size): datasets are decoded at that size for its experiments, and the same
shape serves training, tracing (QAT, structured pruning), MAC counting, export and latency
measurement, so the size travels with the model (checkpoint metadata, ``model.image_size``).
"""

IMAGE_SIZE = 32  # the built-in backbones' input size
CHANNELS = 3


def input_shape(batch: int = 1, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """``(batch, 3, size, size)``: the shape of a batch of images of a model of input ``size``."""
    return (batch, CHANNELS, size, size)


# How far (absolute, in fractions of the unpruned latency) a latency-targeted ``s`` may land from
# its target before the summary warns: the curve is interpolated between grid points and timed on
# a shared CPU whose speed drifts, and channel counts are rounded (tests/test_latency_target.py).
LATENCY_TOLERANCE = 0.10
