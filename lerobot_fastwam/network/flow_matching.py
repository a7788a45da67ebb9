"""Flow matching shared by the video and action streams (reference sections 4 and 5).

Noise level ``s`` in [0, 1]: ``x_s = (1 - s) x0 + s eps``; the network predicts the velocity ``eps - x0`` and
is conditioned on ``timestep = num_train_timesteps * s``. Training draws ``s = shift u / (1 + (shift - 1) u)``
with ``u ~ U(0, 1)``; sampling walks the same shift warp of ``linspace(1, 0, steps + 1)`` with Euler steps.
Both follow the official Fast-WAM code and LeRobot's built-in ``WanContinuousFlowMatchScheduler``
(``sample_training_t``; ``build_inference_schedule``, i.e. Wan2.2's ``get_sampling_sigmas``).

Few-step sampling (shortcut models, Frans et al. 2024): with ``action_consistency_weight > 0`` the action expert
is also conditioned on the step size ``d``, a fraction of the uniform grid that the shift warp maps to noise
levels (one step: ``d = 1``, from level 1 to 0). ``d = 0`` is the instantaneous velocity, trained by flow
matching as before; a step of size ``d`` in ``SHORTCUT_STEP_SIZES`` is trained to land where two steps of size
``d / 2`` of the same network land (``FastWAM.compute_loss``), so a chunk can be sampled in 1, 2, 4 or 8 steps.

Why not diffusers' ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5)``: its defaults give
other values (pinned by tests/network/test_cached_inference.py and tests/network/test_training.py).

- Inference: ``set_timesteps(10)`` spaces 10 levels linearly from ``sigma_max = 1`` to ``sigma_min``, the last
  level of its training grid (already warped, 0.00498), warps them a second time and appends 0: sigmas
  1, 0.9757, 0.9463, ..., 0.3951, 0.0244, 0. Ours: 1, 0.9783, 0.9524, ..., 0.5556, 0.3571, 0: every level
  but the first and the last differs (its last step starts at 0.0244, ours at 0.3571). Given ours explicitly,
  ``set_timesteps(sigmas=linspace(1, 0, 11)[:-1])`` reproduces them up to float32 rounding (it warps in float32,
  ours in float64).
- Training: it holds a discrete grid of 1000 levels, the warp of ``k / 1000`` for k = 1..1000 (timesteps
  ``1000 * sigma``), which training scripts index; ours draws continuous levels. That grid is, up to float32
  rounding, the one ``TimestepLossWeight`` normalises over.
"""

from __future__ import annotations

import torch


def shift_warp(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_noise_levels(batch_size: int, shift: float, device: torch.device) -> torch.Tensor:
    """Training noise levels ``s`` of shape [B], one per sample."""
    return shift_warp(torch.rand(batch_size, device=device), shift)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    s = s.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


class TimestepLossWeight:
    """Wan's bell-shaped per-sample loss weight over timesteps, normalised to mean 1 on the sampling grid.

    ``w(t) = exp(-2 ((t - T/2) / T)^2)``, shifted so the grid minimum is 0 and divided by the grid mean, as in
    the official training code.
    """

    def __init__(self, num_train_timesteps: int, shift: float):
        self.num_train_timesteps = float(num_train_timesteps)
        grid = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float64)[:-1]
        y = self._bell(shift_warp(grid, shift) * self.num_train_timesteps)
        self.y_min = float(y.min())
        self.norm = float((y - self.y_min).mean())

    def _bell(self, t: torch.Tensor) -> torch.Tensor:
        half = self.num_train_timesteps / 2.0
        return torch.exp(-2.0 * ((t - half) / self.num_train_timesteps) ** 2)

    def __call__(self, timesteps: torch.Tensor) -> torch.Tensor:
        return (self._bell(timesteps.float()) - self.y_min) / (self.norm + 1e-10)


def inference_noise_levels(num_steps: int, shift: float) -> torch.Tensor:
    """Noise levels ``[num_steps + 1]`` from 1 to 0: the shift warp of ``linspace(1, 0, num_steps + 1)``."""
    return shift_warp(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift).float()


# Step sizes (fractions of the uniform grid) the self-consistency term trains: 1, 2, 4 and 8 steps a chunk.
# Half of the smallest is below the grid: its two half-steps take the instantaneous velocity (d = 0).
SHORTCUT_STEP_SIZES = (1.0, 0.5, 0.25, 0.125)
CONSISTENCY_FRACTION = 0.25  # of each batch trained on the self-consistency target instead of flow matching


def sample_shortcut_steps(count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` training steps for the self-consistency term: (step size ``d`` [count], start ``u`` [count]),
    ``d`` uniform over ``SHORTCUT_STEP_SIZES`` and ``u`` uniform over the multiples of ``d`` in (0, 1], so that
    training visits exactly the steps a ``1 / d``-step sampler takes (the start of one step is level ``warp(u)``,
    its end ``warp(u - d)``)."""
    sizes = torch.tensor(SHORTCUT_STEP_SIZES, device=device)
    step = sizes[torch.randint(len(sizes), (count,), device=device)]
    steps_per_chunk = (1.0 / step).round()
    start = (torch.floor(torch.rand(count, device=device) * steps_per_chunk) + 1.0) * step
    return step, start


def shortcut_step_size(num_steps: int) -> float:
    """The step size a ``num_steps``-step sampler conditions on: ``1 / num_steps`` where the self-consistency term
    trained it, else 0 (the instantaneous velocity, which plain flow matching trains: many small steps)."""
    return 1.0 / num_steps if 1.0 / num_steps in SHORTCUT_STEP_SIZES else 0.0
