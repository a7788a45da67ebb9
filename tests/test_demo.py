"""`lerobot-fastwam demo` end to end at CI size: record, cache, lerobot-train, lerobot-eval, probes, report."""

import json

import pytest
import torch

pytest.importorskip("metaworld")

from lerobot_fastwam.cli import main  # noqa: E402
from lerobot_fastwam.metaworld_env import make_env  # noqa: E402


def test_the_env_hands_the_policy_what_the_recorder_records(tmp_path):
    from lerobot.datasets import LeRobotDataset

    from lerobot_fastwam.metaworld_env import record_expert_dataset

    dataset = record_expert_dataset(["reach-v3"], tmp_path / "data", "local/reach", episodes_per_task=1, seed=7)
    assert dataset.meta.total_episodes == 1 and dataset.meta.fps == 80
    item = LeRobotDataset("local/reach", root=tmp_path / "data")[0]
    env = make_env("reach-v3")
    obs, _ = env.reset(seed=7)
    env.close()
    assert item["observation.image"].shape == (3, 128, 128) and item["observation.state"].shape == (4,)
    assert item["task"] == env.task_description == "Reach a goal position"
    # The recorded first frame is the env's first observation (video compression aside).
    recorded = item["observation.image"].permute(1, 2, 0) * 255
    assert (recorded - torch.from_numpy(obs["pixels"].copy()).float()).abs().mean() < 6
    torch.testing.assert_close(item["observation.state"], torch.from_numpy(obs["agent_pos"]).float())


def test_demo_runs_end_to_end_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    main(["demo", "--task", "button-press-topdown-v3", "--output", str(out), "--episodes", "2", "--steps", "3",
          "--batch-size", "4", "--eval-episodes", "1", "--episode-length", "20", "--probe-frames", "8"])
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == ["button-press-topdown-v3"] and report["n_eval_episodes"] == 1
    assert 0.0 <= report["success_rate"] <= 1.0 and report["train_steps"] == 3
    assert report["probes"]["n_frames"] == 8 and report["image_dependence"] >= 0.0
    assert report["mean_action_mse"] > 0 and report["train_seconds"] > 0 and report["eval_seconds"] > 0
    assert (out / "data" / "demonstrations" / "fastwam_cache" / "manifest.json").exists()
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert report["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").exists()
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["video_codec"] == "dct" and len(config["latent_mean"]) == 48  # data statistics saved
    assert json.loads((out / "eval" / "eval_info.json").read_text())["overall"]["n_episodes"] == 1
    for name in ("report.md", "training_curve.png", "future_strip.png", "eval_episode.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert "![training curve](training_curve.png)" in (out / "report.md").read_text()
