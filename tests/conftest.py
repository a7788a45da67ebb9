import json
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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One CI-sized demo: 8 scripted episodes, 250 training steps, 2 evaluation episodes (about 3 minutes),
    trained with the few-step objective and sampling each chunk in one step. Shared by the demo's tests and the
    deployment tests on the simulated arm (``tests/policy/test_sim_arm.py``)."""
    pytest.importorskip("metaworld")
    from lerobot_fastwam.tools.cli import main  # noqa: PLC0415

    out = tmp_path_factory.mktemp("demo") / "run"
    main(
        [
            "demo",
            "--task",
            "button-press-topdown-v3",
            "--output",
            str(out),
            "--episodes",
            "8",
            "--steps",
            "250",
            "--batch-size",
            "16",
            "--lr",
            "1e-3",
            "--eval-episodes",
            "2",
            "--episode-length",
            "150",
            "--probe-frames",
            "48",
            "--policy.action_consistency_weight=1",
            "--policy.num_inference_steps=1",
        ]
    )
    return out, json.loads((out / "report.json").read_text())
