"""Building from a Wan2.2 Diffusers repository (here a tiny local one) and the action-expert init recipe."""

import pytest
import torch
import torch.nn.functional as F

from lerobot_fastwam.checkpoints.weights import action_expert_from_video
from lerobot_fastwam.encoders.frozen import MissingWeightsError
from lerobot_fastwam.encoders.latent_encoder import LatentEncoder
from lerobot_fastwam.encoders.prompt_encoder import PromptEncoder
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.network.video_expert import build_video_expert

from ..helpers import make_config, observation

TINY_VIDEO = dict(num_layers=2, num_heads=2, head_dim=12, ffn_dim=48, in_channels=48, text_dim=32, freq_dim=16)


@pytest.fixture(scope="module")
def wan_repo(tmp_path_factory):
    """A directory laid out like Wan-AI/Wan2.2-TI2V-5B-Diffusers, with tiny random models."""
    root = tmp_path_factory.mktemp("wan22")
    torch.manual_seed(0)
    video = build_video_expert(**TINY_VIDEO)
    video.save_pretrained(root / "transformer")
    LatentEncoder.random(4, 48).codec.save_pretrained(root / "vae")
    prompt = PromptEncoder.random(32, 1, 16, "{task}", 8)
    prompt.encoder.save_pretrained(root / "text_encoder")
    prompt.tokenizer.save_pretrained(root / "tokenizer")
    return root, video


def test_policy_builds_from_a_local_wan_repository(wan_repo):
    root, video = wan_repo
    policy = FastWAMPolicy(make_config(use_pretrained_wan=True, pretrained_model_id=str(root)))
    ours = policy.model.video.state_dict()
    for key, value in video.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    # Frozen encoders come from the repository and are not stored in the policy checkpoint.
    assert not any(k.startswith(("latent_encoder.", "prompt_encoder.")) for k in policy.state_dict())
    # The pretrained VAE keeps its published latent statistics (its config's latents_mean / latents_std).
    vae_config = policy.latent_encoder.codec.config
    assert policy.config.latent_mean == list(vae_config.latents_mean)
    assert policy.config.latent_std == list(vae_config.latents_std)
    chunk = policy.predict_action_chunk(observation(policy.config))
    assert chunk.shape == (2, 32, 7) and torch.isfinite(chunk).all()


def test_action_expert_is_the_interpolated_video_expert(wan_repo):
    root, video = wan_repo
    policy = FastWAMPolicy(make_config(use_pretrained_wan=True, pretrained_model_id=str(root)))
    action = policy.model.action.state_dict()
    src = video.state_dict()
    # A Linear whose input shrinks 24 -> 16 while its output stays 24 (q/k/v project into the shared
    # attention space): bilinear resize with align_corners, times sqrt(24 / 16).
    key = "blocks.0.attn1.to_q.weight"
    expected = F.interpolate(src[key][None, None], size=action[key].shape, mode="bilinear", align_corners=True)[0, 0]
    assert action[key].shape == (24, 16)
    torch.testing.assert_close(action[key], expected * (24 / 16) ** 0.5, rtol=1e-6, atol=1e-6)
    # Output projection back to the action width: only the output dim shrinks, no scaling.
    key = "blocks.1.attn1.to_out.0.weight"
    assert action[key].shape == (16, 24)
    expected = F.interpolate(src[key][None, None], size=(16, 24), mode="bilinear", align_corners=True)[0, 0]
    torch.testing.assert_close(action[key], expected, rtol=1e-6, atol=1e-6)
    # 1-D tensors are interpolated without scaling; same-shape tensors are copied.
    key = "blocks.0.norm2.weight"
    expected = F.interpolate(src[key][None, None], size=16, mode="linear", align_corners=True)[0, 0]
    torch.testing.assert_close(action[key], expected)
    torch.testing.assert_close(action["blocks.0.attn1.norm_q.weight"], src["blocks.0.attn1.norm_q.weight"])
    # The adaLN table [1, 6, dim] shrinks along its last dim, so it is scaled as well.
    key = "blocks.0.scale_shift_table"
    expected = F.interpolate(src[key], size=16, mode="linear", align_corners=True) * (24 / 16) ** 0.5
    torch.testing.assert_close(action[key], expected)


def test_action_init_skips_only_the_action_io_layers():
    video = build_video_expert(**TINY_VIDEO).state_dict()
    shapes = {"action_in.weight": torch.Size([16, 7]), "blocks.0.ffn.net.2.weight": torch.Size([16, 32])}
    out = action_expert_from_video(video, shapes)
    assert set(out) == {"blocks.0.ffn.net.2.weight"}
    with pytest.raises(ValueError, match="no `blocks.9.ffn.net.2.weight`"):
        action_expert_from_video(video, {"blocks.9.ffn.net.2.weight": torch.Size([16, 32])})


def test_missing_subfolder_names_what_is_missing(wan_repo, tmp_path):
    root, _ = wan_repo
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "transformer").symlink_to(root / "transformer")
    with pytest.raises(MissingWeightsError, match=r"(?s)Wan2.2 vae.*has no usable `vae/`"):
        FastWAMPolicy(make_config(use_pretrained_wan=True, pretrained_model_id=str(partial)))
