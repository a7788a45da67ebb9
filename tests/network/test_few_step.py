"""Few-step actions: the self-consistency objective (``action_consistency_weight``) and step-size conditioning.

A weight of 0 changes nothing; the step-size embedding starts at zero, so adding it changes nothing either; the
objective trains; a checkpoint samples with the steps it saved; RTC still continues the previous chunk at one
step; and on demonstrations with two modes, one step lands on the modes, half the time each."""

import logging

import pytest
import torch
from lerobot.policies.rtc.configuration_rtc import RTCConfig

from lerobot_fastwam.network.flow_matching import SHORTCUT_STEP_SIZES, sample_shortcut_steps, shortcut_step_size
from lerobot_fastwam.testing.bimodal import bimodal_batch, mode_statistics, sample_chunks, train_bimodal

from ..helpers import make_config, make_policy, observation, training_batch


def test_shortcut_steps_are_the_steps_of_a_1_2_4_or_8_step_sampler():
    step, start = sample_shortcut_steps(4096, torch.device("cpu"))
    assert set(step.tolist()) == set(SHORTCUT_STEP_SIZES)
    grid_index = start / step  # the start is a multiple of the step, in (0, 1]: a sampler's step exactly
    torch.testing.assert_close(grid_index, grid_index.round())
    assert (start > 0).all() and (start <= 1).all() and (start - step >= -1e-7).all()
    assert [shortcut_step_size(n) for n in (1, 2, 4, 8, 10, 3)] == [1.0, 0.5, 0.25, 0.125, 0.0, 0.0]


def test_the_zero_initialised_step_size_embedding_changes_neither_loss_nor_chunk():
    """A network that gains step-size conditioning, with the same weights otherwise, trains and samples exactly
    as before (its embedding's output layer starts at zero), so a checkpoint without it keeps its behaviour."""
    plain = make_policy(seed=1)
    conditioned = make_policy(seed=1, step_size_conditioning=True)
    assert conditioned.model.action.step_size_embedder is not None and plain.model.action.step_size_embedder is None
    missing = conditioned.model.load_state_dict(plain.model.state_dict(), strict=False).missing_keys
    assert missing and all(".step_size_embedder." in key for key in missing)
    batch = training_batch(plain.config, batch_size=3)
    losses = []
    for policy in (plain, conditioned):
        torch.manual_seed(7)
        losses.append(policy.forward(batch)[0])
    assert torch.equal(losses[0], losses[1])
    chunks = [p.eval().predict_action_chunk(observation(p.config)) for p in (plain, conditioned)]
    assert torch.equal(chunks[0], chunks[1])


def test_the_objective_trains_and_is_logged():
    policy = make_policy(action_consistency_weight=1.0, video_loss_weight=0.0)
    logs = train_bimodal(policy, steps=60, lr=3e-3)
    assert all("loss_consistency" in entry for entry in logs)
    first = sum(entry["loss_action"] for entry in logs[:10]) / 10
    last = sum(entry["loss_action"] for entry in logs[-10:]) / 10
    assert last < 0.5 * first
    assert policy.model.action.step_size_embedder.linear_2.weight.abs().sum() > 0  # the step size is read


def test_the_consistency_subset_is_scored_against_two_half_steps_of_the_network(monkeypatch):
    """With every sample in the subset, the action loss is the distance to ``_consistency_target``, which the
    test recomputes by hand as two half-size Euler steps of the action expert."""
    import lerobot_fastwam.network.model as network_model

    monkeypatch.setattr(network_model, "CONSISTENCY_FRACTION", 1.0)
    policy = make_policy(action_consistency_weight=2.0, video_loss_weight=0.0, timestep_loss_weighting=False)
    with torch.no_grad():  # a trained-looking step-size embedding, so the half steps read their size
        policy.model.action.step_size_embedder.linear_2.weight.normal_(0, 0.3)
    model, batch = policy.model, training_batch(policy.config, batch_size=2)
    seen = {}
    target_of = model._consistency_target

    def recorded(*args):
        seen["args"], seen["target"] = args, target_of(*args)
        return seen["target"]

    monkeypatch.setattr(model, "_consistency_target", recorded)
    torch.manual_seed(3)
    loss, logged = policy.forward(batch)
    first_frame, context, noisy, start, step = seen["args"]
    shift, steps = policy.config.timestep_shift, policy.config.num_train_timesteps
    half = torch.where(step / 2 >= min(SHORTCUT_STEP_SIZES), step / 2, torch.zeros_like(step))
    x = noisy.float()
    for k in range(2):
        u0, u1 = start - k * step / 2, start - (k + 1) * step / 2
        s0, s1 = (shift * u / (1 + (shift - 1) * u) for u in (u0, u1))
        cache, rope = model._action_cache(first_frame, context, noisy.shape[1])
        mods = model.mot.action_modulations(model.action.embed_timestep(s0 * steps, half)[None])[0]
        x = x + (s1 - s0).view(-1, 1, 1) * model.action_velocity(x, mods, rope, cache).float()
    s_start, s_end = (shift * u / (1 + (shift - 1) * u) for u in (start, start - step))
    torch.testing.assert_close(seen["target"], (x - noisy.float()) / (s_end - s_start).view(-1, 1, 1))
    torch.testing.assert_close(loss, 2.0 * torch.tensor(logged["loss_consistency"]), rtol=1e-5, atol=1e-6)


def test_a_loaded_checkpoint_samples_with_the_steps_it_saved(tmp_path, monkeypatch):
    from lerobot_fastwam import FastWAMPolicy

    make_policy(action_consistency_weight=1.0, num_inference_steps=2).save_pretrained(tmp_path)
    loaded = FastWAMPolicy.from_pretrained(tmp_path).eval()
    assert loaded.config.num_inference_steps == 2 and loaded.config.step_size_conditioning
    calls = []
    velocity = loaded.model.action_velocity
    monkeypatch.setattr(loaded.model, "action_velocity", lambda *a: calls.append(1) or velocity(*a))
    sizes = []
    embed = loaded.model.action.embed_timestep
    monkeypatch.setattr(loaded.model.action, "embed_timestep", lambda t, s=None: sizes.append(s) or embed(t, s))
    loaded.predict_action_chunk(observation(loaded.config))
    assert len(calls) == 2 and float(sizes[-1]) == 0.5  # two steps, each conditioned on its size


def test_config_refuses_the_objective_where_it_cannot_work_and_warns_about_one_plain_step(caplog):
    with pytest.raises(ValueError, match="step_size_conditioning"):
        make_config(action_consistency_weight=1.0, step_size_conditioning=False)
    with pytest.raises(ValueError, match="cached action sampler"):
        make_config(action_consistency_weight=1.0, variant="joint")
    with pytest.raises(ValueError, match="action_consistency_weight"):
        make_config(action_consistency_weight=-1.0)
    with caplog.at_level(logging.WARNING):
        make_config(num_inference_steps=1)
    assert "plain flow-matching" in caplog.text and "action_consistency_weight" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_config(num_inference_steps=1, action_consistency_weight=1.0)
        make_config(num_inference_steps=10)
    assert "plain flow-matching" not in caplog.text


def test_rtc_at_one_step_still_continues_the_previous_chunk():
    """RTC guidance at one step corrects that single velocity so that the one-step chunk's first actions move
    toward the previous chunk's leftover (weighted and clamped by LeRobot's RTC as at any first step)."""
    policy = make_policy(seed=5, action_consistency_weight=1.0, num_inference_steps=1)
    policy.config.rtc_config = RTCConfig(execution_horizon=10, max_guidance_weight=10.0)
    policy.init_rtc_processor()
    previous = policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=1))
    leftover = previous[0, policy.config.n_action_steps :]
    now = observation(policy.config, batch_size=1, seed=2)
    plain = policy.predict_action_chunk(now)
    guided = policy.predict_action_chunk(now, inference_delay=3, prev_chunk_left_over=leftover)
    assert torch.isfinite(guided).all()
    gap = [(chunk[0, :3] - leftover[:3]).abs().mean().item() for chunk in (plain, guided)]
    assert gap[1] < 0.5 * gap[0]


def test_one_step_lands_on_the_modes_of_bimodal_demonstrations():
    """CI-sized multimodal check (``benchmarks/multimodal.py`` runs it with plain flow matching beside it): with
    the objective, one step lands on a mode at least 90% of the time, and splits between the modes as the
    10-step sampler does (both modes kept: no collapse onto one, no mean)."""
    policy = make_policy(
        action_consistency_weight=4.0,
        video_loss_weight=0.0,
        state_dim=None,
        action_dim=4,
        chunk_size=16,
        n_action_steps=8,
        action_hidden_dim=64,
        action_ffn_dim=128,
    )
    train_bimodal(policy, steps=1600)
    one, ten = (mode_statistics(sample_chunks(policy, steps)) for steps in (1, 10))
    assert one["near_mode"] >= 0.9, one
    assert abs(one["plus_fraction"] - ten["plus_fraction"]) <= 0.05, (one, ten)
    assert 0.3 <= one["plus_fraction"] <= 0.7, one


def test_bimodal_batches_are_balanced_and_bimodal():
    policy = make_policy()
    batch = bimodal_batch(policy, 8, torch.Generator().manual_seed(0))
    first_axis = batch["action"][:, :, 0]
    assert sorted(first_axis[:, 0].tolist()) == [-1.0] * 4 + [1.0] * 4
    assert (batch["action"][:, :, 1:] == 0).all() and (first_axis == first_axis[:, :1]).all()
