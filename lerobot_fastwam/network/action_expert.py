"""The action expert: a narrow Wan DiT over action tokens, built from diffusers' Wan modules.

Same layer count, heads and head dim as the video expert (so both can share one attention per layer), but its
own width (1024 in the paper) and FFN. One token per action step, 1D RoPE over the full head dim, one scalar
timestep per sample driving adaLN, its own text projection and cross-attention. With
``step_size_conditioning`` the sampler's step size is added to the timestep embedding (few-step sampling,
``flow_matching.SHORTCUT_STEP_SIZES``).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_1d_rotary_pos_embed
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from torch import nn

from .block_call import RunsInside


class ActionTransformerBlock(RunsInside, WanTransformerBlock):
    """A ``WanTransformerBlock`` whose attention width (heads x head_dim) differs from its hidden width.

    diffusers' block ties head_dim to ``dim // num_heads``; the action expert projects 1024 -> 24 x 128 so its
    keys and values live in the video expert's attention space. Submodule names match the parent class, so
    the MoT layer loop treats both experts' blocks alike; like the video expert's blocks it can run a MoT layer
    inside its module call (``block_call``).
    """

    def __init__(self, *, dim: int, ffn_dim: int, num_heads: int, head_dim: int, eps: float = 1e-6):
        nn.Module.__init__(self)
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim, heads=num_heads, dim_head=head_dim, eps=eps, processor=WanAttnProcessor())
        self.attn2 = WanAttention(
            dim,
            heads=num_heads,
            dim_head=head_dim,
            eps=eps,
            cross_attention_dim_head=head_dim,
            processor=WanAttnProcessor(),
        )
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)


class ZeroInitLinear(nn.Linear):
    """A linear layer that starts at zero, also when materialised from the meta device (``reset_parameters``):
    a new conditioning input adds nothing until training teaches it something."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class StepSizeEmbedding(TimestepEmbedding):
    """The sampler's step size ``d`` (0: the instantaneous velocity) -> an addition to the timestep embedding:
    diffusers' ``TimestepEmbedding`` over the sinusoidal features of ``d`` on the timestep's scale
    (``d * num_train_timesteps``), its output layer starting at zero, so a network that gains it samples exactly
    as before until the self-consistency term trains it."""

    def __init__(self, freq_dim: int, hidden_dim: int, num_train_timesteps: int):
        super().__init__(freq_dim, hidden_dim)
        self.linear_2 = ZeroInitLinear(hidden_dim, hidden_dim)
        self.num_train_timesteps = num_train_timesteps
        self.proj = Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)

    def forward(self, step_size: torch.Tensor) -> torch.Tensor:
        return super().forward(self.proj(step_size * self.num_train_timesteps).to(self.linear_1.weight.dtype))


class ActionExpert(nn.Module):
    """The action expert. ``max_actions``: the longest chunk its RoPE table covers (positions 0..max_actions-1)."""

    def __init__(
        self,
        *,
        action_dim: int,
        hidden_dim: int,
        ffn_dim: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        text_dim: int,
        freq_dim: int,
        max_actions: int,
        step_size_conditioning: bool = False,
        num_train_timesteps: int = 1000,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.action_in = nn.Linear(action_dim, hidden_dim)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=hidden_dim, time_freq_dim=freq_dim, time_proj_dim=hidden_dim * 6, text_embed_dim=text_dim
        )
        self.blocks = nn.ModuleList(
            [
                ActionTransformerBlock(dim=hidden_dim, ffn_dim=ffn_dim, num_heads=num_heads, head_dim=head_dim, eps=eps)
                for _ in range(num_layers)
            ]
        )
        self.action_out = nn.Linear(hidden_dim, action_dim)
        self.step_size_embedder = (
            StepSizeEmbedding(freq_dim, hidden_dim, num_train_timesteps) if step_size_conditioning else None
        )
        # 1D RoPE over the full head dim, theta 10000. Computed, not learned: built on the CPU (a real table also
        # when the weights are created on the meta device) and moved with the module.
        with torch.device("cpu"):
            freqs = get_1d_rotary_pos_embed(
                head_dim, max_actions, theta=10000.0, use_real=False, freqs_dtype=torch.float64
            )
            self.register_buffer("rope_freqs", freqs.to(torch.complex64), persistent=False)

    def rope(self, num_actions: int) -> torch.Tensor:
        """Complex RoPE rotations ``[1, num_actions, 1, head_dim / 2]`` for positions 0..num_actions-1."""
        return self.rope_freqs[None, :num_actions, None]

    def embed_timestep(self, timestep: torch.Tensor, step_size: torch.Tensor | None = None) -> torch.Tensor:
        """adaLN input ``[B, 1, 6, hidden]`` from one timestep per sample (one modulation group) and, with
        step-size conditioning, the sampler's step size per sample (``None``: 0, the instantaneous velocity)."""
        emb = self.condition_embedder
        t = emb.timesteps_proj(timestep).to(emb.time_embedder.linear_1.weight.dtype)
        temb = emb.time_embedder(t)
        if self.step_size_embedder is not None:
            if step_size is None:
                step_size = torch.zeros_like(timestep)
            temb = temb + self.step_size_embedder(step_size.to(timestep.device).expand_as(timestep))
        elif step_size is not None:
            raise ValueError("This action expert has no step-size conditioning (action_consistency_weight was 0).")
        return emb.time_proj(emb.act_fn(temb)).unflatten(1, (6, -1)).unsqueeze(1)

    def embed_context(self, context: torch.Tensor) -> torch.Tensor:
        return self.condition_embedder.text_embedder(context)
