"""End to end: LeRobot's own `lerobot-train` trains the plugin on a local dataset, checkpoints, and resumes.

Runs LeRobot's training script in subprocesses (each pays ~10 s of torch import on CPU), offline, on a
synthetic two-camera LeRobotDataset v3 written with video. About 30 s in all on 2 CPU cores.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lerobot_fastwam.testing.synthetic_dataset import make_dataset

from ..helpers import logged_steps, run_train

REPO_ID = "local/fastwam_train_test"


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("lerobot_train")
    data_root = work / "dataset"
    make_dataset(data_root, repo_id=REPO_ID, episodes=2, frames=48, cameras=("front", "wrist"), image_hw=(64, 64))
    output_dir = work / "outputs"
    result = run_train(
        [
            "--policy.type=fastwam",
            "--policy.preset=tiny",
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            f"--dataset.repo_id={REPO_ID}",
            f"--dataset.root={data_root}",
            "--dataset.video_backend=pyav",
            "--steps=4",
            "--batch_size=2",
            "--save_freq=2",
            "--log_freq=1",
            f"--output_dir={output_dir}",
            "--num_workers=0",
            "--env_eval_freq=0",
            "--wandb.enable=false",
        ],
        cwd=work,
    )
    return {"work": work, "output_dir": output_dir, "result": result}


def test_train_writes_plugin_checkpoints(train_run):
    checkpoints = train_run["output_dir"] / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if p.name != "last") == ["000002", "000004"]
    assert (checkpoints / "last").resolve().name == "000004"
    for step in ("000002", "000004"):
        model_dir = checkpoints / step / "pretrained_model"
        for name in (
            "model.safetensors",
            "config.json",
            "train_config.json",
            "policy_preprocessor.json",
            "policy_postprocessor.json",
        ):
            assert (model_dir / name).is_file(), f"{model_dir / name} missing"
        assert list(model_dir.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
        assert list(model_dir.glob("policy_postprocessor_step_*_unnormalizer_processor.safetensors"))
        assert (checkpoints / step / "training_state" / "training_step.json").is_file()

    model_dir = checkpoints / "last" / "pretrained_model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["type"] == "fastwam"
    # The plugin's config, not LeRobot's built-in one (which has `action_horizon`, no `video_frame_stride`).
    assert config["video_frame_stride"] == 4 and config["chunk_size"] == 32
    assert config["image_size"] == [32, 64] and config["num_layers"] == 2  # the tiny preset, resolved
    assert "action_horizon" not in config
    assert set(config["input_features"]) == {
        "observation.state",
        "observation.images.front",
        "observation.images.wrist",
    }
    train_config = json.loads((model_dir / "train_config.json").read_text())
    assert train_config["policy"]["type"] == "fastwam"
    assert train_config["policy"]["video_frame_stride"] == 4
    pre = json.loads((model_dir / "policy_preprocessor.json").read_text())
    names = [step["registry_name"] for step in pre["steps"]]
    assert "fastwam_plugin_camera_resize" in names  # the plugin's own step
    assert "device_processor" in names and "rename_observations_processor" in names
    resize = pre["steps"][names.index("fastwam_plugin_camera_resize")]["config"]["camera_sizes"]
    assert resize == {"observation.images.front": [32, 32], "observation.images.wrist": [32, 32]}

    weights = load_file(str(model_dir / "model.safetensors"))
    # Only the trained network: the frozen VAE / umT5 (here the tiny preset's fixed-seed random ones) are
    # rebuilt on load, never stored.
    assert weights and all(key.startswith("model.") for key in weights)
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_train_logs_finite_losses(train_run):
    steps = logged_steps(train_run["result"])
    assert sorted(steps) == [1, 2, 3, 4], steps
    for step, losses in steps.items():
        assert all(math.isfinite(v) and v >= 0 for v in losses), (step, losses)
        # loss = video_loss_weight * loss_video + action_loss_weight * loss_action (both 1.0), 3 decimals.
        assert losses[0] == pytest.approx(losses[1] + losses[2], abs=5e-3), (step, losses)


def test_resume_continues_to_step_6(train_run):
    checkpoints = train_run["output_dir"] / "checkpoints"
    config_path = checkpoints / "last" / "pretrained_model" / "train_config.json"
    result = run_train(
        ["--resume=true", f"--config_path={config_path}", "--steps=6"],
        cwd=train_run["work"],
    )
    log = result.stdout + result.stderr
    assert "Resuming" in log
    steps = logged_steps(result)
    assert sorted(steps) == [5, 6], steps  # continues from step 4, not from 0
    assert all(math.isfinite(v) for losses in steps.values() for v in losses)

    assert (checkpoints / "last").resolve().name == "000006"
    state = json.loads((checkpoints / "000006" / "training_state" / "training_step.json").read_text())
    assert state["step"] == 6
    config = json.loads((checkpoints / "000006" / "pretrained_model" / "config.json").read_text())
    assert config["type"] == "fastwam" and config["video_frame_stride"] == 4

    before = load_file(str(checkpoints / "000004" / "pretrained_model" / "model.safetensors"))
    after = load_file(str(checkpoints / "000006" / "pretrained_model" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "resumed training changed no weight"


def test_small_gpu_recipe_flags_train_from_the_cache_with_8bit_states(tmp_path):
    """The 24 GB recipe of docs/training_recipes.md, as flags of LeRobot's own lerobot-train: the latent cache
    (VAE and umT5 never built), a frozen video expert, gradient checkpointing, 8-bit AdamW states."""
    pytest.importorskip("bitsandbytes")
    from lerobot_fastwam.tools.cli import main as fastwam_cli

    data_root = tmp_path / "dataset"
    make_dataset(data_root, repo_id=REPO_ID, episodes=2, frames=24, cameras=("front", "wrist"), image_hw=(64, 64))
    policy_flags = ["--policy.preset=tiny", "--policy.device=cpu"]
    fastwam_cli(["cache", f"--dataset.repo_id={REPO_ID}", f"--dataset.root={data_root}", *policy_flags])
    output_dir = tmp_path / "outputs"
    result = run_train(
        [
            "--policy.type=fastwam",
            *policy_flags,
            "--policy.push_to_hub=false",
            "--policy.freeze_video_expert=true",
            "--policy.gradient_checkpointing=true",
            "--policy.optimizer_type=adamw_8bit",
            "--policy.action_ffn_dim=256",  # FFN weights of 16 x 256: bitsandbytes keeps 8-bit states from 4096 up
            f"--dataset.repo_id={REPO_ID}",
            f"--dataset.root={data_root}",
            "--dataset.video_backend=pyav",
            "--steps=2",
            "--batch_size=2",
            "--save_freq=1",
            "--log_freq=1",
            f"--output_dir={output_dir}",
            "--num_workers=0",
            "--env_eval_freq=0",
            "--wandb.enable=false",
        ],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert "training from the latent cache" in log and "(the VAE and umT5 are not loaded)" in log
    assert sorted(logged_steps(result)) == [1, 2]
    first, second = (
        load_file(str(output_dir / "checkpoints" / step / "pretrained_model" / "model.safetensors"))
        for step in ("000001", "000002")
    )
    video = [k for k in first if k.startswith("model.mot.video.")]
    action = [k for k in first if k.startswith("model.mot.action.")]
    assert video and all(torch.equal(first[k], second[k]) for k in video)  # frozen
    assert any(not torch.equal(first[k], second[k]) for k in action)  # trained
    state = load_file(str(output_dir / "checkpoints" / "000002" / "training_state" / "optimizer_state.safetensors"))
    moments = {t.dtype for k, t in state.items() if k.endswith(("/state1", "/state2"))}
    assert torch.uint8 in moments  # 8-bit moments, saved by LeRobot's own code
