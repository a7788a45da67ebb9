"""Real-time chunking through LeRobot's own RTC module: declared the way LeRobot's rollout checks it, an error
until configured, and a guidance that pulls a new chunk's first steps toward the previous chunk's leftover."""

import pytest
import torch
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.rollout.inference.rtc import supports_rtc_inference

from ..helpers import make_policy, observation

DELAY = 3


def _rtc_policy(**overrides):
    policy = make_policy(seed=5, **overrides)
    policy.config.rtc_config = RTCConfig(execution_horizon=10, max_guidance_weight=10.0)
    policy.init_rtc_processor()  # what lerobot-rollout --inference.type=rtc does after loading
    return policy


@pytest.fixture(scope="module")
def rtc_policy():
    return _rtc_policy()


def test_lerobot_rollout_accepts_the_policy_for_rtc():
    assert supports_rtc_inference(make_policy())


def test_rtc_arguments_without_rtc_configured_are_an_error_not_ignored():
    policy = make_policy()
    batch = observation(policy.config, batch_size=1)
    leftover = torch.zeros(20, policy.config.action_dim)
    with pytest.raises(ValueError, match="RTC is not configured.*--inference.type=rtc"):
        policy.predict_action_chunk(batch, inference_delay=DELAY, prev_chunk_left_over=leftover)
    with pytest.raises(TypeError):  # anything else is refused by the signature, never swallowed
        policy.predict_action_chunk(batch, noise=torch.zeros(1))


def test_rtc_pulls_the_new_chunk_toward_the_previous_chunks_leftover():
    policy = _rtc_policy()
    previous = policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=1))
    leftover = previous[0, policy.config.n_action_steps :]  # [T, A]: what the robot has not executed yet
    now = observation(policy.config, batch_size=1, seed=2)  # the scene moved on meanwhile
    plain = policy.predict_action_chunk(now)  # the first chunk of a run: no leftover, no guidance
    guided = policy.predict_action_chunk(now, inference_delay=DELAY, prev_chunk_left_over=leftover)
    assert torch.isfinite(guided).all()

    def discontinuity(chunk):  # the steps executed while this chunk was computed must match the old plan
        return (chunk[0, :DELAY] - leftover[:DELAY]).abs().mean().item()

    assert discontinuity(guided) < 0.5 * discontinuity(plain)
    # Guidance fades out after the execution horizon: the chunk's tail is the policy's own.
    tail = slice(policy.config.rtc_config.execution_horizon + 2, None)
    assert (guided[0, tail] - plain[0, tail]).abs().mean() < (guided[0, :DELAY] - plain[0, :DELAY]).abs().mean()


def test_joint_refuses_rtc_guidance():
    policy = _rtc_policy(variant="joint")
    leftover = torch.zeros(20, policy.config.action_dim)
    with pytest.raises(ValueError, match="joint sampler denoises video and actions together"):
        policy.predict_action_chunk(
            observation(policy.config, batch_size=1), inference_delay=2, prev_chunk_left_over=leftover
        )


@pytest.mark.parametrize("time", [1.0, 0.9, 0.5, 0.2, 0.0])
def test_the_few_step_gain_cap_uses_lerobots_guidance_weight(time):
    """``rtc_guidance_weight`` is the weight LeRobot's ``denoise_step`` applies: with a zero velocity the one-step
    estimate is x itself, so the guided velocity is -weight x (leftover - x) on the guided prefix."""
    from lerobot_fastwam.rtc import rtc_guidance_weight

    policy = _rtc_policy()
    x = torch.randn(1, 8, 3)
    leftover = torch.randn(1, 8, 3)
    guided = policy.rtc_processor.denoise_step(
        x_t=x,
        prev_chunk_left_over=leftover,
        inference_delay=2,
        time=time,
        original_denoise_step_partial=lambda z: torch.zeros_like(z),
        execution_horizon=4,
    )
    expected = -rtc_guidance_weight(time, policy.config.rtc_config.max_guidance_weight) * (leftover - x)
    torch.testing.assert_close(guided[0, :2], expected[0, :2])


@pytest.mark.parametrize(
    ("leftover", "match"),
    [
        (torch.zeros(2, 5, 3), "3 action values per step, the policy predicts 7"),  # zero-padded to 7 upstream
        (torch.zeros(1, 5, 7), "1 row\\(s\\) for a batch of 2"),  # broadcast over the batch upstream
        (torch.zeros(5, 7), "1 row\\(s\\) for a batch of 2"),
        (torch.full((2, 5, 7), 1e6), "reaches \\|x\\| = 1e\\+06"),  # a chunk of 1e6 upstream
        (torch.full((2, 5, 7), float("nan")), "prev_chunk_left_over` contains NaN"),
        (torch.zeros(2, 99, 7), "99 steps, more than the policy's chunk"),
        (torch.zeros(2, 5, 7, dtype=torch.long), "float tensor"),
    ],
)
def test_rtc_leftovers_that_lerobot_would_pad_or_broadcast_are_refused(rtc_policy, leftover, match):
    batch = observation(rtc_policy.config, batch_size=2)
    with pytest.raises((ValueError, TypeError), match=match):
        rtc_policy.predict_action_chunk(batch, inference_delay=2, prev_chunk_left_over=leftover, execution_horizon=8)


def test_rtc_delay_and_horizon_must_be_step_counts(rtc_policy):
    batch = observation(rtc_policy.config, batch_size=1)
    leftover = torch.zeros(1, 5, 7)
    with pytest.raises(ValueError, match="inference_delay` must be an integer >= 0"):
        rtc_policy.predict_action_chunk(batch, inference_delay=-1, prev_chunk_left_over=leftover)
    with pytest.raises(ValueError, match="execution_horizon` must be an integer >= 1"):
        rtc_policy.predict_action_chunk(batch, inference_delay=1, prev_chunk_left_over=leftover, execution_horizon=0)
    assert rtc_policy.predict_action_chunk(batch, inference_delay=1, prev_chunk_left_over=leftover).shape[0] == 1


def test_rtc_rows_are_counted_from_the_batchs_latents():
    """Precomputed latents for 2 samples, no state, one task string: a batch of 2, so a 2-row leftover fits."""
    from lerobot_fastwam.modeling_fastwam import LATENTS_KEY

    policy = _rtc_policy(state_dim=None)
    latents = policy._current_latents(observation(policy.config, batch_size=2))
    batch = {LATENTS_KEY: latents, "task": "press the button"}
    chunk = policy.predict_action_chunk(batch, inference_delay=2, prev_chunk_left_over=torch.zeros(2, 5, 7))
    assert chunk.shape[0] == 2
    with pytest.raises(ValueError, match="1 row\\(s\\) for a batch of 2"):
        policy.predict_action_chunk(batch, inference_delay=2, prev_chunk_left_over=torch.zeros(1, 5, 7))
