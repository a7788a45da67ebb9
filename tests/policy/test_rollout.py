"""LeRobot's own ``lerobot-rollout`` drives a (simulated) robot with the plugin, in sync and in RTC mode."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

from ..helpers import make_config

SIM = Path(__file__).parents[1] / "sim"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random policy for the sim arm: 6 joints, front + wrist 640x480 cameras (centre-cropped)."""
    path = tmp_path_factory.mktemp("ckpt")
    config = make_config(action_dim=6, state_dim=6, cameras=2, n_action_steps=5)
    for camera in ("cam0", "cam1"):
        del config.input_features[f"observation.images.{camera}"]
    for camera in ("front", "wrist"):
        config.input_features[f"observation.images.{camera}"] = PolicyFeature(FeatureType.VISUAL, (3, 480, 640))
    torch.manual_seed(0)
    policy = FastWAMPolicy(config)
    stats = {
        "observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)},
        "action": {"mean": torch.zeros(6), "std": torch.ones(6), "min": -torch.ones(6), "max": torch.ones(6)},
    }
    policy.save_pretrained(path)
    pre, post = make_fastwam_pre_post_processors(config, stats)
    pre.save_pretrained(path)
    post.save_pretrained(path)
    return path


@pytest.mark.parametrize("inference", ["sync", "rtc"])
def test_lerobot_rollout_drives_a_robot_with_640x480_cameras(checkpoint, tmp_path, inference):
    log = tmp_path / "actions.jsonl"
    args = [
        "--strategy.type=base",
        f"--policy.path={checkpoint}",
        "--policy.device=cpu",
        "--robot.type=fastwam_sim_arm",
        f"--robot.action_log={log}",
        "--task=pick up the cube",
        "--fps=10",
        "--duration=4",
        f"--inference.type={inference}",
        "--return_to_initial_position=false",  # every logged action is then the policy's, not LeRobot's way home
    ]
    if inference == "rtc":
        args.append("--inference.rtc.execution_horizon=5")
    result = subprocess.run(
        [sys.executable, str(SIM / "run_rollout.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    actions = [json.loads(line)["action"] for line in log.read_text().splitlines()]
    assert len(actions) >= 10, result.stderr[-2000:]
    assert all(math.isfinite(v) and abs(v) <= 1.1 + 1e-6 for a in actions for v in a)  # finite, clamped to [-1.1, 1.1]
