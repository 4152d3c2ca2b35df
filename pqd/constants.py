"""Constants every module agrees on, in one place (torch-free).

All backbones take 32x32 RGB images: the CIFAR datasets are that size, and the other
datasets are resized to it when they are decoded, so one input shape serves training,
tracing (QAT, structured pruning), MAC counting, export and latency measurement.
"""

IMAGE_SIZE = 32
CHANNELS = 3


def input_shape(batch: int = 1) -> tuple[int, int, int, int]:
    """``(batch, 3, 32, 32)``: the shape of a batch of pqd images."""
    return (batch, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)

# How far (absolute, in fractions of the unpruned latency) a latency-targeted ``s`` may land from
# its target before the summary warns: the curve is interpolated between grid points and timed on
# a shared CPU whose speed drifts, and channel counts are rounded (tests/test_latency_target.py).
LATENCY_TOLERANCE = 0.10
