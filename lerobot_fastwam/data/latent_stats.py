"""Per-channel latent statistics of a dataset, for a codec without published ones (the random VAE, the DCT
codec): the policy and ``lerobot-fastwam cache`` normalise latents with them, so both compute them alike.
"""

from __future__ import annotations

import torch

from ..encoders.latent_encoder import LatentEncoder
from .camera_layout import current_frame


@torch.no_grad()
def estimate_latent_stats(
    encoder: LatentEncoder, dataset, config, max_frames: int = 256, batch_size: int = 32
) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the latents of up to ``max_frames`` evenly spaced dataset frames.

    Single frames, i.e. the first latent frame of a clip: the DCT codec's later latent frames (means of 4
    frames) share its statistics; a random Wan VAE's need not, which only its small test models see.

    Frames are tiled as the policy tiles them (``camera_layout.current_frame`` with ``config``). Evenly spaced
    indices make the estimate a function of the dataset alone, so every process and ``lerobot-fastwam cache``
    find the same statistics.
    """
    count = min(max_frames, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size)
    with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global RNG: keep training's
        latents = torch.cat([encoder(current_frame(batch, config).to(encoder.device)).cpu() for batch in loader])
    channels = latents.transpose(0, 1).flatten(1)
    mean, std = channels.mean(dim=1), channels.std(dim=1).clamp(min=1e-6)
    return mean.tolist(), std.tolist()
