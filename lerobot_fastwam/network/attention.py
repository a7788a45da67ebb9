"""The attention masks of one Mixture-of-Transformers layer, computed without a mask.

The joint sequence of one layer is ``[F0 | Ff | A]``: the clean first latent frame, the noisy future latent
frames, and the action tokens. Every mask variant lives here, named by ``mask`` (``MASKS``); the layer loop
(``mot.MixtureOfTransformers``) only passes the name through. The paper's variants (reference sections 1 and 3)
differ only in what the action queries read; video never reads actions, and within one video F0 reads F0 and
Ff reads F0 and Ff in all of them:

    query \\ key   F0    Ff    A
    F0             yes   no    no
    Ff             yes   yes   no
    A "fastwam"    yes   no    yes      (also the "no_cotrain" variant)
    A "joint"      yes   yes   yes

``"idm"`` (the inverse-dynamics model) trains on ``[F0 | Ff | F0c | Ffc | A]``: the video twice, a noisy copy
(scored by the video loss) and a conditioning copy (clean, or noised at its own level), each with the video
mask above and never reading the other; A reads only the conditioning copy and A. With actions present the
video tokens are the two copies, of equal length, one after the other; a video-only pass (imagining the future)
has one copy. At test time the conditioning copy is the first frame and the generated future, clean (t=0), and
the noisy copy is not needed (``model.FastWAM.sample_actions``).

``"video_bidirectional"`` differs from ``"fastwam"`` in one cell: F0 also reads Ff (plain bidirectional video
attention, as in Wan itself). It exists to compare the video expert with diffusers' ``WanTransformer3DModel``.

Every query group reads one contiguous key range, so the masked attention is exactly a few unmasked attention
calls, which the fused kernels (flash / memory-efficient SDPA, xformers) run. ``dense_reference_mask`` builds
the same masks as boolean matrices; it exists to document and test the equivalence, and is never used on the
model's path.

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


MASKS = ("fastwam", "joint", "idm", "video_bidirectional")


def check_mask(mask: str) -> str:
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}.")
    return mask


def _video_attention(q, k, v, first_frame_len: int, bidirectional: bool, backend: str) -> torch.Tensor:
    """One video's self-attention: F0 reads F0 only, Ff reads F0 and Ff (every query reads all when
    ``bidirectional``, or when the video is the first frame alone)."""
    n0 = first_frame_len
    if bidirectional or q.shape[1] == n0:
        return attend(q, k, v, backend)
    return torch.cat([attend(q[:, :n0], k[:, :n0], v[:, :n0], backend), attend(q[:, n0:], k, v, backend)], dim=1)


def mot_attention(
    video_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    action_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    first_frame_len: int,
    mask: str = "fastwam",
    backend: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One MoT layer's attention over ``[F0 | Ff | A]`` under ``mask`` (see ``MASKS``), as contiguous-range calls.

    Args:
        video_qkv: queries, keys, values of the video tokens (F0 then Ff), ``[B, Lv, H, D]`` each; under
            ``"idm"`` with actions, the noisy copy then the conditioning copy (``Lv / 2`` tokens each).
        action_qkv: the same for the action tokens, or None for a video-only pass.
        first_frame_len: tokens of the clean first latent frame (F0) of one video.
        mask: ``"fastwam"`` (the paper's), ``"joint"``, ``"idm"`` or ``"video_bidirectional"``.
        backend: ``"sdpa"`` or ``"xformers"`` (``resolve_backend``).

    Returns:
        (video output ``[B, Lv, H * D]``, action output ``[B, La, H * D]`` or None).
    """
    check_mask(mask)
    q, k, v = video_qkv
    n0 = first_frame_len
    if mask == "idm" and action_qkv is not None:  # two copies that never read each other
        half = q.shape[1] // 2
        noisy, cond = slice(None, half), slice(half, None)
        video_out = torch.cat(
            [_video_attention(q[:, s], k[:, s], v[:, s], n0, False, backend) for s in (noisy, cond)], dim=1
        )
        action_keys = cond  # actions read the conditioning copy only
    else:
        video_out = _video_attention(q, k, v, n0, mask == "video_bidirectional", backend)
        action_keys = slice(None) if mask == "joint" else slice(None, n0)  # all video, or F0 only
    if action_qkv is None:
        return video_out, None
    q_a, k_a, v_a = action_qkv
    keys = torch.cat([k[:, action_keys], k_a], dim=1)
    values = torch.cat([v[:, action_keys], v_a], dim=1)
    return video_out, attend(q_a, keys, values, backend)


def dense_reference_mask(first_frame_len: int, future_len: int, action_len: int, mask: str = "fastwam") -> torch.Tensor:
    """``mask`` as a dense boolean ``[S, S]`` matrix (True = may attend). Tests only.

    The layout is ``[F0 | Ff | A]``, or ``[F0 | Ff | F0c | Ffc | A]`` for ``"idm"`` (two copies of the video).
    """
    check_mask(mask)
    n0, nv = first_frame_len, first_frame_len + future_len
    copies = 2 if mask == "idm" else 1
    video_total = copies * nv
    dense = torch.zeros(video_total + action_len, video_total + action_len, dtype=torch.bool)
    for start in range(0, video_total, nv):  # each copy of the video
        f0, end = slice(start, start + n0), start + nv
        dense[f0, start : end if mask == "video_bidirectional" else start + n0] = True  # F0 -> F0 (Ff: bidir.)
        dense[start + n0 : end, start:end] = True  # Ff -> F0, Ff of the same copy
    actions = slice(video_total, None)
    if mask == "joint":
        dense[actions, :nv] = True  # A -> F0, Ff
    elif mask == "idm":
        dense[actions, nv:video_total] = True  # A -> the conditioning copy only
    else:
        dense[actions, :n0] = True  # A -> F0
    dense[actions, actions] = True  # A -> A
    return dense
