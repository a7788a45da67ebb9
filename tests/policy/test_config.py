"""Presets fill what the user left unset; explicit values always win; the layout arithmetic is the paper's."""

import pytest

from lerobot_fastwam.configuration_fastwam import FastWAMConfig

from ..helpers import make_config


def test_default_is_the_paper_model():
    cfg = FastWAMConfig()
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.video_ffn_dim) == (30, 24, 128, 14336)
    assert (cfg.action_hidden_dim, cfg.action_ffn_dim, cfg.text_dim) == (1024, 4096, 4096)
    assert cfg.image_size == (224, 448) and cfg.use_pretrained_wan and cfg.dtype == "bfloat16"
    assert cfg.observation_delta_indices == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    assert cfg.action_delta_indices == list(range(32))
    assert cfg.num_latent_frames == 3


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
    assert cfg.camera_tile_sizes == {"observation.images.cam0": (32, 32), "observation.images.cam1": (32, 32)}


def test_robotwin_layout_puts_the_top_camera_above_two_wrists():
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {
        "observation.images.cam_high": PolicyFeature(FeatureType.VISUAL, (3, 480, 600)),
        "observation.images.left_wrist": PolicyFeature(FeatureType.VISUAL, (3, 240, 600)),
        "observation.images.right_wrist": PolicyFeature(FeatureType.VISUAL, (3, 240, 300)),
    }
    cfg = make_config(camera_layout="top_and_wrists", image_size=(384, 320), cameras=1)
    cfg.input_features = {**inputs, "observation.state": cfg.input_features["observation.state"]}
    cfg.camera_keys = list(inputs)
    assert list(cfg.camera_tile_sizes.values()) == [(256, 320), (128, 160), (128, 160)]
    cfg.validate_features()  # 240x600 is 2.5:1, its tile 1.25:1: fitted by cropping (test_camera_fit.py)
    with pytest.raises(ValueError, match="needs 3 cameras"):
        _ = make_config(camera_layout="top_and_wrists", image_size=(384, 320), cameras=2).camera_tile_sizes


def test_codec_and_latent_statistics_are_checked():
    with pytest.raises(ValueError, match="video_codec must be one of"):
        FastWAMConfig(preset="cpu", video_codec="jpeg")
    with pytest.raises(ValueError, match="both latent_mean and latent_std"):
        FastWAMConfig(preset="cpu", latent_mean=[0.0] * 48)
    with pytest.raises(ValueError, match="48 values each"):
        FastWAMConfig(preset="cpu", latent_mean=[0.0] * 16, latent_std=[1.0] * 16)
    with pytest.raises(ValueError, match="finite and positive"):
        FastWAMConfig(preset="cpu", latent_mean=[0.0] * 48, latent_std=[0.0] * 48)
    cfg = FastWAMConfig(preset="cpu")
    assert cfg.video_codec == "dct" and cfg.image_size == (128, 128) and not cfg.use_pretrained_wan
    assert FastWAMConfig().video_codec == "wan2.2_vae"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_inference_steps", 0, ">= 1"),  # would return the raw noise as actions
        ("timestep_shift", -1.0, "> 0"),  # would give NaN actions
        ("timestep_shift", float("nan"), "finite"),
        ("n_action_steps", 0, ">= 1"),  # would crash select_action with an empty deque
        ("n_action_steps", 40, "cannot exceed chunk_size"),
        ("text_max_length", 0, ">= 1"),
        ("text_cache_size", 0, ">= 1"),
        ("video_frame_stride", 0, ">= 1"),
        ("chunk_size", 2.5, "integer"),
        ("video_loss_weight", -1.0, ">= 0"),
        ("action_clamp_margin", -0.1, ">= 0"),
        ("optimizer_lr", 0.0, "> 0"),
        ("optimizer_betas", (0.9, 1.0), r"\[0, 1\)"),
        ("n_obs_steps", 2, "current frame only"),
        ("image_size", (0, 64), "positive multiple of 32"),
    ],
)
def test_values_that_make_no_sense_are_refused_with_the_allowed_range(field, value, match):
    with pytest.raises(ValueError, match=match):
        FastWAMConfig(preset="tiny", **{field: value})


def test_both_loss_weights_zero_is_refused_and_clamping_can_be_switched_off():
    with pytest.raises(ValueError, match="nothing would be trained"):
        FastWAMConfig(preset="tiny", video_loss_weight=0.0, action_loss_weight=0.0)
    assert FastWAMConfig(preset="tiny", action_clamp_margin=None).action_clamp_margin is None
