"""Presets fill what the user left unset; explicit values always win; the layout arithmetic is the paper's."""

import pytest

from lerobot_fastwam.configuration_fastwam import FastWAMConfig

from .conftest import make_config


def test_default_is_the_paper_model():
    cfg = FastWAMConfig()
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.video_ffn_dim) == (30, 24, 128, 14336)
    assert (cfg.action_hidden_dim, cfg.action_ffn_dim, cfg.text_dim) == (1024, 4096, 4096)
    assert cfg.image_size == (224, 448) and cfg.use_pretrained_wan and cfg.dtype == "bfloat16"
    assert cfg.observation_delta_indices == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    assert cfg.action_delta_indices == list(range(32))
    assert cfg.num_latent_frames == 3 and cfg.latent_grid == (14, 28) and cfg.tokens_per_latent_frame == 98


def test_explicit_values_win_over_the_preset():
    cfg = FastWAMConfig(preset="tiny", dtype="bfloat16", num_layers=3)
    assert cfg.dtype == "bfloat16" and cfg.num_layers == 3 and cfg.num_heads == 2


def test_unknown_preset_and_bad_layouts_are_rejected():
    with pytest.raises(ValueError, match="Unknown Fast-WAM preset"):
        FastWAMConfig(preset="huge")
    with pytest.raises(ValueError, match="multiple of 32"):
        FastWAMConfig(preset="tiny", image_size=(40, 64))
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        FastWAMConfig(preset="tiny", num_video_frames=8)


def test_two_cameras_share_the_width():
    cfg = make_config(cameras=2)
    assert cfg.camera_image_size == (32, 32)
    assert cfg.ordered_camera_keys == ["observation.images.cam0", "observation.images.cam1"]
