import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin)
from lerobot_fastwam.tools.demo import normal_scheduling  # noqa: E402

from .helpers import make_policy  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def policy():
    return make_policy()


@pytest.fixture(autouse=True)
def _time_sharing_scheduling():
    """A test that records video as root leaves this process real-time (``normal_scheduling``): undo it, so the
    rest of the suite does not run real-time on a 2-core machine."""
    yield
    normal_scheduling()
