"""`lerobot-eval --policy.save_predicted_video=true` writes the imagined video next to the rollout video.

LeRobot's own eval script in a subprocess (about 15 s of imports and env setup on 2 CPU cores), on the CPU
Meta-World env, with a tiny random policy saved with Meta-World's features: no training needed to check the
files.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

pytest.importorskip("metaworld")

from lerobot_fastwam.configuration_fastwam import FastWAMConfig  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors  # noqa: E402

EPISODE_LENGTH = 15  # two chunks of n_action_steps=10
TIMEOUT_S = 300


def _metaworld_checkpoint(path, variant: str) -> FastWAMConfig:
    """A tiny random policy with ``--env.type=metaworld_cpu``'s features, saved with its processors."""
    config = FastWAMConfig(
        preset="tiny",
        variant=variant,
        image_size=(32, 32),
        num_inference_steps=2,
        device="cpu",
        input_features={
            "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 128, 128)),
            "observation.state": PolicyFeature(FeatureType.STATE, (4,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
    )
    torch.manual_seed(0)
    policy = FastWAMPolicy(config)
    policy.save_pretrained(path)
    zeros, ones = torch.zeros(4), torch.ones(4)
    stats = {
        "observation.state": {"mean": zeros, "std": ones},
        "action": {"mean": zeros, "std": ones, "min": -ones, "max": ones},
    }
    for pipeline in make_fastwam_pre_post_processors(config, stats):
        pipeline.save_pretrained(path)
    return config


def test_lerobot_eval_writes_the_predicted_video(tmp_path):
    """Fast-WAM, the variant that imagines the future only on request (Joint and IDM keep the future their
    sampler generates through the same hook: ``test_variants.py``)."""
    import av

    config = _metaworld_checkpoint(tmp_path / "policy", "fastwam")
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "lerobot.scripts.lerobot_eval",
        f"--policy.path={tmp_path / 'policy'}",
        "--policy.device=cpu",
        "--policy.save_predicted_video=true",
        "--env.type=metaworld_cpu",
        "--env.task=reach-v3",
        f"--env.episode_length={EPISODE_LENGTH}",
        "--eval.n_episodes=1",
        "--eval.batch_size=1",
        "--eval.use_async_envs=false",
        "--seed=0",
        f"--output_dir={out}",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_LEROBOT_HOME=str(tmp_path / "lerobot_home"))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]

    rollout = sorted(out.glob("videos/*/eval_episode_0.mp4"))
    predicted = sorted(out.glob("videos/*/pred_episode_0.mp4"))
    assert len(rollout) == 1 and predicted == [rollout[0].with_name("pred_episode_0.mp4")]  # side by side
    with av.open(str(predicted[0])) as container:
        fps = container.streams.video[0].average_rate
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    chunks = -(-EPISODE_LENGTH // config.n_action_steps)
    hold = config.n_action_steps  # each imagined frame shown for one replanning period
    assert len(frames) == chunks * (config.num_video_frames - 1) * hold  # per chunk: 8 imagined frames
    assert fps == 80 and fps / hold <= 10  # Meta-World's rate: 8 pictures a second, not 80
    height, width = config.image_size
    band = frames.shape[1] - height
    assert band > 0 and frames.shape[2] == 2 * width  # now | imagined, under their labels
    pictures = frames.reshape(-1, hold, *frames.shape[1:]).astype(np.int16)
    assert np.abs(pictures - pictures[:, :1]).mean() < 2  # held (up to H.264's loss)
    assert frames[:, :band].max() > 128  # white label text on the black band
