import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore")

# `make test` runs the suite in one process per core (pytest-xdist, `-n logical --dist loadfile
# --no-loadscope-reorder`): whole files go to a worker in collection order, so the slowest files
# (measured: the durations list of a full run, 2026-12-08) are collected first and the short ones fill
# in around them. Within a file the order is unchanged.
SLOW_FIRST = (
    "test_workflow.py",
    "test_bench_smoke.py",
    "test_byo_models.py",
    "test_codehash.py",
    "test_bad_input.py",
    "test_resume.py",
    "test_slurm.py",
    "test_stages_ext.py",
    "test_runtimes.py",
)
# each worker's own torch threads: one per worker when the workers share the cores
THREADS = 2 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= 1 else 1


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """The embedded default dataset, decoded once for the whole session."""
    from pqd.data import prepare

    path = tmp_path_factory.mktemp("data") / "digits.pt"
    prepare("digits", {"kind": "digits"}, str(path.parent), str(path))
    return str(path)


@pytest.fixture(scope="session")
def digits(digits_cache):
    from pqd.data import load_data

    return load_data(digits_cache, augment={"crop_pad": 2})


@pytest.fixture(scope="session")
def resnet20_dense(tmp_path_factory, digits_cache):
    """A ResNet-20 at width 0.5 trained 2 epochs on digits (~89% top-1), trained once for every test
    module that starts a stage from a trained dense model."""
    from helpers import stage_params

    from pqd.runner import run_stage

    out = str(tmp_path_factory.mktemp("dense") / "resnet20_dense.pt")
    run_stage(stage_params("", "resnet20", 0.5, epochs=2), digits_cache, out)
    return out
