"""A frozen video codec with the Wan2.2 VAE's interface that needs no downloaded weights.

Wan2.2's VAE turns a clip into 48-channel latents, 16x smaller in space and 4x in time with the first frame
encoded alone. Without its weights (offline, CPU demos, tests) a randomly initialised VAE has that shape but
scrambles the image: its latents barely carry where things are. This codec keeps the shape and keeps the
image: it is JPEG's idea at the VAE's compression. Each 16x16 block of a frame is projected on the lowest
frequencies of the 2D DCT, in an orthonormal colour space (luminance and two opponent colours): 32
coefficients of luminance and 8 of each colour, 48 channels per block. In time, the first frame stands alone
and each later group of 4 frames is averaged (causal, as Wan's). The 48 filters are orthonormal, so decoding
(for looking at predicted futures) is the transposed projection, and encoding a decoded clip gives the same
latents back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 16  # pixels per latent position, as the Wan2.2 VAE
TEMPORAL = 4  # frames per latent frame after the first
LUMA_COEFFICIENTS = 32
COLOR_COEFFICIENTS = 8  # per opponent-colour channel; 32 + 2 * 8 = 48 channels

# Rows: luminance, red-green, yellow-blue; orthonormal, so the colour transform keeps the codec orthonormal.
_COLOR = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ],
    dtype=torch.float64,
)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``[n, n]``: row ``u`` is the ``u``-th cosine basis vector."""
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n))
    basis[0] /= math.sqrt(2)
    return basis * math.sqrt(2 / n)


def zigzag(n: int) -> list[tuple[int, int]]:
    """2D frequencies ``(u, v)`` of an ``n x n`` block from lowest to highest, in JPEG's zigzag order."""

    def rank(uv: tuple[int, int]) -> tuple[int, int]:
        diagonal = uv[0] + uv[1]
        return diagonal, uv[0] if diagonal % 2 else uv[1]

    return sorted(((u, v) for u in range(n) for v in range(n)), key=rank)


def codec_filters() -> torch.Tensor:
    """The 48 orthonormal analysis filters ``[48, 3, 16, 16]`` (RGB in, one coefficient out each)."""
    dct = dct_matrix(BLOCK)
    frequencies = zigzag(BLOCK)
    filters = []
    for color, count in ((0, LUMA_COEFFICIENTS), (1, COLOR_COEFFICIENTS), (2, COLOR_COEFFICIENTS)):
        for u, v in frequencies[:count]:
            pattern = torch.outer(dct[u], dct[v])  # [16, 16]
            filters.append(_COLOR[color][:, None, None] * pattern)
    return torch.stack(filters).float()


class DCTVideoCodec(nn.Module):
    """Clips ``[B, 3, 1 + 4k, H, W]`` in [-1, 1] <-> latents ``[B, 48, 1 + k, H / 16, W / 16]``."""

    latent_channels = LUMA_COEFFICIENTS + 2 * COLOR_COEFFICIENTS

    def __init__(self):
        super().__init__()
        self.register_buffer("filters", codec_filters(), persistent=False)

    @staticmethod
    def _group_in_time(frames: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 1 + 4k, H, W]`` -> ``[B, 3, 1 + k, H, W]``: the first frame, then the mean of each 4."""
        first, rest = frames[:, :, :1], frames[:, :, 1:]
        if rest.shape[2] % TEMPORAL:
            raise ValueError(f"The codec encodes 1 + 4k frames, got {frames.shape[2]}.")
        if rest.shape[2] == 0:
            return first
        return torch.cat([first, rest.unflatten(2, (-1, TEMPORAL)).mean(dim=3)], dim=2)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        grouped = self._group_in_time(frames.float())
        batch, _, num, height, width = grouped.shape
        if height % BLOCK or width % BLOCK:
            raise ValueError(f"Frame size {height}x{width} is not a multiple of {BLOCK}.")
        flat = grouped.transpose(1, 2).flatten(0, 1)  # [B * F, 3, H, W]
        latents = F.conv2d(flat, self.filters, stride=BLOCK)
        return latents.unflatten(0, (batch, num)).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> ``[B, 3, 1 + 4k, H, W]`` in [-1, 1] (each later latent frame shown for its 4 frames)."""
        batch, _, num = latents.shape[:3]
        flat = latents.float().transpose(1, 2).flatten(0, 1)
        frames = F.conv_transpose2d(flat, self.filters, stride=BLOCK).unflatten(0, (batch, num)).transpose(1, 2)
        frames = torch.cat([frames[:, :, :1], frames[:, :, 1:].repeat_interleave(TEMPORAL, dim=2)], dim=2)
        return frames.clamp(-1.0, 1.0)
