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
