"""The video expert is diffusers' ``WanTransformer3DModel`` itself; these functions run its input and output
stages (patch embedding, RoPE, timestep and text conditioning, output head) around the MoT layer loop.

Timesteps are per latent frame (``[B, F]``): Wan2.2's image-to-video mode gives every token of the clean first
frame t=0, and all tokens of a frame share one timestep, so adaLN modulation is kept per frame and broadcast
over the frame's tokens instead of materialising a ``[B, tokens, 6, dim]`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from .block_call import VideoTransformerBlock


@dataclass
class VideoEmbedding:
    tokens: torch.Tensor  # [B, F * tokens_per_frame, dim]
    rope: torch.Tensor  # complex rotations [1, tokens, 1, head_dim / 2]
    temb: torch.Tensor  # [B, F, dim], for the output head
    modulation: torch.Tensor  # [B, F, 6, dim], adaLN input of every block
    context: torch.Tensor  # [B, L, dim], text (+ state) context after the expert's text projection
    grid: tuple[int, int, int]  # latent frames, token rows, token columns


def build_video_expert(
    *, num_layers: int, num_heads: int, head_dim: int, ffn_dim: int, in_channels: int, text_dim: int, freq_dim: int
) -> WanTransformer3DModel:
    """A Wan2.2-TI2V DiT with the given size (the 5B model: 30 layers, 24 x 128, FFN 14336, 48 channels).

    Its RoPE tables are computed, not learned: they are built on the CPU (real also when the weights are created
    on the meta device) and move with the module. Its blocks are ``block_call.VideoTransformerBlock``: diffusers'
    block, whose module call can also run a MoT layer (each block can be an FSDP unit).
    """
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=in_channels,
        text_dim=text_dim,
        freq_dim=freq_dim,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
    )
    with torch.device("cpu"):
        model.rope = WanRotaryPosEmbed(head_dim, model.config.patch_size, model.config.rope_max_seq_len)
    for block in model.blocks:
        block.__class__ = VideoTransformerBlock  # a subclass without state of its own
    return model


def embed_video(
    model: WanTransformer3DModel, latents: torch.Tensor, frame_timesteps: torch.Tensor, context: torch.Tensor
) -> VideoEmbedding:
    """Latents ``[B, C, F, h, w]`` and per-frame timesteps ``[B, F]`` -> tokens and conditioning."""
    num_frames = latents.shape[2]
    p_t, p_h, p_w = model.config.patch_size
    grid = (num_frames // p_t, latents.shape[3] // p_h, latents.shape[4] // p_w)
    cos, sin = model.rope(latents)  # diffusers' interleaved real tables -> one complex rotation per pair
    rope = torch.complex(cos[..., 0::2].float(), sin[..., 1::2].float())
    weight = model.patch_embedding.weight
    tokens = model.patch_embedding(latents.to(weight.dtype)).flatten(2).transpose(1, 2)
    temb, modulation, context, _ = model.condition_embedder(
        frame_timesteps.flatten(), context.to(weight.dtype), None, timestep_seq_len=num_frames
    )
    return VideoEmbedding(tokens, rope, temb, modulation.unflatten(2, (6, -1)), context, grid)


def unembed_video(model: WanTransformer3DModel, tokens: torch.Tensor, emb: VideoEmbedding) -> torch.Tensor:
    """Output head: tokens ``[B, L, dim]`` -> velocity latents ``[B, C, F, h, w]``."""
    batch = tokens.shape[0]
    frames, rows, cols = emb.grid
    shift, scale = (model.scale_shift_table.unsqueeze(0) + emb.temb.unsqueeze(2)).unsqueeze(3).unbind(2)
    normed = model.norm_out(tokens.float()).unflatten(1, (frames, -1))
    hidden = (normed * (1 + scale) + shift).flatten(1, 2).type_as(tokens)
    hidden = model.proj_out(hidden)
    p_t, p_h, p_w = model.config.patch_size
    hidden = hidden.reshape(batch, frames, rows, cols, p_t, p_h, p_w, -1)
    return hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
