import warnings

import pytest
import torch

warnings.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


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
