"""What the policy refuses to take in and to send out.

A Fast-WAM policy drives motors, so a wrong input must stop the robot loop with a message that names the
problem and the fix, never run on silently:

- ``check_observation``: the structure of an observation batch (tensors, batch dimension, channel order,
  dtype, one batch size for every camera, the state and the tasks) before anything is encoded.
- ``check_finite``: NaN/Inf in an input, with the fix for where it came from; ``check_magnitude``: a normalised
  input far outside the training range; ``check_rtc_arguments``: the previous chunk that real-time chunking
  continues, and its delay and horizon.
- ``NonFiniteActionError``: raised when an action chunk is not finite, with the cause found
  (``diagnose_non_finite_actions``). The policy checks its own output; the post-processor's
  ``FastWAMActionGuardStep`` checks the unnormalised action again (bad normalisation statistics make a finite
  output non-finite) and clamps it to the training range.

Nothing non-finite is ever replaced by a "safe" value such as zero: a zero action is a real command (a joint
position, a gripper state) and the robot would act on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    PolicyAction,
    PolicyActionProcessorStep,
    ProcessorStepRegistry,
    UnnormalizerProcessorStep,
)
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class NonFiniteActionError(RuntimeError):
    """An action chunk contains NaN or Inf; it must not reach a robot."""


SENSOR_FIX = (
    "Check the sensor, and the normalisation statistics saved with the checkpoint "
    "(policy_preprocessor_*.safetensors) if it was normalised."
)


# Where a non-finite network input came from, and the fix (``check_finite``'s ``fix``).
PRECOMPUTED_FIX = "Recompute the precomputed inputs (lerobot-fastwam cache)."
LATENT_CACHE_FIX = "The latent cache's text contexts are damaged: rebuild it (lerobot-fastwam cache)."
VAE_FIX = (
    "The VAE turned finite camera frames into them: its weights are corrupt or it overflowed in its dtype "
    "(reload the VAE, or run with --policy.dtype=float32), or the checkpoint's latent_mean/latent_std are not finite."
)
UMT5_FIX = (
    "umT5 made them from the task text: its weights are corrupt, or it overflowed in float16 (run with "
    "--policy.dtype=bfloat16 or float32)."
)


def check_finite(tensor: Tensor, name: str, fix: str = SENSOR_FIX) -> None:
    """Refuse NaN/Inf in ``tensor``; ``fix`` says what to do about it where it came from."""
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values. {fix}")


def check_magnitude(tensor: Tensor, name: str, limit: float | None) -> None:
    """Refuse a normalised input beyond ``limit`` (``config.max_normalized_input``; None: no check).

    A normalised value is of order 1. Far beyond that, the network extrapolates to arbitrary (finite) actions,
    and only the post-processor's clamp would stand between them and the motors."""
    if limit is None:
        return
    if not tensor.numel():
        return
    magnitude = tensor.detach().abs().flatten(0, -2).amax(0)  # per value of the last dimension
    peak = magnitude.max().item()
    if peak > limit:
        dims = (magnitude > limit).nonzero().flatten().tolist()
        raise ValueError(
            f"The normalised `{name}` reaches |x| = {peak:.3g} (at index {dims} of its last dimension), beyond "
            f"--policy.max_normalized_input={limit:g} (a normalised value is of order 1). Check the sensor and its "
            "units, and the normalisation statistics saved with the checkpoint (a value that never changed in "
            "the training data has a standard deviation near 0, so any change is huge); raise the limit, or set "
            "it to null, only if the training data held such values."
        )


def check_rtc_arguments(
    leftover: Tensor,
    inference_delay: int | None,
    execution_horizon: int | None,
    batch_size: int,
    chunk_size: int,
    action_dim: int,
    limit: float | None,
) -> None:
    """Refuse real-time-chunking arguments that LeRobot's ``RTCProcessor`` would silently use wrongly: it zero-pads
    missing action dims of the previous chunk (steering those joints toward 0) and broadcasts one row over a
    batch."""
    for arg, value, low in (("inference_delay", inference_delay, 0), ("execution_horizon", execution_horizon, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"`{arg}` must be an integer >= {low} (action steps), got {value!r}.")
    name = "prev_chunk_left_over"
    if not isinstance(leftover, Tensor) or not leftover.is_floating_point():
        raise TypeError(f"`{name}` must be a float tensor [T, A] or [B, T, A], got {type(leftover).__name__}.")
    if leftover.ndim not in (2, 3):
        raise ValueError(f"`{name}` must be [T, A] or [B, T, A], got shape {tuple(leftover.shape)}.")
    steps, dims = leftover.shape[-2:]
    if dims != action_dim:
        raise ValueError(
            f"`{name}` has {dims} action values per step, the policy predicts {action_dim}. Pass the previous "
            "chunk as the policy returned it (normalised, before the post-processor drops or renames joints)."
        )
    if steps > chunk_size:
        raise ValueError(f"`{name}` has {steps} steps, more than the policy's chunk of {chunk_size}.")
    rows = leftover.shape[0] if leftover.ndim == 3 else 1
    if rows != batch_size and (leftover.ndim == 3 or batch_size > 1):
        raise ValueError(
            f"`{name}` has {rows} row(s) for a batch of {batch_size}: give each sample its own previous chunk "
            f"([{batch_size}, T, {action_dim}]); one row is not broadcast over the batch."
        )
    check_finite(leftover, name, "It is the previous chunk's unexecuted rest; it must come from the policy itself.")
    check_magnitude(leftover, name, limit)


def check_observation(batch: dict[str, Any], camera_keys: list[str], has_state: bool) -> int:
    """Check the structure of a batch and return its batch size.

    Cameras must be float tensors ``[B, 3, H, W]`` (or ``[B, T, 3, H, W]``), the state ``[B, S]`` (or
    ``[B, T, S]``), ``task`` one string or one string per sample, all with the same ``B >= 1``.
    """
    sizes: dict[str, int] = {}
    for key in camera_keys:
        image = batch.get(key)
        if image is None:
            continue  # a missing camera is reported with the cameras the batch does have (camera_layout)
        if not isinstance(image, Tensor):
            raise TypeError(
                f"Camera `{key}` is a {type(image).__name__}; the policy takes torch tensors [B, 3, H, W] in [0, 1]. "
                "Run observations through the policy's preprocessor (make_pre_post_processors), which converts them."
            )
        if image.ndim == 3:
            raise ValueError(
                f"Camera `{key}` has shape {tuple(image.shape)}, with no batch dimension; the policy takes "
                "[B, 3, H, W]. Add one with image.unsqueeze(0), or use the policy's preprocessor (it does)."
            )
        if image.ndim not in (4, 5):
            raise ValueError(f"Camera `{key}` must be [B, 3, H, W] or [B, T, 3, H, W], got {tuple(image.shape)}.")
        if image.shape[-3] != 3:
            layout = " (channels last: permute it to [B, 3, H, W])" if image.shape[-1] == 3 else ""
            raise ValueError(f"Camera `{key}` must have 3 channels first, got shape {tuple(image.shape)}{layout}.")
        if not image.is_floating_point():
            raise ValueError(
                f"Camera `{key}` has dtype {image.dtype}; the policy takes float images in [0, 1] (LeRobot's "
                "convention). Convert uint8 frames with image.float() / 255; a bool or 0/1 mask is not a camera."
            )
        sizes[key] = image.shape[0]
    if has_state and isinstance(batch.get(OBS_STATE), Tensor):
        state = batch[OBS_STATE]
        if state.ndim == 1:
            raise ValueError(
                f"`{OBS_STATE}` has shape {tuple(state.shape)}, with no batch dimension; the policy takes [B, S]. "
                "Add one with state.unsqueeze(0), or use the policy's preprocessor (it does)."
            )
        sizes[OBS_STATE] = state.shape[0]
    elif has_state and OBS_STATE in batch:
        raise TypeError(f"`{OBS_STATE}` is a {type(batch[OBS_STATE]).__name__}; the policy takes a torch tensor.")
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"The inputs disagree on the batch size: {sizes}. Every camera and the state need one row per sample."
        )
    batch_size = next(iter(sizes.values()), None)
    if batch_size == 0:
        raise ValueError("The batch is empty (batch size 0); there is nothing to act on.")
    task = batch.get("task")
    if task is not None and not isinstance(task, str):
        tasks = list(task) if isinstance(task, list | tuple) else None
        if tasks is None or not all(isinstance(t, str) for t in tasks):
            raise TypeError(
                f"`task` must be a string or a list of strings (one per sample), got {task!r}. Give the "
                "instruction as text, e.g. --dataset.single_task='pick up the cube'."
            )
        if batch_size is not None and len(tasks) != batch_size:
            raise ValueError(f"Got {len(tasks)} task strings for a batch of {batch_size}.")
    return batch_size if batch_size is not None else _batch_size_of_task(task)


def _batch_size_of_task(task: Any) -> int:
    return 1 if task is None or isinstance(task, str) else len(task)


def diagnose_non_finite_actions(model: nn.Module, state: Tensor | None) -> str:
    """Why a network's output is not finite: bad weights, an extreme (normalised) state, or overflow."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            return (
                f"the policy's weights contain NaN or Inf (first: `{name}`): the checkpoint is corrupt or training "
                "diverged. Load another checkpoint (re-download or re-convert it)."
            )
    if state is not None:
        peak = state.detach().abs().max().item()
        if peak > 1e3:
            return (
                f"the normalised `{OBS_STATE}` reaches |x| = {peak:.3g} (a normalised state is of order 1): check "
                "the sensor values and the state normalisation statistics saved with the checkpoint."
            )
    return "the network overflowed on finite inputs; run with --policy.dtype=float32 and check the inputs' ranges."


@ProcessorStepRegistry.register(name="fastwam_plugin_action_guard")
@dataclass
class FastWAMActionGuardStep(PolicyActionProcessorStep):
    """Last step before the robot: refuse a non-finite action, clamp it to the training range.

    The range is the training dataset's action ``min``/``max`` (saved with the checkpoint as this step's state),
    widened by ``margin`` times its width on each side; ``margin=None`` or no statistics: no clamping. The first
    clamp of a run is logged; ``num_clamped`` counts the clamped values.

    Args:
        margin: fraction of the training range allowed beyond each end (``--policy.action_clamp_margin``).
    """

    margin: float | None = 0.05
    action_min: Tensor | None = None
    action_max: Tensor | None = None

    def __post_init__(self) -> None:
        self.num_clamped = 0
        if self.action_min is not None:
            self.load_state_dict({"action_min": self.action_min, "action_max": self.action_max})

    def action(self, action: PolicyAction) -> PolicyAction:
        if not torch.isfinite(action).all():
            raise NonFiniteActionError(
                "The unnormalised action contains NaN or Inf although the policy's own output was finite: the "
                "action normalisation statistics saved with the checkpoint (policy_postprocessor_*.safetensors) "
                "are not finite. Recompute them from the dataset (lerobot-train does) or fix the converted stats."
            )
        if self.margin is None or self.action_min is None:
            return action
        width = self.action_max - self.action_min
        low = (self.action_min - self.margin * width).to(action.device, action.dtype)
        high = (self.action_max + self.margin * width).to(action.device, action.dtype)
        clamped = torch.maximum(torch.minimum(action, high), low)
        changed = int((clamped != action).sum())
        if changed:
            if not self.num_clamped:
                logger.warning(
                    "Fast-WAM: an action outside the training range (widened by %g of its width) was clamped to "
                    "it; set --policy.action_clamp_margin to widen the range, or null to switch clamping off.",
                    self.margin,
                )
            self.num_clamped += changed
        return clamped

    def get_config(self) -> dict[str, Any]:
        return {"margin": self.margin}

    def state_dict(self) -> dict[str, Tensor]:
        if self.action_min is None:
            return {}
        return {"action_min": self.action_min, "action_max": self.action_max}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        low = torch.as_tensor(state["action_min"], dtype=torch.float32).flatten()
        high = torch.as_tensor(state["action_max"], dtype=torch.float32).flatten()
        if low.shape != high.shape or not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError(
                f"The action range for clamping must be two finite vectors of one length, got min {low.tolist()} "
                f"and max {high.tolist()}. Recompute the dataset statistics, or set --policy.action_clamp_margin=null."
            )
        if (low > high).any():
            raise ValueError(f"The action range for clamping has min > max: min {low.tolist()}, max {high.tolist()}.")
        self.action_min, self.action_max = low, high

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def action_range(dataset_stats: dict[str, dict[str, Any]] | None) -> tuple[Tensor, Tensor] | None:
    """The training dataset's action ``(min, max)``, when its statistics have them."""
    stats = (dataset_stats or {}).get(ACTION, {})
    if "min" not in stats or "max" not in stats:
        return None
    return torch.as_tensor(stats["min"], dtype=torch.float32), torch.as_tensor(stats["max"], dtype=torch.float32)


def clamp_to_unnormalizer_range(steps: list) -> None:
    """Give a loaded post-processor's action guard the action range of its unnormaliser's statistics.

    Both are saved from the same statistics, so a checkpoint loads unchanged. ``lerobot-train --policy.path``
    replaces the unnormaliser's with the new dataset's, and knows nothing of the guard: it would keep clamping to
    the checkpoint's range, that of another dataset (relative or absolute actions, another arm's joints)."""
    guard = next((step for step in steps if isinstance(step, FastWAMActionGuardStep)), None)
    unnormalizer = next((step for step in steps if isinstance(step, UnnormalizerProcessorStep)), None)
    bounds = None if guard is None or unnormalizer is None else action_range(unnormalizer.stats)
    if bounds is not None:
        guard.load_state_dict({"action_min": bounds[0].cpu(), "action_max": bounds[1].cpu()})
