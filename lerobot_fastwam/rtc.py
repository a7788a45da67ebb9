"""Real-time chunking on the action sampler: LeRobot's ``RTCProcessor`` as the guidance of each Euler step.

LeRobot's ``denoise_step`` corrects a step's velocity so that the chunk's prefix (the actions executed while it
is computed) continues the previous chunk's leftover. Each guided step moves the actions by (the step's length)
x (LeRobot's guidance weight) x (the gap to the leftover); many small steps correct an overshoot, a few-step
sampler cannot (one step from pure noise: length 1, weight ``max_guidance_weight``). A step whose gain exceeds
1 is scaled back to gain 1, which pulls the prefix onto the leftover (soft inpainting); 8- and 10-step sampling
never reach gain 1 and run LeRobot's guidance unchanged.
"""

from __future__ import annotations

from torch import Tensor


def rtc_guidance_weight(time: float, max_weight: float) -> float:
    """The guidance weight LeRobot's ``RTCProcessor.denoise_step`` applies at noise level ``time`` (its schedule
    with ``tau = 1 - time``: ``(1 - tau) / tau * ((1 - tau)^2 + tau^2) / (1 - tau)^2``, at most ``max_weight``)."""
    tau = 1.0 - time
    if tau <= 0:
        return max_weight
    if tau >= 1:
        return 0.0
    return min(max_weight, (1 - tau) / tau * ((1 - tau) ** 2 + tau**2) / (1 - tau) ** 2)


def rtc_guidance(processor, prev_chunk_left_over: Tensor, inference_delay: int, execution_horizon: int | None):
    """The ``VelocityGuidance`` of one chunk (``FastWAM.sample_actions``): ``processor.denoise_step`` toward
    ``prev_chunk_left_over`` ``[T, A]`` or ``[B, T, A]``, with the gain of each step capped at 1."""
    previous = prev_chunk_left_over.float()
    max_weight = processor.rtc_config.max_guidance_weight

    def guidance(x_t: Tensor, velocity_fn, noise_level: float, next_level: float) -> Tensor:
        base = {}

        def remembered(x: Tensor) -> Tensor:
            base["velocity"] = velocity_fn(x)
            return base["velocity"]

        guided = processor.denoise_step(
            x_t=x_t,
            prev_chunk_left_over=previous.to(x_t.device),
            inference_delay=inference_delay,
            time=noise_level,
            original_denoise_step_partial=remembered,
            execution_horizon=execution_horizon,
        )
        gain = rtc_guidance_weight(noise_level, max_weight) * (noise_level - next_level)
        if gain > 1:
            velocity = base["velocity"].detach()
            guided = velocity + (guided - velocity) / gain
        return guided

    return guidance
