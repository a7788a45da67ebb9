"""Cached inference (first-frame prefill + action-only steps) equals the full masked joint forward."""

import torch

from lerobot_fastwam.data.camera_layout import current_frame
from lerobot_fastwam.network.flow_matching import inference_noise_levels

from ..helpers import make_policy, observation


@torch.no_grad()
def test_cached_sampler_equals_joint_forward_euler():
    policy = make_policy(state_dim=None, cameras=2)
    model = policy.model.eval()
    cfg = policy.config
    g = torch.Generator().manual_seed(0)
    first = torch.randn(3, 48, 1, 2, 4, generator=g)
    context = torch.randn(3, 17, 32, generator=g)
    noise = torch.randn(3, cfg.chunk_size, cfg.action_dim, generator=g)

    cached = model.sample_actions(first, context, noise, num_steps=cfg.num_inference_steps)

    # Reference: the joint forward over [F0 | future | actions] at every step, no caches (any future latents
    # do: the actions never read them).
    future = torch.randn(3, 48, 2, 2, 4, generator=g)
    latents = torch.cat([first, future], dim=2)
    levels = inference_noise_levels(cfg.num_inference_steps, cfg.timestep_shift)
    x = noise.clone()
    for i in range(cfg.num_inference_steps):
        t = float(levels[i]) * cfg.num_train_timesteps
        frame_t = torch.tensor([[0.0, t, t]]).repeat(3, 1)
        _, velocity = model.velocity(latents, frame_t, context, x, torch.full((3,), t))
        x = x + (levels[i + 1] - levels[i]) * velocity
    torch.testing.assert_close(cached, x, rtol=1e-4, atol=1e-5)


def test_inference_schedule_is_the_shift_warp_of_a_uniform_grid():
    from lerobot.policies.fastwam.wan.video_dit import get_sampling_sigmas  # independent implementation

    levels = inference_noise_levels(10, 5.0)
    assert levels[0] == 1.0 and levels[-1] == 0.0
    torch.testing.assert_close(levels[:-1].double(), torch.as_tensor(get_sampling_sigmas(10, 5.0)), atol=1e-6, rtol=0)


def test_inference_schedule_relation_to_diffusers_flow_match_euler_scheduler():
    """diffusers' default 10-step schedule is not ours (flow_matching's docstring says why); given our levels
    explicitly it reproduces them and their timesteps."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    ours = inference_noise_levels(10, 5.0)
    default = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    default.set_timesteps(10)
    assert default.sigmas[0] == ours[0] == 1.0 and default.sigmas[-1] == ours[-1] == 0.0
    assert (default.sigmas[1:-1] - ours[1:-1]).abs().min() > 2e-3  # every other level differs
    assert abs(float(default.sigmas[-2]) - 0.0244) < 1e-4 and abs(float(ours[-2]) - 5 / 14) < 1e-6

    given = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    given.set_timesteps(sigmas=np.linspace(1.0, 0.0, 11)[:-1].tolist())
    torch.testing.assert_close(given.sigmas, ours, atol=1e-7, rtol=0)
    torch.testing.assert_close(given.timesteps, ours[:-1] * 1000, atol=1e-4, rtol=0)


@torch.no_grad()
def test_batched_prediction_equals_per_sample_prediction():
    policy = make_policy()
    batch = observation(policy.config, batch_size=3, seed=5, tasks=["a", "b", "a"])
    together = policy.predict_action_chunk(batch)
    for i in range(3):
        single = {k: (v[i : i + 1] if torch.is_tensor(v) else [v[i]]) for k, v in batch.items()}
        torch.testing.assert_close(policy.predict_action_chunk(single), together[i : i + 1], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_compiled_action_step_gives_the_eager_chunk():
    eager = make_policy(seed=4)
    compiled = make_policy(seed=4, compile_action_step=True)
    batch = observation(eager.config, batch_size=2, seed=9)
    expected = eager.predict_action_chunk(batch)
    torch.testing.assert_close(compiled.predict_action_chunk(batch), expected, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_robotwin_layout_tiles_top_above_wrists():
    from lerobot.configs import FeatureType, PolicyFeature

    from lerobot_fastwam.configuration_fastwam import FastWAMConfig

    inputs = {
        "observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 64, 96)),
        "observation.images.left": PolicyFeature(FeatureType.VISUAL, (3, 32, 48)),
        "observation.images.right": PolicyFeature(FeatureType.VISUAL, (3, 32, 48)),
    }
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (14,))}
    config = FastWAMConfig(
        preset="tiny",
        image_size=(96, 96),
        camera_layout="top_and_wrists",
        device="cpu",
        camera_keys=list(inputs),
        input_features=inputs,
        output_features=outputs,
    )
    from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

    policy = FastWAMPolicy(config)
    batch = observation(config, batch_size=2)
    frames = current_frame(batch, policy.config)  # [B, 3, 1, 96, 96]
    assert frames.shape == (2, 3, 1, 96, 96)
    torch.testing.assert_close(frames[:, :, 0, :64, :], batch["observation.images.top"])
    torch.testing.assert_close(frames[:, :, 0, 64:, :48], batch["observation.images.left"])
    torch.testing.assert_close(frames[:, :, 0, 64:, 48:], batch["observation.images.right"])
    assert policy.predict_action_chunk(batch).shape == (2, 32, 14)


def test_imagined_future_frames_decode_from_the_first_frame():
    policy = make_policy(video_codec="dct", image_size=(64, 64), cameras=1).eval()
    batch = observation(policy.config)
    frames, latents = policy.predict_future_frames(batch)
    assert frames.shape == (2, 3, 9, 64, 64) and 0.0 <= frames.min() and frames.max() <= 1.0
    assert latents.shape == (2, 48, 2, 4, 4) and torch.isfinite(latents).all()
    again, _ = policy.predict_future_frames(batch)
    torch.testing.assert_close(again, frames)  # fixed-seed noise, as for actions
    other = observation(policy.config, seed=1)
    assert not torch.allclose(policy.predict_future_frames(other)[1], latents)  # it depends on the frame


@torch.no_grad()
def test_prompt_keys_values_kept_across_chunks_give_the_uncached_chunk():
    """The text's cross-attention keys/values are reused while the prompts and weights stay; only the state
    token's are new. Every chunk equals the one computed from the whole context, also after a weight update."""
    policy = make_policy(cameras=2)
    model = policy.model.eval()
    cfg = policy.config
    g = torch.Generator().manual_seed(1)
    text = torch.randn(2, 16, cfg.text_dim, generator=g)  # two prompts
    first = torch.randn(3, 48, 1, 2, 4, generator=g)
    noise = torch.randn(3, cfg.chunk_size, cfg.action_dim, generator=g)
    prompts = ("open the drawer", "press the button", "open the drawer")
    calls = []
    embed = model.action.embed_context
    model.action.embed_context = lambda x: calls.append(x.shape[:2]) or embed(x)

    def both(state):
        context = model.build_context(text[[0, 1, 0]], state)
        kept = model.sample_actions(first, context, noise, 2, prompts=prompts)
        return kept, model.sample_actions(first, context, noise, 2)

    for _ in range(2):
        kept, full = both(torch.randn(3, cfg.state_dim, generator=g))
        torch.testing.assert_close(kept, full, rtol=1e-5, atol=1e-6)
    # The prompts' text went through once, as two distinct rows; every chunk re-embeds only its state token.
    text_calls = [shape for shape in calls if shape[1] == 16]
    assert text_calls == [(2, 16)]
    assert calls.count((3, 1)) == 2

    with torch.no_grad():  # an optimiser step or a load writes the weights in place
        model.mot.action.blocks[0].attn2.to_k.weight.mul_(1.5)
    kept, full = both(torch.randn(3, cfg.state_dim, generator=g))
    torch.testing.assert_close(kept, full, rtol=1e-5, atol=1e-6)
    assert [shape for shape in calls if shape[1] == 16] == [(2, 16), (2, 16)]


@torch.no_grad()
def test_policy_chunks_with_kept_prompt_keys_values_equal_fresh_ones():
    policy = make_policy(cameras=2).eval()
    batch = observation(policy.config, batch_size=2, seed=3, tasks=["same task", "same task"])
    torch.manual_seed(0)
    first = policy.predict_action_chunk(batch)  # fills the prompt cache
    torch.manual_seed(0)
    again = policy.predict_action_chunk(batch)  # reads it
    policy.model._prompt_kv = None
    torch.manual_seed(0)
    fresh = policy.predict_action_chunk(batch)
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)
    torch.testing.assert_close(first, fresh, rtol=0, atol=0)
