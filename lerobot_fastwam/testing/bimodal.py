"""Demonstrations that disagree: for one and the same observation, half the demonstrated action chunks move +1
on the first action axis and half -1 (all other actions 0), the way teleoperators pass an obstacle on the left or
on the right. A sampler that returns the mean (0) is wrong on every chunk; a good one returns either mode, half
of the time each.

Used by the few-step tests and ``benchmarks/multimodal.py``: ``bimodal_batch`` builds preprocessed training
batches, ``train_bimodal`` trains a policy on them, ``mode_statistics`` scores its sampled chunks.
"""

from __future__ import annotations

import torch

from ..modeling_fastwam import FastWAMPolicy

MODE = 1.0  # the two modes: +MODE and -MODE on action axis 0
RADIUS = 0.2  # a chunk "lands on a mode" within this RMS distance of it


def observation_batch(policy: FastWAMPolicy, batch_size: int, frames: int | None = None) -> dict:
    """``batch_size`` copies of one fixed preprocessed observation (cameras, state, task)."""
    config = policy.config
    generator = torch.Generator().manual_seed(0)
    lead = (1,) if frames is None else (1, frames)
    batch = {
        key: torch.rand(*lead, 3, h, w, generator=generator).expand(batch_size, *([-1] * (len(lead) + 2)))
        for key, (h, w) in config.camera_tile_sizes.items()
    }
    if config.state_dim is not None:
        batch["observation.state"] = torch.randn(1, *lead[1:], config.state_dim, generator=generator).expand(
            batch_size, *([-1] * len(lead))
        )
    batch["task"] = ["pass the obstacle"] * batch_size
    return batch


def bimodal_batch(policy: FastWAMPolicy, batch_size: int, generator: torch.Generator) -> dict:
    """A training batch: the fixed observation's clip, half the chunks +MODE and half -MODE on axis 0, in random
    order (exactly half each, as an epoch of a 50/50 dataset: a batch's chance imbalance would tilt the learnt
    mode weights)."""
    config = policy.config
    batch = observation_batch(policy, batch_size, frames=config.num_video_frames)
    sign = torch.where(torch.randperm(batch_size, generator=generator) < batch_size // 2, MODE, -MODE)
    actions = torch.zeros(batch_size, config.chunk_size, config.action_dim)
    actions[:, :, 0] = sign[:, None]
    batch["action"] = actions
    batch["action_is_pad"] = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool)
    return batch


def train_bimodal(policy: FastWAMPolicy, steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> list:
    """Train ``policy`` on bimodal batches with AdamW, the learning rate decaying linearly to 0 (the last weights
    are the ones a checkpoint would keep). Returns the logged losses of every step."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    policy.train()
    logs = []
    for _ in range(steps):
        loss, logged = policy.forward(bimodal_batch(policy, batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        logs.append(logged)
    policy.eval()
    return logs


@torch.no_grad()
def sample_chunks(policy: FastWAMPolicy, num_steps: int, count: int = 256, seed: int = 0) -> torch.Tensor:
    """``count`` chunks ``[count, H, A]`` for the fixed observation, each from its own noise, at ``num_steps``."""
    config = policy.config
    saved = config.num_inference_steps, config.inference_seed
    config.num_inference_steps, config.inference_seed = num_steps, None
    try:
        policy.reset()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return policy.predict_action_chunk(observation_batch(policy, count))
    finally:
        config.num_inference_steps, config.inference_seed = saved


def mode_statistics(chunks: torch.Tensor) -> dict[str, float]:
    """``near_mode``: the fraction of chunks within ``RADIUS`` (RMS over the chunk) of a mode; ``plus_fraction``:
    the fraction of all chunks nearer the +MODE mode than the -MODE one (0.5 for a balanced sampler);
    ``mean_distance``: the mean RMS distance to the nearest mode."""
    modes = torch.zeros(2, *chunks.shape[1:])
    modes[0, :, 0], modes[1, :, 0] = MODE, -MODE
    distance = (chunks[:, None].float() - modes[None]).pow(2).mean(dim=(2, 3)).sqrt()  # [N, 2]
    nearest = distance.min(dim=1).values
    return {
        "near_mode": (nearest < RADIUS).float().mean().item(),
        "plus_fraction": (distance[:, 0] < distance[:, 1]).float().mean().item(),
        "mean_distance": nearest.mean().item(),
    }
