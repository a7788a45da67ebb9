"""The Mixture-of-Transformers layer loop shared by the video and action experts.

In every layer both experts compute their own adaLN-modulated Q/K/V, one attention runs over both under the
layer's mask (``attention.mot_attention``; the mask variants live there), and each expert then applies its own
output projection, cross-attention and FFN. The block maths is diffusers' ``WanTransformerBlock.forward`` split
at the attention, with adaLN modulation given per group of tokens (``[B, G, 6, dim]``: one group per latent
frame for video, one group for all action tokens), read through ``AdaLNModulation``.

Three entry points:
- ``joint``: training (and the reference for tests, and the Joint variant's sampler), video and actions together.
- ``prefill_video``: inference, the clean video the actions read, alone (Fast-WAM: the first frame; IDM: the
  first frame and the generated future); returns each layer's keys/values. The cross-attention keys/values of
  the text (+ state) context come from ``context_kv``, token by token, so a prompt's can be kept across chunks.
- ``action_layers``: inference, one denoising step's pass of the action expert's layers over the cached
  video keys/values; returns the final action tokens (``FastWAM.action_velocity`` adds the input and
  output projections).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from .action_expert import ActionExpert
from .attention import attend, check_mask, mot_attention
from .block_call import call_inside

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved pairs (Wan's and diffusers' convention), as one complex product.

    ``x``: [B, S, H, D]; ``rotations``: complex [1, S, 1, D / 2].
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotations).flatten(-2).type_as(x)


class AdaLNModulation(NamedTuple):
    """The six adaLN tensors of one block (both experts), in the order of its ``scale_shift_table`` rows.

    Self-attention input ``norm1(x) * attn_scale + attn_shift``, residual ``x + attn(...) * attn_gate``; the FFN
    the same with ``norm3`` and the ``ffn_*`` terms. diffusers' Wan block calls them ``shift_msa, scale_msa,
    gate_msa, c_shift_msa, c_scale_msa, c_gate_msa``, DiT ``shift_msa, scale_msa, gate_msa, shift_mlp,
    scale_mlp, gate_mlp``. Here the scales already hold the ``1 +`` (``norm * (1 + scale)``). Each tensor is
    fp32, ``[B, G, 1, dim]`` for G groups of tokens (video: one per latent frame), or ``[B, 1, dim]`` for one.
    """

    attn_shift: torch.Tensor
    attn_scale: torch.Tensor
    attn_gate: torch.Tensor
    ffn_shift: torch.Tensor
    ffn_scale: torch.Tensor
    ffn_gate: torch.Tensor


@functools.cache
def _plus_one(device: torch.device) -> torch.Tensor:
    """Adds the 1 of ``1 + scale`` to the scale rows of a ``[..., 6, dim]`` table (one copy per device)."""
    rows = [1.0 if name.endswith("_scale") else 0.0 for name in AdaLNModulation._fields]
    return torch.tensor(rows, device=device).view(6, 1)


def _modulation(block: nn.Module, block_input: torch.Tensor) -> AdaLNModulation:
    """A block's adaLN tensors from its table and a ``[B, G, 6, dim]`` timestep input."""
    mod = block.scale_shift_table.unsqueeze(0) + block_input.float() + _plus_one(block_input.device)
    tensors = mod.squeeze(1).unsqueeze(2).unbind(1) if mod.shape[1] == 1 else mod.unsqueeze(3).unbind(2)
    return AdaLNModulation(*tensors)


def _affine(x: torch.Tensor, factor: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``offset + x * factor`` with ``factor``/``offset`` per group of tokens of ``x`` ([B, G * n, dim])."""
    if factor.ndim == 3:
        return torch.addcmul(offset, x, factor)
    out = torch.addcmul(offset, x.unflatten(1, (factor.shape[1], -1)), factor)
    return out.flatten(1, 2)


def _gated_residual(x: torch.Tensor, update: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + update * gate`` in fp32 (as diffusers' Wan block), back in ``x``'s dtype."""
    if gate.ndim == 3:
        return torch.addcmul(x.float(), update.float(), gate).type_as(x)
    groups = gate.shape[1]
    out = torch.addcmul(x.float().unflatten(1, (groups, -1)), update.float().unflatten(1, (groups, -1)), gate)
    return out.flatten(1, 2).type_as(x)


def self_attention_qkv(block: nn.Module, x: torch.Tensor, mod: AdaLNModulation, rope: torch.Tensor) -> QKV:
    """Queries, keys, values ``[B, S, H, D]`` of a block's self-attention, RoPE applied to queries and keys."""
    h = _affine(block.norm1(x.float()), mod.attn_scale, mod.attn_shift).type_as(x)
    attn = block.attn1
    heads = attn.heads
    q = attn.norm_q(attn.to_q(h)).unflatten(2, (heads, -1))
    k = attn.norm_k(attn.to_k(h)).unflatten(2, (heads, -1))
    v = attn.to_v(h).unflatten(2, (heads, -1))
    q, k = apply_rope(torch.cat([q, k], dim=2), rope).split(heads, dim=2)  # one rotation for both
    return q, k, v


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
    mod: AdaLNModulation,
    context_kv: tuple[torch.Tensor, torch.Tensor],
    backend: str,
) -> torch.Tensor:
    """Everything after self-attention: output projection + gate, cross-attention, modulated FFN."""
    x = _gated_residual(x, block.attn1.to_out[0](attn_out), mod.attn_gate)

    cross = block.attn2
    h = block.norm2(x.float()).type_as(x)
    q = cross.norm_q(cross.to_q(h)).unflatten(2, (cross.heads, -1))
    x = x + cross.to_out[0](attend(q, *context_kv, backend).type_as(q))

    h = _affine(block.norm3(x.float()), mod.ffn_scale, mod.ffn_shift).type_as(x)
    return _gated_residual(x, block.ffn(h), mod.ffn_gate)


@dataclass
class ExpertStream:
    """One expert's tokens and per-chunk conditioning for the layer loop."""

    tokens: torch.Tensor  # [B, S, dim]
    modulation: torch.Tensor  # [B, G, 6, dim]
    rope: torch.Tensor  # complex [1, S, 1, head_dim / 2]
    context: torch.Tensor  # [B, L, dim], already through the expert's text projection


@dataclass
class ContextKV:
    """Cross-attention keys/values ``[B, L, H, D]`` over the context, per layer: the video expert's (all layers
    but the last, whose cross-attention nothing reads at inference) and the action expert's.

    Every operation that makes them (text projection, ``to_k``/``norm_k``/``to_v``) acts on each token alone,
    so the keys/values of a concatenated context are the concatenation of its parts' (``cat``).
    """

    video: list[tuple[torch.Tensor, torch.Tensor]]
    action: list[tuple[torch.Tensor, torch.Tensor]]

    def rows(self, index: torch.Tensor | None, batch: int) -> ContextKV:
        """Batch rows ``index`` of every tensor; ``None``: the one row expanded to ``batch`` without a copy."""

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.expand(batch, *t.shape[1:]) if index is None else t[index]

        return ContextKV(*([(pick(k), pick(v)) for k, v in kvs] for kvs in (self.video, self.action)))

    def cat(self, other: ContextKV) -> ContextKV:
        """The keys/values of this context followed by ``other``'s tokens."""
        return ContextKV(
            *(
                [(torch.cat([k, k2], 1), torch.cat([v, v2], 1)) for (k, v), (k2, v2) in zip(a, b, strict=True)]
                for a, b in ((self.video, other.video), (self.action, other.action))
            )
        )


@dataclass
class VideoCache:
    """Per-layer state that stays fixed while the actions of one chunk are denoised.

    ``keys``/``values`` hold ``[B, video + actions, H, D]`` buffers whose video part (``video_len`` tokens: the
    first frame, or IDM's conditioning video) is written once by the prefill; each action step writes its own
    keys/values behind it, so the action attention reads one contiguous buffer with no concatenation.
    ``context_kv`` is the action expert's cross-attention K/V.
    """

    video_len: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    context_kv: list[tuple[torch.Tensor, torch.Tensor]]


class MixtureOfTransformers(nn.Module):
    """Both experts' layers, run together under one attention mask per layer.

    Args:
        video: the video expert (diffusers' ``WanTransformer3DModel``).
        action: the action expert; same layer count, heads and head dim as ``video``.
        attention_backend: ``"sdpa"`` or ``"xformers"``, as resolved by ``attention.resolve_backend``.
        mask: the attention mask (``attention.MASKS``): ``"fastwam"``, ``"joint"``, ``"idm"``, or
            ``"video_bidirectional"`` to compare the video expert with diffusers. The cached inference path
            (``prefill_video``) needs ``"fastwam"`` or ``"idm"``.
        gradient_checkpointing: recompute each layer in the backward pass of ``joint``.
    """

    def __init__(
        self,
        *,
        video: WanTransformer3DModel,
        action: ActionExpert,
        attention_backend: str = "sdpa",
        mask: str = "fastwam",
        gradient_checkpointing: bool = False,
    ):
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
        self.attention_backend = attention_backend
        self.mask = check_mask(mask)
        self.gradient_checkpointing = gradient_checkpointing

    @property
    def num_layers(self) -> int:
        return len(self.video.blocks)

    def _joint_layer(
        self,
        index: int,
        xv: torch.Tensor,
        xa: torch.Tensor | None,
        video: ExpertStream,
        action: ExpertStream | None,
        first_frame_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One layer, run inside the module calls of its video block and (with actions) its action block
        (``block_call``), so that each block may be its own FSDP unit."""
        vblock = self.video.blocks[index]
        ablock = None if action is None else self.action.blocks[index]

        def layer(xv: torch.Tensor, xa: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self._layer_maths(vblock, ablock, xv, xa, video, action, first_frame_len)

        if ablock is None:
            return call_inside(vblock, layer, xv, xa)
        return call_inside(vblock, lambda xv, xa: call_inside(ablock, layer, xv, xa), xv, xa)

    def _layer_maths(
        self,
        vblock: nn.Module,
        ablock: nn.Module | None,
        xv: torch.Tensor,
        xa: torch.Tensor | None,
        video: ExpertStream,
        action: ExpertStream | None,
        first_frame_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        vmod = _modulation(vblock, video.modulation)
        vqkv = self_attention_qkv(vblock, xv, vmod, video.rope)
        aqkv = None
        if action is not None:
            amod = _modulation(ablock, action.modulation)
            aqkv = self_attention_qkv(ablock, xa, amod, action.rope)
        backend = self.attention_backend
        v_out, a_out = mot_attention(vqkv, aqkv, first_frame_len, self.mask, backend)
        xv = finish_block(vblock, xv, v_out.type_as(xv), vmod, cross_attention_kv(vblock, video.context), backend)
        if action is not None:
            xa = finish_block(ablock, xa, a_out.type_as(xa), amod, cross_attention_kv(ablock, action.context), backend)
        return xv, xa

    def joint(
        self, video: ExpertStream, action: ExpertStream | None, first_frame_len: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run all layers over video and action tokens together under ``mask``. Returns the final tokens of both
        (``None`` for actions when ``action`` is None: a video-only pass)."""
        xv, xa = video.tokens, None if action is None else action.tokens
        for index in range(self.num_layers):
            args = (index, xv, xa, video, action, first_frame_len)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                xv, xa = checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                xv, xa = self._joint_layer(*args)
        return xv, xa

    @torch.no_grad()
    def context_kv(self, video_context: torch.Tensor, action_context: torch.Tensor) -> ContextKV:
        """Both experts' cross-attention keys/values over their projected contexts ``[B, L, dim]``."""
        return ContextKV(
            [cross_attention_kv(block, video_context) for block in self.video.blocks[:-1]],
            [cross_attention_kv(block, action_context) for block in self.action.blocks],
        )

    def prefill_video(
        self, video: ExpertStream, first_frame_len: int, context_kv: ContextKV, num_actions: int
    ) -> VideoCache:
        """Run the video expert once over the clean video the actions read and keep each layer's keys/values.
        ``context_kv``: both experts' cross-attention keys/values (``context_kv``); ``video.context`` is unused.

        ``"fastwam"``: the video is the first frame alone; it attends only to itself, so these keys/values are
        exactly those of training. ``"idm"``: the video is the conditioning copy (first frame and generated
        future, t=0), which never reads the noisy copy or the actions. Within it, the video mask of every variant
        holds (``attention.mot_attention`` with no actions). The last layer's cross-attention and FFN are
        skipped: nothing reads their output.
        """
        if self.mask not in ("fastwam", "idm"):
            raise ValueError(
                f"Cached inference needs the 'fastwam' or 'idm' mask, this model has {self.mask!r} (under 'joint' "
                "the actions read the noisy future, which changes every step)."
            )
        x = video.tokens
        length = x.shape[1]
        keys, values = [], []
        for index, block in enumerate(self.video.blocks):
            mod = _modulation(block, video.modulation)
            q, k, v = self_attention_qkv(block, x, mod, video.rope)
            key_buffer = k.new_empty(k.shape[0], length + num_actions, *k.shape[2:])
            value_buffer = v.new_empty(v.shape[0], length + num_actions, *v.shape[2:])
            key_buffer[:, :length] = k
            value_buffer[:, :length] = v
            keys.append(key_buffer)
            values.append(value_buffer)
            if index < self.num_layers - 1:
                out, _ = mot_attention((q, k, v), None, first_frame_len, "fastwam", self.attention_backend)
                x = finish_block(block, x, out.type_as(x), mod, context_kv.video[index], self.attention_backend)
        return VideoCache(length, keys, values, context_kv.action)

    @torch.no_grad()
    def action_modulations(self, step_inputs: torch.Tensor) -> torch.Tensor:
        """adaLN tensors of every (step, layer) of a chunk in one go: ``[N, B, 1, 6, dim]`` timestep inputs
        -> ``[N, layers, 6, B, 1, dim]`` fp32, the 6 rows in ``AdaLNModulation``'s order, so a step only indexes
        them."""
        tables = torch.stack([block.scale_shift_table for block in self.action.blocks])  # [L, 1, 6, dim]
        # [N, L, B, 1, 6, dim]
        mods = tables[None, :, None] + step_inputs.float()[:, None] + _plus_one(step_inputs.device)
        return mods.permute(0, 1, 4, 2, 3, 5).contiguous()

    @torch.no_grad()
    def action_layers(
        self, tokens: torch.Tensor, modulations: torch.Tensor, rope: torch.Tensor, cache: VideoCache
    ) -> torch.Tensor:
        """One denoising step through the action expert's layers: the action tokens ``[B, H, dim]`` (after its
        input projection) attend to the cached video and to each other. Returns the last layer's action
        tokens ``[B, H, dim]``; the expert's ``action_out`` turns them into the velocity.

        ``modulations``: this step's ``[layers, 6, B, 1, dim]`` slice of ``action_modulations``.
        """
        x = tokens
        cached = cache.video_len
        for index, block in enumerate(self.action.blocks):
            mod = AdaLNModulation(*modulations[index].unbind(0))
            q, k, v = self_attention_qkv(block, x, mod, rope)
            keys, values = cache.keys[index], cache.values[index]
            keys[:, cached:] = k
            values[:, cached:] = v
            out = attend(q, keys, values, self.attention_backend).type_as(x)
            x = finish_block(block, x, out, mod, cache.context_kv[index], self.attention_backend)
        return x
