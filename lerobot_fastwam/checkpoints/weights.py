"""Weights in and out of a ``FastWAMPolicy``: strict safetensors loading, random materialisation, fp32 masters,
and the action expert's initialisation from the video expert.

- ``save_weights`` / ``read_weights``: a state dict <-> a checkpoint's ``model.safetensors``. The file carries a
  SHA-256 of its tensors in its metadata (``CHECKSUM_KEY``), written at save and verified at load, so a bit flipped
  on disk or in a download is refused even where it leaves the weights finite. ``read_weights`` returns the
  policy's layout and compute dtype (a built-in ``fastwam`` checkpoint is translated), refusing a damaged file
  or non-finite weights; files without a checksum (LeRobot's built-in, earlier versions) load with a notice.
- ``assign_weights``: strict: every missing, unexpected, mis-shaped or wrong-kind tensor is named.
- ``materialize_random``: the network is built on the meta device; a fresh policy allocates what is still
  there. ``accelerate``'s ``init_empty_weights`` + ``Module.to_empty`` would not do the same here: ``to_empty``
  reallocates every tensor, dropping the Wan2.2 weights already assigned to the video expert, and gives one
  dtype to all, where trainable weights are fp32 masters and frozen ones live in the compute dtype.
- ``restore_fp32_masters``: trainable weights of a policy loaded in bf16 become fp32 masters again, read
  exactly from the checkpoint (which stores the masters), so resuming training is exact.
- ``action_expert_from_video``: the official recipe's initial action expert, interpolated from the Wan2.2
  video expert's weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .wan_layout import is_wan_layout, wan_layout_to_plugin

logger = logging.getLogger(__name__)

FROZEN_ENCODERS = ("latent_encoder.", "prompt_encoder.")  # rebuilt from the config, never stored

CHECKSUM_KEY = "fastwam_sha256"  # safetensors metadata: the checksum of the file's tensors (_combine)

_HASH_THREADS = min(8, os.cpu_count() or 1)  # hashlib releases the GIL, so tensors hash in parallel


def _combine(digests: Iterable[tuple[str, list[int], str]]) -> str:
    """One SHA-256 over each tensor's name, shape and SHA-256 of its bytes, in name order: independent of the
    order safetensors lays the tensors out in, and computable tensor by tensor (in parallel)."""
    outer = hashlib.sha256()
    for name, shape, digest in sorted(digests):
        outer.update(f"{name} {shape} {digest}\n".encode())
    return outer.hexdigest()


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    """The checksum of ``tensors`` as ``save_file`` writes them (contiguous, little-endian bytes)."""

    def digest(item: tuple[str, Tensor]) -> tuple[str, list[int], str]:
        name, tensor = item
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return name, list(tensor.shape), hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        return _combine(pool.map(digest, tensors.items()))


def file_checksum(model_file: str | Path) -> tuple[str | None, str | None]:
    """``(stored, found)``: the checksum in a safetensors file's metadata and that of the tensors in it, or
    ``(None, None)`` when it stores none. The file is read through a memory map, so no tensor is copied."""
    with open(model_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        stored = (header.pop("__metadata__", None) or {}).get(CHECKSUM_KEY)
        if stored is None:
            return None, None
        with memoryview(data) as view:

            def digest(item: tuple[str, dict]) -> tuple[str, list[int], str]:
                name, entry = item
                start, end = (8 + size + offset for offset in entry["data_offsets"])
                return name, entry["shape"], hashlib.sha256(view[start:end]).hexdigest()

            with ThreadPoolExecutor(_HASH_THREADS) as pool:
                return stored, _combine(pool.map(digest, header.items()))


def save_weights(state_dict: dict[str, Tensor], model_file: str | Path) -> None:
    """Write ``state_dict`` as safetensors with its checksum in the metadata (verified by ``read_weights``)."""
    tensors = {key: value.detach().contiguous() for key, value in state_dict.items()}
    save_file(tensors, str(model_file), metadata={CHECKSUM_KEY: tensors_checksum(tensors)})


def read_weights(model_file: str | Path, device: str, compute_dtype: torch.dtype) -> dict[str, Tensor]:
    """The tensors of ``model_file`` on ``device``; network weights (``model.*``) in ``compute_dtype``."""
    try:
        with safe_open(str(model_file), framework="pt", device=str(device)) as f:
            state_dict = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except SafetensorError as err:
        size = Path(model_file).stat().st_size
        raise ValueError(
            f"{model_file} ({size} bytes) is not a readable safetensors file ({err}): it is empty, truncated "
            "(an interrupted download or save) or not a Fast-WAM checkpoint. Re-download or re-save it."
        ) from err
    stored, found = file_checksum(model_file)
    if stored is None:
        logger.info(
            "%s carries no checksum (saved by LeRobot's built-in fastwam or an earlier version of the plugin or "
            "of lerobot-fastwam convert): its weights are checked for shape and finiteness only.",
            model_file,
        )
    elif stored != found:
        raise ValueError(
            f"{model_file} does not match the checksum written when it was saved (SHA-256 of its tensors: "
            f"expected {stored}, found {found}): the file is corrupt or was edited. Re-download or re-save it."
        )
    if is_wan_layout(list(state_dict)):  # saved by LeRobot's built-in fastwam
        state_dict = wan_layout_to_plugin(state_dict)
    # CPU tensors from safe_open are views of the memory-mapped file: each is copied (or converted) once, so
    # the parameters own their memory, the file may be overwritten later, and the peak stays at one copy.
    for key, value in list(state_dict.items()):
        target = compute_dtype if key.startswith("model.") else value.dtype
        if value.is_floating_point() and (value.dtype != target or value.device.type == "cpu"):
            state_dict[key] = value.to(target, copy=True)
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise ValueError(
            f"{model_file} holds NaN or Inf in {name_list(sorted(non_finite))}: the checkpoint is corrupt or was "
            "saved after training diverged. Load an earlier checkpoint."
        )
    return state_dict


def assign_weights(module: nn.Module, state_dict: dict[str, Tensor], source: str | Path) -> None:
    """Load ``state_dict`` into ``module`` by assignment (meta parameters are replaced), refusing any mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} {state_dict[k].dtype} vs model "
        f"{tuple(expected[k].shape)} {expected[k].dtype}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
        or state_dict[k].is_floating_point() != expected[k].is_floating_point()
    )
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"Cannot load the Fast-WAM weights from {source}: the checkpoint does not match the model "
            f"built from its config.\n  missing: {name_list(missing)}\n  unexpected: {name_list(unexpected)}\n"
            f"  wrong shape or dtype: {name_list(mismatched)}\nCheck that the config (layers, widths, action/state "
            "dimensions, cameras) is the one the checkpoint was trained with."
        )
    module.load_state_dict(state_dict, strict=False, assign=True)


def materialize_random(module: nn.Module, device: torch.device | str, dtype_of: Callable[[Tensor], torch.dtype]):
    """Allocate the parameters still on the meta device on ``device`` (in ``dtype_of(param)``), with their
    modules' default initialisation (adaLN tables as diffusers initialises them: randn / sqrt(dim))."""
    for sub in module.modules():
        metas = [name for name, p in sub._parameters.items() if p is not None and p.is_meta]
        if not metas:
            continue
        for name in metas:
            old = sub._parameters[name]
            new = torch.empty_like(old, device=device, dtype=dtype_of(old))
            sub._parameters[name] = nn.Parameter(new, old.requires_grad)
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        if "scale_shift_table" in metas:
            table = sub.scale_shift_table
            with torch.no_grad():
                table.copy_(torch.randn_like(table) / table.shape[-1] ** 0.5)


def restore_fp32_masters(module: nn.Module, weights_file: str | Path | None) -> None:
    """Make every trainable parameter fp32: read exactly from ``weights_file`` where it stores that tensor in
    fp32 (the masters a training run saved), else upcast the loaded value."""
    lowered = {n: p for n, p in module.named_parameters() if p.requires_grad and p.dtype != torch.float32}
    if not lowered:
        return
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(safe_open(str(weights_file), framework="pt")) if weights_file else None
        stored = set(f.keys()) if f is not None else set()  # noqa: SIM118
        for name, param in lowered.items():
            exact = name in stored and f.get_slice(name).get_dtype() == "F32"
            param.data = f.get_tensor(name).to(param.device) if exact else param.data.float()


def drop_frozen_encoder_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: the frozen VAE / umT5 are rebuilt from the config and never saved."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in FROZEN_ENCODERS))]:
        del state_dict[key]


# The action expert's own layers, which no video weight initialises (the step-size embedding starts at zero).
ACTION_ONLY_PREFIXES = ("action_in.", "action_out.", "step_size_embedder.")


def resize_linear(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize every mismatched dimension by 1D linear interpolation (align_corners=True), one after another."""
    out = tensor.float()
    for dim, size in enumerate(shape):
        if out.shape[dim] == size:
            continue
        moved = out.movedim(dim, -1)
        lead = moved.shape[:-1]
        resized = torch.nn.functional.interpolate(
            moved.reshape(-1, 1, moved.shape[-1]), size=size, mode="linear", align_corners=True
        )
        out = resized.reshape(*lead, size).movedim(-1, dim)
    return out


def action_expert_from_video(
    video_state: dict[str, torch.Tensor], action_shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Initial action-expert weights from the video expert's: each tensor is the video tensor linearly
    interpolated to the action shape; where the input (last) dimension shrinks it is multiplied by
    ``sqrt(d_video / d_action)`` to keep activations at scale. The action input/output layers are skipped."""
    out = {}
    for key, shape in action_shapes.items():
        if key.startswith(ACTION_ONLY_PREFIXES):
            continue
        if key not in video_state:
            raise ValueError(f"The video expert has no `{key}` to initialise the action expert from.")
        src = video_state[key]
        value = resize_linear(src, tuple(shape))
        if src.ndim >= 2 and src.shape[-1] != shape[-1]:
            value = value * (src.shape[-1] / shape[-1]) ** 0.5
        out[key] = value.to(src.dtype)
    return out


def name_list(names: list[str], n: int = 8) -> str:
    """The first ``n`` names, for error messages: ``a, b, c and 5 more``; ``none`` for an empty list."""
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
