"""Checkpoints saved by LeRobot's built-in fastwam load in the plugin and give the same actions."""

import json

import pytest
import torch

from lerobot_fastwam.data.camera_layout import current_frame
from lerobot_fastwam.encoders.latent_encoder import LatentEncoder
from lerobot_fastwam.encoders.prompt_encoder import PromptEncoder, in_memory_tokenizer
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.testing.builtin_offline import build_builtin_policy

from ..helpers import TINY, observation, official_payload


def save_as_builtin(builtin, path):
    """Save as LeRobot would without the plugin: the type name points at the built-in while saving."""
    from lerobot.configs import PreTrainedConfig

    registry = PreTrainedConfig._choice_registry
    plugin_cls = registry["fastwam"]
    registry["fastwam"] = type(builtin.config)
    try:
        builtin.save_pretrained(path)
    finally:
        registry["fastwam"] = plugin_cls


@pytest.fixture
def builtin_frozen_encoders(monkeypatch):
    """Serve the built-in's own random VAE / umT5 to the plugin where it would load Wan2.2 from the Hub."""
    holder = {}

    def vae(model_id, dtype):  # as LatentEncoder.pretrained: the VAE's config statistics are its published ones
        module = holder["builtin"].model.vae.vae
        return LatentEncoder(module, (list(module.config.latents_mean), list(module.config.latents_std)))

    def prompt(model_id, dtype, max_length, template, cache_size):
        encoder = holder["builtin"].model.text_encoder.model
        return PromptEncoder(in_memory_tokenizer(), encoder, max_length, template, cache_size)

    monkeypatch.setattr(LatentEncoder, "pretrained", classmethod(lambda cls, *a: vae(*a)))
    monkeypatch.setattr(PromptEncoder, "pretrained", classmethod(lambda cls, *a: prompt(*a)))
    return holder


@pytest.mark.parametrize(("cameras", "state_dim", "action_dim"), [(1, 8, 7), (2, 8, 7), (1, None, 6), (2, None, 14)])
def test_builtin_checkpoint_gives_the_builtins_actions(
    tmp_path, builtin_frozen_encoders, cameras, state_dim, action_dim
):
    builtin = build_builtin_policy(action_dim, state_dim, (32, 64), cameras, seed=cameras, **TINY).eval()
    save_as_builtin(builtin, tmp_path)
    assert "video_dit_config" in json.loads((tmp_path / "config.json").read_text())  # the built-in's format
    builtin_frozen_encoders["builtin"] = builtin

    plugin = FastWAMPolicy.from_pretrained(tmp_path)
    assert plugin.config.chunk_size == 32 and plugin.config.num_video_frames == 9

    batch = observation(plugin.config, batch_size=2, seed=7, tasks=["put the bowl on the plate", "open it"])
    expected = builtin.predict_action_chunk({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
    actual = plugin.predict_action_chunk(batch)
    assert actual.shape == expected.shape == (2, 32, action_dim)
    assert expected.abs().mean() > 0.1  # a real chunk, not a degenerate one
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


def test_official_checkpoint_converts_and_gives_the_builtins_actions(tmp_path, builtin_frozen_encoders):
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_fastwam.tools.cli import main

    builtin = build_builtin_policy(7, 8, (32, 64), 2, seed=11, **TINY).eval()
    builtin_frozen_encoders["builtin"] = builtin
    torch.save(official_payload(builtin), tmp_path / "official.pt")
    stats = {
        "action": {
            "default": {
                "global_min": [-1.0] * 7,
                "global_max": [2.0] * 7,
                "global_mean": [0.0] * 7,
                "global_std": [1.0] * 7,
            }
        },
        "state": {
            "default": {
                "global_min": [-3.0] * 8,
                "global_max": [3.0] * 8,
                "global_mean": [0.0] * 8,
                "global_std": [1.0] * 8,
            }
        },
    }
    (tmp_path / "dataset_stats.json").write_text(json.dumps(stats))
    out = tmp_path / "converted"
    main(
        [
            "convert",
            str(tmp_path / "official.pt"),
            "--dataset-stats",
            str(tmp_path / "dataset_stats.json"),
            "--output",
            str(out),
            "--num-heads",
            "2",
            "--text-max-length",
            "16",
            "--dtype",
            "float32",
            "--image-size",
            "32",
            "64",
            "--camera-keys",
            "observation.images.cam0",
            "observation.images.cam1",
        ]
    )

    plugin = FastWAMPolicy.from_pretrained(out)
    batch = observation(plugin.config, batch_size=2, seed=3)
    expected = builtin.predict_action_chunk({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
    torch.testing.assert_close(plugin.predict_action_chunk(batch), expected, rtol=0, atol=1e-4)

    # The processors carry the official min/max statistics and the LIBERO gripper mapping.
    pre, post = make_pre_post_processors(plugin.config, pretrained_path=str(out))
    raw = {
        "observation.images.cam0": torch.rand(1, 3, 32, 32),
        "observation.images.cam1": torch.rand(1, 3, 32, 32),
        "observation.state": torch.full((1, 8), 3.0),
        "task": "x",
    }
    assert torch.allclose(pre(raw)["observation.state"], torch.ones(1, 8), atol=1e-5)
    action = post(torch.zeros(1, 7))  # normalised 0 -> midpoint 0.5; gripper 0.5 -> sign(-(2*0.5-1)) = 0
    assert torch.allclose(action[0, :6], torch.full((6,), 0.5), atol=1e-5)
    assert {type(s).__name__ for s in post.steps} >= {"FastWAMActionToggleProcessorStep"}


def test_cli_overrides_apply_to_a_translated_builtin_config(tmp_path):
    from lerobot.configs import PreTrainedConfig

    from lerobot_fastwam import FastWAMConfig

    builtin = build_builtin_policy(7, 8, (32, 64), 1, seed=0, **TINY)
    save_as_builtin(builtin, tmp_path)
    config = PreTrainedConfig.from_pretrained(tmp_path, cli_overrides=["--n_action_steps=5", "--device=cpu"])
    assert isinstance(config, FastWAMConfig)
    assert (config.n_action_steps, config.chunk_size, config.num_layers, config.text_max_length) == (5, 32, 2, 16)


def test_untranslatable_builtin_config_is_a_clear_error(tmp_path):
    from lerobot.configs import PreTrainedConfig

    builtin = build_builtin_policy(7, 8, (32, 64), 1, seed=0, **TINY)
    save_as_builtin(builtin, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["text_cfg_scale"] = 3.0
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="classifier-free guidance"):
        PreTrainedConfig.from_pretrained(tmp_path)


def test_robotwin_checkpoint_converts_with_the_top_and_wrists_layout(tmp_path, builtin_frozen_encoders):
    from lerobot.configs import NormalizationMode

    from lerobot_fastwam.tools.cli import main

    builtin = build_builtin_policy(14, 14, (96, 96), 1, seed=5, **TINY).eval()  # built from one tiled image
    builtin_frozen_encoders["builtin"] = builtin
    torch.save(official_payload(builtin), tmp_path / "official.pt")
    field = {f"global_{s}": [0.5] * 14 for s in ("min", "max", "mean")} | {"global_std": [2.0] * 14}
    (tmp_path / "stats.json").write_text(json.dumps({"action": {"default": field}, "state": {"default": field}}))
    out = tmp_path / "robotwin"
    main(
        [
            "convert",
            str(tmp_path / "official.pt"),
            "--dataset-stats",
            str(tmp_path / "stats.json"),
            "--output",
            str(out),
            "--benchmark",
            "robotwin",
            "--image-size",
            "96",
            "96",
            "--num-heads",
            "2",
            "--text-max-length",
            "16",
            "--dtype",
            "float32",
        ]
    )

    plugin = FastWAMPolicy.from_pretrained(out)
    cfg = plugin.config
    assert cfg.camera_layout == "top_and_wrists" and cfg.n_action_steps == 24
    assert cfg.normalization_mapping["ACTION"] == NormalizationMode.MEAN_STD
    assert list(cfg.camera_tile_sizes.values()) == [(64, 96), (32, 48), (32, 48)]
    batch = observation(cfg, batch_size=1, seed=2, tasks=["stack bowls"])
    tiled = current_frame(batch, plugin.config)[:, :, 0]  # top camera above the two wrist cameras
    expected = builtin.predict_action_chunk(
        {"input_image": tiled, "observation.state": batch["observation.state"], "task": batch["task"]}
    )
    torch.testing.assert_close(plugin.predict_action_chunk(batch), expected, rtol=0, atol=1e-4)


def test_lerobot_train_fine_tunes_a_builtin_checkpoint(tmp_path):
    """`lerobot-train --policy.path=<built-in checkpoint>`: config translated, weights mapped, the built-in's
    own processors used (the policy resizes cameras itself), a plugin checkpoint written."""
    from lerobot.datasets import LeRobotDatasetMetadata
    from lerobot.policies.fastwam.processor_fastwam import make_fastwam_pre_post_processors as builtin_processors

    from lerobot_fastwam.testing.synthetic_dataset import make_dataset

    from ..helpers import logged_steps, run_train

    make_dataset(
        tmp_path / "ds", repo_id="local/ftb", episodes=2, frames=40, cameras=("cam0", "cam1"), image_hw=(64, 64)
    )
    meta = LeRobotDatasetMetadata("local/ftb", root=tmp_path / "ds")
    builtin = build_builtin_policy(6, 6, (32, 64), 2, seed=0, text_max_length=128, **TINY)
    save_as_builtin(builtin, tmp_path / "builtin")
    for pipeline in builtin_processors(builtin.config, dataset_stats=meta.stats):
        pipeline.save_pretrained(tmp_path / "builtin")
    result = run_train(
        [
            f"--policy.path={tmp_path / 'builtin'}",
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            # the Wan2.2 VAE / umT5 are not available offline: use the tiny preset's random encoders (text_dim 32)
            "--policy.use_pretrained_wan=false",
            "--policy.random_vae_base_dim=4",
            "--policy.random_text_encoder_layers=1",
            "--dataset.repo_id=local/ftb",
            f"--dataset.root={tmp_path / 'ds'}",
            "--dataset.video_backend=pyav",
            "--steps=2",
            "--batch_size=2",
            "--log_freq=1",
            "--save_freq=2",
            f"--output_dir={tmp_path / 'out'}",
            "--num_workers=0",
            "--env_eval_freq=0",
            "--wandb.enable=false",
        ],
        cwd=tmp_path,
    )
    assert sorted(logged_steps(result)) == [1, 2]
    saved = json.loads((tmp_path / "out/checkpoints/000002/pretrained_model/config.json").read_text())
    assert saved["type"] == "fastwam" and "video_dit_config" not in saved and saved["num_layers"] == 2
