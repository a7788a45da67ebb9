"""The attention masks of one Mixture-of-Transformers layer, computed without a mask.

The joint sequence of one layer is ``[F0 | Ff | A]``: the clean first latent frame, the noisy future latent
frames, and the action tokens. Every mask variant lives here, named by ``mask`` (``MASKS``); the layer loop
(``mot.MixtureOfTransformers``) only passes the name through. ``"fastwam"`` is the paper's mask (reference
section 3):

    query \\ key   F0    Ff    A
    F0             yes   no    no
    Ff             yes   yes   no
    A              yes   no    yes

``"video_bidirectional"`` differs in one cell: F0 also reads Ff (plain bidirectional video attention, as in Wan
itself). It exists to compare the video expert with diffusers' ``WanTransformer3DModel``.

Every query group reads one contiguous key range of ``[F0 | Ff]`` or ``[F0 | A]``, so the masked attention is
exactly a few unmasked attention calls, which the fused kernels (flash / memory-efficient SDPA, xformers) run.
``dense_reference_mask`` builds the same masks as boolean matrices; it exists to document and test the
equivalence, and is never used on the model's path.

Tensors here are laid out ``[batch, tokens, heads, head_dim]``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_xformers_ops = None


def _load_xformers():
    global _xformers_ops
    if _xformers_ops is None:
        import xformers.ops as xops  # noqa: PLC0415 - optional dependency

        _xformers_ops = xops
    return _xformers_ops


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """Return the backend that will actually run: xformers only where it imports and has a kernel here."""
    if requested == "sdpa":
        return "sdpa"
    reason = None
    try:
        xops = _load_xformers()
        if torch.device(device).type != "cuda":
            reason = "xformers kernels need a CUDA device"
        else:
            probe = torch.zeros(1, 2, 1, 64, device=device, dtype=torch.bfloat16)
            xops.memory_efficient_attention(probe, probe, probe)
    except Exception as exc:  # ImportError, or a build whose kernels do not load
        reason = f"xformers is unavailable ({type(exc).__name__}: {exc})"
    if reason is None:
        return "xformers"
    if requested == "xformers":
        logger.warning("attention_backend='xformers' requested but %s; falling back to torch SDPA.", reason)
    return "sdpa"


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Unmasked attention, ``[B, S, H, D]`` in, ``[B, S, H * D]`` out."""
    if backend == "xformers":
        out = _load_xformers().memory_efficient_attention(q, k, v)
    else:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2)
    return out.flatten(2)


MASKS = ("fastwam", "video_bidirectional")


def check_mask(mask: str) -> str:
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}.")
    return mask


def mot_attention(
    video_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    action_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    first_frame_len: int,
    mask: str = "fastwam",
    backend: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One MoT layer's attention over ``[F0 | Ff | A]`` under ``mask`` (see ``MASKS``), as contiguous-range calls.

    Args:
        video_qkv: queries, keys, values of the video tokens (F0 then Ff), ``[B, Lv, H, D]`` each.
        action_qkv: the same for the action tokens, or None for a video-only pass.
        first_frame_len: tokens of the clean first latent frame (F0).
        mask: ``"fastwam"`` (the paper's), or ``"video_bidirectional"`` (F0 also reads Ff).
        backend: ``"sdpa"`` or ``"xformers"`` (``resolve_backend``).

    Returns:
        (video output ``[B, Lv, H * D]``, action output ``[B, La, H * D]`` or None).
    """
    check_mask(mask)
    q, k, v = video_qkv
    n0 = first_frame_len
    if mask == "video_bidirectional" or q.shape[1] == n0:  # every video query reads all video keys
        video_out = attend(q, k, v, backend)
    else:  # "fastwam": F0 reads F0 only; Ff reads F0 and Ff
        video_out = torch.cat(
            [attend(q[:, :n0], k[:, :n0], v[:, :n0], backend), attend(q[:, n0:], k, v, backend)], dim=1
        )
    if action_qkv is None:
        return video_out, None
    q_a, k_a, v_a = action_qkv  # actions read F0 and each other, never the future frames
    action_out = attend(q_a, torch.cat([k[:, :n0], k_a], dim=1), torch.cat([v[:, :n0], v_a], dim=1), backend)
    return video_out, action_out


def dense_reference_mask(first_frame_len: int, future_len: int, action_len: int, mask: str = "fastwam") -> torch.Tensor:
    """``mask`` as a dense boolean ``[S, S]`` matrix (True = may attend). Tests only."""
    check_mask(mask)
    n0, nv = first_frame_len, first_frame_len + future_len
    total = nv + action_len
    dense = torch.zeros(total, total, dtype=torch.bool)
    dense[:n0, : nv if mask == "video_bidirectional" else n0] = True  # F0 -> F0 (and Ff when bidirectional)
    dense[n0:nv, :nv] = True  # Ff -> F0, Ff
    dense[nv:, :n0] = True  # A -> F0
    dense[nv:, nv:] = True  # A -> A
    return dense
