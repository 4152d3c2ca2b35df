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
