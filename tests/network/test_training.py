"""Training loss: LeRobot's reductions, padding masks, the timestep weighting, and mixed precision."""

import pytest
import torch

from lerobot_fastwam.network.flow_matching import TimestepLossWeight, sample_noise_levels, shift_warp
from lerobot_fastwam.network.model import future_latent_padding

from ..helpers import make_policy, training_batch


def test_reduction_none_gives_per_sample_losses_that_average_to_the_mean():
    policy = make_policy()
    batch = training_batch(policy.config, batch_size=3)
    torch.manual_seed(0)
    per_sample, info = policy.forward(batch, reduction="none")
    torch.manual_seed(0)
    mean, _ = policy.forward(batch)
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample.mean(), mean)
    assert set(info) == {"loss_video", "loss_action"}


def test_loss_is_the_weighted_sum_of_its_terms_and_other_reductions_are_refused():
    policy = make_policy(video_loss_weight=0.5, action_loss_weight=2.0)
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(3, 48, 3, 2, 4, generator=g)
    context = torch.randn(3, 17, 32, generator=g)
    actions = torch.randn(3, 32, 7, generator=g)
    torch.manual_seed(0)
    per_sample = policy.model.compute_loss(latents, context, actions, reduction="none")
    torch.manual_seed(0)
    mean = policy.model.compute_loss(latents, context, actions)
    assert per_sample.total.shape == per_sample.video.shape == per_sample.action.shape == (3,)
    torch.testing.assert_close(per_sample.total, 0.5 * per_sample.video + 2.0 * per_sample.action)
    torch.testing.assert_close(mean.total, per_sample.total.mean())

    batch = training_batch(policy.config)
    loss, info = policy.forward(batch)
    assert loss.item() == pytest.approx(0.5 * info["loss_video"] + 2.0 * info["loss_action"], rel=1e-5)
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'none'\), got 'sum'"):
        policy.forward(batch, reduction="sum")


def test_future_latent_padding_maps_four_frames_per_latent_frame():
    pad = torch.tensor([[False] * 5 + [True] * 4, [False] * 2 + [True] * 7, [False] * 9])
    assert future_latent_padding(pad).tolist() == [[False, True], [False, True], [False, False]]


def test_padded_steps_and_frames_do_not_count():
    policy = make_policy()
    batch = training_batch(policy.config, batch_size=2)
    for key in policy.config.ordered_camera_keys:
        batch[f"{key}_is_pad"] = torch.ones(2, 9, dtype=torch.bool)
        batch[f"{key}_is_pad"][:, 0] = False
    torch.manual_seed(0)
    _, unpadded = policy.forward(batch)
    batch["action_is_pad"][:, 16:] = True
    torch.manual_seed(0)
    _, info = policy.forward(batch)
    assert info["loss_video"] == 0.0  # every future frame is padding
    assert info["loss_action"] != unpadded["loss_action"]
    batch["action_is_pad"][:] = True
    _, all_padded = policy.forward(batch)
    assert all_padded["loss_action"] == 0.0


def test_timestep_weight_and_sampling_match_the_reference_scheduler():
    from lerobot.policies.fastwam.wan.video_dit import WanContinuousFlowMatchScheduler  # independent

    reference = WanContinuousFlowMatchScheduler(num_train_timesteps=1000, shift=5.0)
    ours = TimestepLossWeight(1000, 5.0)
    t = torch.linspace(0, 1000, 37)
    torch.testing.assert_close(ours(t), reference.training_weight(t), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    s = sample_noise_levels(10_000, 5.0, torch.device("cpu"))
    assert 0.0 <= float(s.min()) and float(s.max()) <= 1.0
    # shift 5 pushes noise levels up: the median of U(0,1) maps to 5/6.
    assert abs(float(s.median()) - float(shift_warp(torch.tensor(0.5), 5.0))) < 0.02


def test_training_levels_relation_to_diffusers_flow_match_euler_scheduler():
    """diffusers' scheduler holds a discrete training grid (the warp of k / 1000); we draw continuous levels of
    the same warp. Its grid is the one our timestep weight is normalised over: min 0 and mean 1 there."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    k = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    torch.testing.assert_close(scheduler.sigmas.double(), shift_warp(k, 5.0), atol=2e-7, rtol=0)
    torch.testing.assert_close(scheduler.timesteps, scheduler.sigmas * 1000)
    weight = TimestepLossWeight(1000, 5.0)(scheduler.timesteps)
    assert abs(float(weight.min())) < 1e-5 and abs(float(weight.mean()) - 1.0) < 1e-5


def test_bfloat16_is_mixed_precision_with_fp32_master_weights():
    policy = make_policy(dtype="bfloat16")
    batch = training_batch(policy.config)
    loss, _ = policy.forward(batch)
    loss.backward()
    params = policy.get_optim_params()
    assert all(p.dtype == torch.float32 for p in params)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params if p.requires_grad)
    assert torch.isfinite(loss)


def test_freeze_video_expert_keeps_it_out_of_the_optimizer():
    policy = make_policy(freeze_video_expert=True)
    trainable = {id(p) for p in policy.get_optim_params()}
    assert not any(id(p) in trainable for p in policy.model.video.parameters())
    assert all(id(p) in trainable for p in policy.model.action.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = make_policy(seed=1)
    ckpt = make_policy(seed=1, gradient_checkpointing=True)
    batch = training_batch(plain.config)
    grads = []
    for policy in (plain, ckpt):
        torch.manual_seed(0)
        loss, _ = policy.forward(batch)
        loss.backward()
        grads.append(policy.model.action.action_in.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_different_tasks_give_different_contexts_and_chunks():
    from ..helpers import observation

    policy = make_policy()
    contexts = policy.prompt_encoder(["pick up the red cube", "open the top drawer"])
    assert (contexts[0] - contexts[1]).abs().max() > 1e-3
    batch = observation(policy.config, batch_size=2, tasks=["pick up the red cube", "pick up the red cube"])
    same = policy.predict_action_chunk(batch)
    batch["task"] = ["pick up the red cube", "open the top drawer"]
    different = policy.predict_action_chunk(batch)
    torch.testing.assert_close(same[0], different[0])
    assert (same[1] - different[1]).abs().max() > 1e-5


def test_a_truncated_instruction_is_reported(caplog):
    policy = make_policy(text_max_length=8)
    with caplog.at_level("WARNING"):
        policy.prompt_encoder(["stack the blocks"])
    assert "is cut to text_max_length=8" in caplog.text


def test_optimizer_preset_is_lerobots_adamw_update_in_one_fused_step():
    from lerobot.optim import AdamWConfig

    from lerobot_fastwam.optim import FusedAdamWConfig

    torch.manual_seed(0)
    weights = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [w.detach().clone().requires_grad_(True) for w in weights]
    preset = make_policy().config.get_optimizer_preset()
    assert isinstance(preset, FusedAdamWConfig) and preset.type == "fastwam_fused_adamw"
    fused = preset.build(weights)
    reference = AdamWConfig(lr=preset.lr, betas=preset.betas, weight_decay=preset.weight_decay).build(twins)
    for _ in range(3):
        for group in (weights, twins):
            for w in group:
                w.grad = torch.ones_like(w) * w.detach().sum()
        fused.step()
        reference.step()
    for w, t in zip(weights, twins, strict=True):
        torch.testing.assert_close(w, t, rtol=1e-6, atol=1e-7)


def test_without_video_cotraining_only_the_first_frame_runs_and_the_action_loss_is_unchanged():
    cotrained = make_policy(seed=5)
    ablation = make_policy(seed=5, video_loss_weight=0.0)  # the paper's "w/o video co-train" variant
    batch = training_batch(cotrained.config, batch_size=2)
    torch.manual_seed(0)
    _, full = cotrained.forward(batch)
    torch.manual_seed(0)
    loss, only_actions = ablation.forward(batch)
    assert only_actions["loss_video"] == 0.0
    assert only_actions["loss_action"] == pytest.approx(full["loss_action"], rel=1e-5)
    assert loss.item() == pytest.approx(full["loss_action"], rel=1e-5)


def test_8bit_adamw_preset_trains_with_a_quarter_of_the_optimizer_state_and_resumes(tmp_path):
    """``--policy.optimizer_type=adamw_8bit``: LeRobot builds it from the policy's preset, its moments are 8-bit,
    and LeRobot's own optimizer checkpointing saves and restores it."""
    pytest.importorskip("bitsandbytes")
    from lerobot.optim.optimizers import load_optimizer_state, save_optimizer_state

    policy = make_policy(optimizer_type="adamw_8bit", num_layers=2)
    preset = policy.config.get_optimizer_preset()
    assert preset.type == "fastwam_adamw8bit"
    params = policy.get_optim_params()
    optimizer = preset.build(params)
    batch = training_batch(policy.config, batch_size=2)
    before = [p.detach().clone() for p in params]
    for _ in range(2):
        loss, _ = policy.forward(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    big = max(params, key=lambda p: p.numel())  # bitsandbytes keeps tiny tensors' states in fp32
    state = optimizer.state[big]
    moment_bytes = sum(t.numel() * t.element_size() for k, t in state.items() if k in ("state1", "state2"))
    assert moment_bytes == 2 * big.numel()  # AdamW: 8 bytes a weight

    save_optimizer_state(optimizer, tmp_path)
    restored = load_optimizer_state(preset.build(params), tmp_path)
    saved = [p.detach().clone() for p in params]
    optimizer.step()  # with the last gradients: the run that continues
    continued = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, value in zip(params, saved, strict=True):
            p.copy_(value)
    restored.step()  # the run resumed from the checkpoint takes the same step
    for p, value in zip(params, continued, strict=True):
        torch.testing.assert_close(p, value, rtol=0, atol=0)


def test_8bit_adamw_without_bitsandbytes_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    policy = make_policy(optimizer_type="adamw_8bit")
    with pytest.raises(ImportError, match=r"lerobot_policy_fastwam\[bnb\]"):
        policy.config.get_optimizer_preset().build(policy.get_optim_params())
