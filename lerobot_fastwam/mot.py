"""The Mixture-of-Transformers layer loop shared by the video and action experts.

In every layer both experts compute their own adaLN-modulated Q/K/V, one attention runs over both under the
Fast-WAM mask (``attention.fastwam_attention``), and each expert then applies its own output projection,
cross-attention and FFN. The block maths is diffusers' ``WanTransformerBlock.forward`` split at the attention,
with adaLN modulation given per group of tokens (``[B, G, 6, dim]``: one group per latent frame for video, one
group for all action tokens).

Three entry points:
- ``joint``: training (and the reference for tests), video and actions together.
- ``prefill_first_frame``: inference, the clean first frame alone; returns each layer's keys/values.
- ``denoise_actions``: inference, one action-expert pass reading the cached first-frame keys/values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from .action_expert import ActionExpert
from .attention import attend, fastwam_attention

Rope = tuple[torch.Tensor, torch.Tensor]
QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved pairs, the convention of Wan and diffusers. ``x``: [B, S, H, D]."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def _modulation(block: nn.Module, block_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Six ``[B, G, 1, dim]`` fp32 adaLN tensors (shift, scale, gate for attention; then for the FFN)."""
    return (block.scale_shift_table.unsqueeze(0) + block_input.float()).unsqueeze(3).unbind(2)


def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x.unflatten(1, (groups, -1))


def self_attention_qkv(block: nn.Module, x: torch.Tensor, mod: tuple[torch.Tensor, ...], rope: Rope) -> QKV:
    shift, scale = mod[0], mod[1]
    groups = shift.shape[1]
    h = (_grouped(block.norm1(x.float()), groups) * (1 + scale) + shift).flatten(1, 2).type_as(x)
    attn = block.attn1
    q = attn.norm_q(attn.to_q(h)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(h)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(h).unflatten(2, (attn.heads, -1))
    return apply_rope(q, *rope), apply_rope(k, *rope), v


def cross_attention_kv(block: nn.Module, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values of a block's cross-attention over the text (+ state) context. Constant within a chunk."""
    attn = block.attn2
    k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(context).unflatten(2, (attn.heads, -1))
    return k, v


def finish_block(
    block: nn.Module,
    x: torch.Tensor,
    attn_out: torch.Tensor,
    mod: tuple[torch.Tensor, ...],
    context_kv: tuple[torch.Tensor, torch.Tensor],
    backend: str,
) -> torch.Tensor:
    """Everything after self-attention: output projection + gate, cross-attention, modulated FFN."""
    gate, c_shift, c_scale, c_gate = mod[2], mod[3], mod[4], mod[5]
    groups = gate.shape[1]
    attn_out = _grouped(block.attn1.to_out[0](attn_out), groups)
    x = (_grouped(x.float(), groups) + attn_out * gate).flatten(1, 2).type_as(x)

    cross = block.attn2
    h = block.norm2(x.float()).type_as(x)
    q = cross.norm_q(cross.to_q(h)).unflatten(2, (cross.heads, -1))
    x = x + cross.to_out[0](attend(q, *context_kv, backend).type_as(q))

    h = (_grouped(block.norm3(x.float()), groups) * (1 + c_scale) + c_shift).flatten(1, 2).type_as(x)
    ff = _grouped(block.ffn(h).float(), groups)
    return (_grouped(x.float(), groups) + ff * c_gate).flatten(1, 2).type_as(x)


@dataclass
class ExpertStream:
    """One expert's tokens and per-chunk conditioning for the layer loop."""

    tokens: torch.Tensor  # [B, S, dim]
    modulation: torch.Tensor  # [B, G, 6, dim]
    rope: Rope
    context: torch.Tensor  # [B, L, dim], already through the expert's text projection


@dataclass
class FirstFrameCache:
    """Per-layer state that stays fixed while the actions of one chunk are denoised.

    ``keys``/``values`` hold ``[B, F0 + actions, H, D]`` buffers whose first-frame part is written once by
    the prefill; each action step writes its own keys/values behind it, so the action attention reads one
    contiguous buffer with no concatenation. ``context_kv`` is the action expert's cross-attention K/V.
    """

    first_frame_len: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    context_kv: list[tuple[torch.Tensor, torch.Tensor]]


class MixtureOfTransformers(nn.Module):
    def __init__(self, video: WanTransformer3DModel, action: ActionExpert, gradient_checkpointing: bool = False):
        super().__init__()
        if len(video.blocks) != len(action.blocks):
            raise ValueError(
                f"Both experts need the same layer count, got video {len(video.blocks)} and "
                f"action {len(action.blocks)}."
            )
        v_attn, a_attn = video.blocks[0].attn1, action.blocks[0].attn1
        if (v_attn.heads, v_attn.inner_dim) != (a_attn.heads, a_attn.inner_dim):
            raise ValueError(
                "Both experts need the same heads and head dim for their shared attention, got video "
                f"{v_attn.heads}x{v_attn.inner_dim // v_attn.heads} and action "
                f"{a_attn.heads}x{a_attn.inner_dim // a_attn.heads}."
            )
        self.video = video
        self.action = action
        self.gradient_checkpointing = gradient_checkpointing
        self.backend = "sdpa"

    @property
    def num_layers(self) -> int:
        return len(self.video.blocks)

    def _joint_layer(
        self, index: int, xv: torch.Tensor, xa: torch.Tensor | None, video: ExpertStream,
        action: ExpertStream | None, first_frame_len: int, isolate_first_frame: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        vblock = self.video.blocks[index]
        vmod = _modulation(vblock, video.modulation)
        vqkv = self_attention_qkv(vblock, xv, vmod, video.rope)
        aqkv = None
        if action is not None:
            ablock = self.action.blocks[index]
            amod = _modulation(ablock, action.modulation)
            aqkv = self_attention_qkv(ablock, xa, amod, action.rope)
        v_out, a_out = fastwam_attention(vqkv, aqkv, first_frame_len, self.backend, isolate_first_frame)
        xv = finish_block(vblock, xv, v_out.type_as(xv), vmod, cross_attention_kv(vblock, video.context), self.backend)
        if action is not None:
            xa = finish_block(
                ablock, xa, a_out.type_as(xa), amod, cross_attention_kv(ablock, action.context), self.backend
            )
        return xv, xa

    def joint(
        self,
        video: ExpertStream,
        action: ExpertStream | None,
        first_frame_len: int,
        isolate_first_frame: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run all layers over video and action tokens together. Returns the final tokens of both."""
        xv, xa = video.tokens, None if action is None else action.tokens
        for index in range(self.num_layers):
            args = (index, xv, xa, video, action, first_frame_len, isolate_first_frame)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                xv, xa = checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                xv, xa = self._joint_layer(*args)
        return xv, xa

    @torch.no_grad()
    def prefill_first_frame(self, video: ExpertStream, num_actions: int) -> FirstFrameCache:
        """Run the video expert over the clean first frame once and keep each layer's keys/values.

        The first frame attends only to itself, so these keys/values are exactly those of training. The last
        layer's cross-attention and FFN are skipped: nothing reads their output.
        """
        x = video.tokens
        n0 = x.shape[1]
        keys, values = [], []
        for index, block in enumerate(self.video.blocks):
            mod = _modulation(block, video.modulation)
            q, k, v = self_attention_qkv(block, x, mod, video.rope)
            key_buffer = k.new_empty(k.shape[0], n0 + num_actions, *k.shape[2:])
            value_buffer = v.new_empty(v.shape[0], n0 + num_actions, *v.shape[2:])
            key_buffer[:, :n0] = k
            value_buffer[:, :n0] = v
            keys.append(key_buffer)
            values.append(value_buffer)
            if index < self.num_layers - 1:
                out = attend(q, k, v, self.backend).type_as(x)
                x = finish_block(block, x, out, mod, cross_attention_kv(block, video.context), self.backend)
        return FirstFrameCache(n0, keys, values, context_kv=[])

    @torch.no_grad()
    def cache_action_context(self, cache: FirstFrameCache, context: torch.Tensor) -> None:
        """Compute the action expert's cross-attention K/V over the context once per chunk."""
        cache.context_kv = [cross_attention_kv(block, context) for block in self.action.blocks]

    @torch.no_grad()
    def denoise_actions(self, action: ExpertStream, cache: FirstFrameCache) -> torch.Tensor:
        """One action-expert pass: action tokens attend to the cached first frame and to each other."""
        x = action.tokens
        n0 = cache.first_frame_len
        for index, block in enumerate(self.action.blocks):
            mod = _modulation(block, action.modulation)
            q, k, v = self_attention_qkv(block, x, mod, action.rope)
            keys, values = cache.keys[index], cache.values[index]
            keys[:, n0:] = k
            values[:, n0:] = v
            out = attend(q, keys, values, self.backend).type_as(x)
            x = finish_block(block, x, out, mod, cache.context_kv[index], self.backend)
        return x
