"""Frames <-> latents: the Wan2.2 VAE from a Diffusers repository (``vae/``), a small random one with its layout
(tests, offline demos), or the weight-free DCT codec (``dct_codec.py``). Never stored in a policy checkpoint.
"""

from __future__ import annotations

import itertools

import torch
from diffusers import AutoencoderKLWan
from torch import nn

from .dct_codec import DCTVideoCodec
from .frozen import FROZEN_ENCODER_LOCK, fixed_seed, load_or_explain


def build_latent_encoder(config) -> LatentEncoder:
    """The config's frame codec: Wan2.2's VAE from ``pretrained_model_id``, the small random one, or the DCT codec."""
    if config.video_codec == "dct":
        return LatentEncoder.dct()
    if config.use_pretrained_wan:
        return LatentEncoder.pretrained(config.pretrained_model_id, config.torch_dtype)
    return LatentEncoder.random(config.random_vae_base_dim, config.latent_channels)


class LatentEncoder(nn.Module):
    """Frames in [0, 1] <-> raw (unnormalised) latents of a frozen codec: the Wan2.2 VAE (posterior mode) or
    the DCT codec. ``published_stats`` are the codec's own per-channel (mean, std), when it has them (the
    pretrained Wan2.2 VAE); the policy normalises with those or with statistics of its training data."""

    def __init__(self, codec: nn.Module, published_stats: tuple[list[float], list[float]] | None = None):
        super().__init__()
        self.codec = codec.requires_grad_(False).eval()
        self.published_stats = published_stats

    @classmethod
    def pretrained(cls, model_id: str, dtype: torch.dtype) -> LatentEncoder:
        vae = load_or_explain(AutoencoderKLWan.from_pretrained, model_id, "vae", torch_dtype=dtype)
        return cls(vae, (list(vae.config.latents_mean), list(vae.config.latents_std)))

    @classmethod
    def random(cls, base_dim: int, z_dim: int) -> LatentEncoder:
        """Wan2.2 VAE layout (16x spatial, 4x temporal, residual, patch 2) at a small width, fixed seed."""
        with fixed_seed():
            vae = random_wan_vae(base_dim, z_dim)
        return cls(vae)  # random weights have no published statistics: the policy uses the data's

    @classmethod
    def dct(cls) -> LatentEncoder:
        return cls(DCTVideoCodec())

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.codec.parameters(), self.codec.buffers())).device

    @property
    def is_vae(self) -> bool:
        return isinstance(self.codec, AutoencoderKLWan)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [0, 1] -> raw latents ``[B, 48, 1 + (T - 1) // 4, H / 16, W / 16]`` (fp32)."""
        pixels = frames * 2.0 - 1.0
        if not self.is_vae:
            return self.codec.encode(pixels)
        weight = next(self.codec.parameters())
        with FROZEN_ENCODER_LOCK:  # the Wan VAE keeps its causal feature cache on the module during a call
            return self.codec.encode(pixels.to(weight.dtype)).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> frames ``[B, 3, T, H, W]`` in [0, 1] (to look at predicted futures)."""
        if self.is_vae:
            weight = next(self.codec.parameters())
            with FROZEN_ENCODER_LOCK:
                pixels = self.codec.decode(latents.to(weight.dtype)).sample.float()
        else:
            pixels = self.codec.decode(latents)
        return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0)


def random_wan_vae(base_dim: int, z_dim: int) -> AutoencoderKLWan:
    """The Wan2.2 VAE's layout (16x spatial, 4x temporal, residual, patch 2) at a small width, random weights
    from the global RNG (the plugin's offline encoder, and LeRobot's built-in built offline in ``testing``)."""
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,  # placeholders of the right length
    ).eval()
