"""`lerobot-fastwam demo` end to end at CI size: record, cache, lerobot-train, lerobot-eval, probes, report."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("metaworld")

from lerobot_fastwam.sim.metaworld import make_env  # noqa: E402


def test_the_env_hands_the_policy_what_the_recorder_records(tmp_path):
    from lerobot.datasets import LeRobotDataset

    from lerobot_fastwam.sim.metaworld import record_expert_dataset

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


def test_the_around_wall_expert_has_two_ways_and_their_average_fails():
    """Each side reaches the goal round its own end of the wall; the average of the two experts' actions (what
    a policy that averages modes does) stalls in front of the wall."""
    from lerobot_fastwam.sim.metaworld import AroundWallExpert, record_expert_dataset

    env = make_env("reach-wall-v3")

    def run(act, steps=env._max_episode_steps):
        env.reset(seed=3)
        xs = []
        for _ in range(steps):
            _, _, terminated, truncated, info = env.step(act(env._raw_obs))
            xs.append(env._raw_obs[0])
            if terminated or truncated:
                break
        return bool(info.get("is_success")), min(xs), max(xs)

    left, right = AroundWallExpert(-1), AroundWallExpert(1)
    try:
        left_success, left_min, _ = run(left)
        right_success, _, right_max = run(right)
        mean_success, mean_min, mean_max = run(lambda obs: (left(obs) + right(obs)) / 2, steps=300)
    finally:
        env.close()
    assert left_success and left_min < -0.05  # round the wall's left end (x = -0.02)
    assert right_success and right_max > 0.25  # round its right end (x = 0.22)
    assert not mean_success and -0.02 < mean_min and mean_max < 0.22  # never round either end
    with pytest.raises(ValueError, match="reach-wall-v3 only"):
        record_expert_dataset(["reach-v3"], "unused", "local/x", 1, expert="around-wall")


@pytest.mark.skipif(os.geteuid() != 0, reason="the video encoder switches to real-time scheduling only as root")
def test_the_demo_runs_its_children_in_normal_scheduling_after_recording(tmp_path):
    """Recording as root makes the recording process real-time (SVT-AV1); the demo's training and evaluation
    children must not inherit that. Run in a fresh interpreter so this test process stays as it is."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from lerobot_fastwam.tools import demo\n"
        "from lerobot_fastwam.sim.metaworld import record_expert_dataset\n"
        "out = Path(sys.argv[1])\n"
        "record_expert_dataset(['reach-v3'], out / 'raw', 'local/raw', 1, progress=False)\n"
        "print('encoder', os.sched_getscheduler(0))\n"
        "demo.record(out / 'data', 'local/reach', ['reach-v3'], 1, seed=0)\n"
        "print('after_record', os.sched_getscheduler(0))\n"
        "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # as if the recorder had left it so\n"
        "child = [sys.executable, '-c', 'import os; print(\"child\", os.sched_getscheduler(0))']\n"
        "demo.run_logged(child, out / 'child.log', 'child')\n"
        "print((out / 'child.log').read_text().splitlines()[-1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("encoder", "after", "child")))
    assert lines["encoder"] == str(os.SCHED_FIFO)  # what the demo has to undo
    assert lines["after_record"] == lines["child"] == str(os.SCHED_OTHER)


def test_demo_runs_end_to_end_and_writes_the_report(demo_run):
    out, report = demo_run
    assert report["tasks"] == ["button-press-topdown-v3"] and report["n_eval_episodes"] == 2
    assert 0.0 <= report["success_rate"] <= 1.0 and report["train_steps"] == 250
    assert report["per_task_success"] == {"button-press-topdown-v3": report["success_rate"]}
    assert report["probes"]["n_frames"] == 48 and report["dataset_episodes"] == 8
    assert report["train_seconds"] > 0 and report["eval_seconds"] > 0
    assert (out / "data" / "demonstrations" / "fastwam_cache" / "manifest.json").exists()
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert report["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").exists()
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["video_codec"] == "dct" and len(config["latent_mean"]) == 48  # data statistics saved
    assert config["num_inference_steps"] == 1 and config["step_size_conditioning"] is True
    assert report["num_inference_steps"] == 1 and report["chunk_ms"] > 0
    assert json.loads((out / "eval" / "eval_info.json").read_text())["overall"]["n_episodes"] == 2
    for name in ("report.md", "training_curve.png", "future_strip.png", "eval_episode.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert "![training curve](training_curve.png)" in (out / "report.md").read_text()


def test_the_trained_policy_sees_the_image_and_beats_the_mean_action(demo_run):
    """The failure this demo exists to catch: a policy that acts on the state alone (image dependence about
    0) or predicts the average action. Measured on held-out episodes (other seeds)."""
    _, report = demo_run
    probes = report["probes"]
    assert probes["policy_mse"] < 0.5 * probes["mean_action_mse"], probes
    assert report["image_dependence"] >= 0.3, probes
