import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin)

from .helpers import make_policy  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def policy():
    return make_policy()
