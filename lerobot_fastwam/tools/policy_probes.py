"""Measurements of what a trained policy has learned, for any LeRobot policy (Fast-WAM, ACT, ...).

- ``image_dependence``: does the predicted chunk change when only the camera image changes? The RMS change
  of the chunk when each frame's camera images are replaced by another frame's, divided by the change when
  the whole observation (images, state) is replaced. About 0 means a policy acts on the state alone.
- ``chunk_errors``: mean squared error of the predicted chunk against the recorded actions, next to the
  error of always predicting the dataset's mean action (what a policy that ignores its input would score).
- ``chunk_latency``: the median time of one ``predict_action_chunk`` at batch 1, as a robot waits for it.

Both run the checkpoint's own pre/post-processors, so they see what ``lerobot-eval`` sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lerobot.utils.constants import ACTION


def load_policy(path: str | Path, device: str = "cpu"):
    """A checkpoint directory -> (policy, preprocessor, postprocessor), as LeRobot's scripts load them."""
    from lerobot.configs import PreTrainedConfig  # noqa: PLC0415
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors  # noqa: PLC0415

    config = PreTrainedConfig.from_pretrained(path)
    config.device = device
    policy = get_policy_class(config.type).from_pretrained(path, config=config).eval()
    pre, post = make_pre_post_processors(
        config, pretrained_path=str(path), preprocessor_overrides={"device_processor": {"device": device}}
    )
    return policy, pre, post


def probe_frames(dataset_root: str | Path, repo_id: str, count: int, horizon: int) -> dict[str, Any]:
    """``count`` evenly spaced frames of a dataset as one batch, with their next ``horizon`` recorded actions
    (``action`` ``[N, horizon, A]``, ``action_is_pad``)."""
    from lerobot.datasets import (
        LeRobotDataset,  # noqa: PLC0415
        LeRobotDatasetMetadata,  # noqa: PLC0415
    )

    meta = LeRobotDatasetMetadata(repo_id, root=dataset_root)
    dataset = LeRobotDataset(
        repo_id, root=dataset_root, delta_timestamps={ACTION: [i / meta.fps for i in range(horizon)]}
    )
    count = min(count, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    items = [dataset[i] for i in indices]
    batch: dict[str, Any] = {}
    for key, value in items[0].items():
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack([item[key] for item in items])
        elif key == "task":
            batch[key] = [item[key] for item in items]
    return batch


def probe_policy(policy, pre, post, batch: dict[str, Any], mean_action: torch.Tensor, horizon: int = 10):
    """Image dependence and chunk errors, predicting the batch's chunks once for both."""
    base = predict_chunks(policy, pre, post, _observation(batch), horizon)
    return {**image_dependence(policy, pre, post, batch, horizon, base), **chunk_errors(batch, base, mean_action)}


def _observation(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k.startswith("observation.") or k == "task"}


@torch.no_grad()
def predict_chunks(policy, pre, post, observations: dict[str, Any], horizon: int, batch_size: int = 32):
    """Unnormalised chunks ``[N, horizon, A]`` for a batch of raw observations."""
    total = len(observations["task"])
    chunks = []
    for start in range(0, total, batch_size):
        part = {
            k: (v[start : start + batch_size] if isinstance(v, torch.Tensor | list) else v)
            for k, v in observations.items()
        }
        policy.reset()
        chunk = policy.predict_action_chunk(pre(part))[:, :horizon]
        chunks.append(post(chunk).float().cpu())
    return torch.cat(chunks)


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def image_dependence(
    policy, pre, post, batch: dict[str, Any], horizon: int = 10, base: torch.Tensor | None = None
) -> dict[str, float]:
    """Pairs each frame with the frame half the set away; returns the image-only and whole-observation RMS
    changes of the first ``horizon`` actions and their ratio. ``base``: the batch's chunks, if predicted."""
    observations = _observation(batch)
    total = len(observations["task"])
    partner = (torch.arange(total) + total // 2) % total
    cameras = [k for k in observations if k.startswith("observation.image")]
    swapped_images = dict(observations)
    for key in cameras:
        swapped_images[key] = observations[key][partner]
    if base is None:
        base = predict_chunks(policy, pre, post, observations, horizon)
    image_only = _rms(predict_chunks(policy, pre, post, swapped_images, horizon), base)
    whole = _rms(base[partner], base)
    return {
        "image_only_rms": image_only,
        "whole_observation_rms": whole,
        "image_dependence": image_only / whole if whole > 0 else 0.0,
        "n_frames": total,
    }


def chunk_errors(batch: dict[str, Any], predicted: torch.Tensor, mean_action: torch.Tensor) -> dict[str, float]:
    """MSE of the predicted chunks ``[N, horizon, A]`` and of the dataset-mean action against the recording
    (padded steps past an episode's end are not scored)."""
    horizon = predicted.shape[1]
    target = batch[ACTION][:, :horizon].float()
    valid = ~batch.get(f"{ACTION}_is_pad", torch.zeros(target.shape[:2], dtype=torch.bool))[:, :horizon]

    def mse(prediction: torch.Tensor) -> float:
        err = (prediction - target).pow(2).mean(dim=-1)
        return float(err[valid].mean())

    return {"policy_mse": mse(predicted), "mean_action_mse": mse(mean_action.float().expand_as(target))}


@torch.no_grad()
def chunk_latency(policy, pre, batch: dict[str, Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``predict_action_chunk`` on the first observation of ``batch`` (preprocessed once,
    as a robot loop preprocesses each frame before the policy)."""
    import time  # noqa: PLC0415

    observation = pre({k: (v[:1] if isinstance(v, torch.Tensor | list) else v) for k, v in _observation(batch).items()})
    times = []
    for i in range(warmup + repeats):
        policy.reset()
        start = time.perf_counter()
        policy.predict_action_chunk(observation)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return float(torch.tensor(times).median())
