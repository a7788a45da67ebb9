"""The paper's four models in one policy: each variant's mask (by perturbation), training noise, sampler, config
rule, checkpoint rule and predicted video."""

import json

import pytest
import torch
from lerobot.configs import PreTrainedConfig

from lerobot_fastwam.configuration_fastwam import VARIANTS, FastWAMConfig, saved_variant
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.network.attention import dense_reference_mask

from ..helpers import make_config, make_policy, observation

STEPS = 3  # Euler steps in sampler tests: enough to show dependence, cheap on CPU


def _inputs(seed=0, batch=2):
    """Tiny-model inputs: latents [B, 48, 3, 2, 4] (2 tokens a latent frame), context, a 32-step chunk."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 48, 3, 2, 4, generator=g)
    context = torch.randn(batch, 17, 32, generator=g)
    actions = torch.randn(batch, 32, 7, generator=g)
    return latents, context, actions


def _group_reach(mask: str, layers: int) -> dict[tuple[str, str], bool]:
    """(query group, key group) -> whether the key group can influence the query group through ``layers`` layers
    of the dense reference mask (group level, transitive)."""
    n0, nf, na = 2, 4, 32
    names = ["F0", "Ff", "F0c", "Ffc"] if mask == "idm" else ["F0", "Ff"]
    sizes = [n0, nf] * (len(names) // 2) + [na]
    names.append("A")
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    dense = dense_reference_mask(n0, nf, na, mask=mask)
    n = len(names)
    reach = torch.tensor(
        [[bool(dense[bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]].any()) for j in range(n)] for i in range(n)]
    )
    for _ in range(layers - 1):
        reach = reach | ((reach.float() @ reach.float()) > 0)
    return {(names[i], names[j]): bool(reach[i, j]) for i in range(n) for j in range(n)}


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_which_token_groups_influence_which_is_the_variants_mask(variant):
    """Perturb one group's input (first frame, future video, IDM's conditioning copy, actions) and see which
    outputs move; the table must be the dense reference mask's, closed over the model's layers."""
    model = make_policy(variant=variant).model.eval()
    mask = model.mot.mask
    latents, context, actions = _inputs()
    cond = latents + 0.3 * torch.randn_like(latents)  # IDM's conditioning copy (any values)
    frame_t = torch.tensor([[0.0, 500.0, 500.0]] * 2)
    cond_t = torch.tensor([[0.0, 200.0, 200.0]] * 2)
    action_t = torch.tensor([300.0, 800.0])

    def outputs(latents, cond, actions):
        condition = (cond, cond_t) if mask == "idm" else None
        video, action = model.velocity(latents, frame_t, context, actions, action_t, condition)
        return {"F0": video[:, :, :1], "Ff": video[:, :, 1:], "A": action}

    def shifted(x, frames):
        x = x.clone()
        x[:, :, frames] += 1.0
        return x

    perturbed = {
        "F0": (shifted(latents, slice(0, 1)), cond, actions),
        "Ff": (shifted(latents, slice(1, None)), cond, actions),
        "A": (latents, cond, actions + 1.0),
    }
    if mask == "idm":
        perturbed["F0c"] = (latents, shifted(cond, slice(0, 1)), actions)
        perturbed["Ffc"] = (latents, shifted(cond, slice(1, None)), actions)
    reference = outputs(latents, cond, actions)
    expected = _group_reach(mask, model.mot.num_layers)
    for key, inputs in perturbed.items():
        moved = outputs(*inputs)
        for query in ("F0", "Ff", "A"):
            changed = not torch.equal(moved[query], reference[query])
            assert changed == expected[(query, key)], f"{variant}: {key} -> {query}"
            if changed:
                assert (moved[query] - reference[query]).abs().max() > 1e-5
    # The paper's statement of each variant, read off the table.
    assert expected[("A", "Ff")] == (mask == "joint")  # Fast-WAM's actions never see the future video
    assert expected[("A", "F0")] == (mask != "idm")  # IDM's actions read only the conditioning copy
    if mask == "idm":
        assert expected[("A", "Ffc")] and not expected[("Ff", "Ffc")] and not expected[("Ffc", "Ff")]


@pytest.mark.parametrize(
    ("variant", "reads_future"), [("fastwam", False), ("no_cotrain", False), ("joint", True), ("idm", True)]
)
@torch.no_grad()
def test_only_joint_and_idm_actions_change_with_the_future_video(variant, reads_future):
    model = make_policy(variant=variant).model.eval()
    latents, context, actions = _inputs(seed=1)
    first, noise = latents[:, :, :1], torch.randn_like(actions)
    future_a, future_b = torch.randn_like(latents[:, :, 1:]), 3 * torch.randn_like(latents[:, :, 1:])
    actions_a, imagined_a = model.sample(first, context, noise, STEPS, future_a)
    actions_b, imagined_b = model.sample(first, context, noise, STEPS, future_b)
    assert not torch.allclose(imagined_a, imagined_b)
    assert torch.equal(actions_a, actions_b) != reads_future
    if not reads_future:  # and no future at all gives the same actions
        actions, imagined = model.sample(first, context, noise, STEPS)
        assert imagined is None and torch.equal(actions, actions_a)
    if variant == "idm":  # directly: IDM's actions follow the future they are given
        future = imagined_a + 1.0
        assert not torch.allclose(model.sample_actions(first, context, noise, STEPS, future=future), actions_a)


@torch.no_grad()
def test_idm_cached_sampler_equals_the_uncached_masked_forward():
    """IDM's second stage prefills the conditioning video (first frame + generated future, t=0) once; the same
    actions come from the full masked forward with the conditioning copy at every step."""
    model = make_policy(variant="idm").model.eval()
    latents, context, actions = _inputs(seed=2)
    first, future, noise = latents[:, :, :1], latents[:, :, 1:], torch.randn_like(actions)
    cached = model.sample_actions(first, context, noise, STEPS, future=future)

    from lerobot_fastwam.network.flow_matching import inference_noise_levels

    condition = (latents, torch.zeros(2, 3))
    noisy = torch.randn_like(latents)  # any noisy copy: the actions never read it
    levels = inference_noise_levels(STEPS, model.config.timestep_shift)
    x = noise.clone()
    for i in range(STEPS):
        t = float(levels[i]) * 1000
        frame_t = torch.tensor([[0.0, t, t]] * 2)
        _, velocity = model.velocity(noisy, frame_t, context, x, torch.full((2,), t), condition)
        x = x + (levels[i + 1] - levels[i]) * velocity
    torch.testing.assert_close(cached, x, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_the_joint_samplers_future_is_the_video_experts_alone():
    """Video never attends to actions, so denoising it with the actions (Joint) gives the future that the video
    expert imagines alone (``predict_future_frames``, IDM's first stage)."""
    model = make_policy(variant="joint").model.eval()
    latents, context, actions = _inputs(seed=3)
    first, future_noise = latents[:, :, :1], torch.randn_like(latents[:, :, 1:])
    _, joint_future = model.sample_joint(first, context, torch.randn_like(actions), future_noise, STEPS)
    alone = model.sample_future_latents(first, context, future_noise, STEPS)
    torch.testing.assert_close(joint_future, alone, rtol=1e-5, atol=1e-6)


def test_training_video_loss_is_every_co_trained_variants_the_action_loss_is_not():
    latents, context, actions = _inputs(seed=4)
    losses = {}
    for variant in ("fastwam", "joint", "idm"):
        model = make_policy(seed=5, variant=variant).model  # the same weights: one network, three masks
        torch.manual_seed(0)
        losses[variant] = model.compute_loss(latents, context, actions)
    for variant in ("joint", "idm"):  # the noisy video reads neither the actions nor IDM's conditioning copy
        torch.testing.assert_close(losses[variant].video, losses["fastwam"].video, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(losses[variant].action, losses["fastwam"].action)


def test_idm_conditioning_copy_is_clean_or_noised_at_its_own_level():
    model = make_policy(variant="idm").model
    latents = torch.randn(64, 48, 3, 2, 4)
    torch.manual_seed(0)
    cond, cond_t = model._conditioning_video(latents)
    assert torch.equal(cond[:, :, 0], latents[:, :, 0]) and (cond_t[:, 0] == 0).all()  # first frame clean
    clean = (cond_t[:, 1:] == 0).all(dim=1)
    assert 16 < int(clean.sum()) < 48  # about half of the samples (p = 0.5)
    assert torch.equal(cond[clean], latents[clean])
    assert not torch.isclose(cond[~clean][:, :, 1:], latents[~clean][:, :, 1:]).all()


def test_variant_and_video_loss_weight_follow_one_rule():
    assert (FastWAMConfig(preset="tiny").variant, FastWAMConfig(preset="tiny").video_loss_weight) == ("fastwam", 1.0)
    assert FastWAMConfig(preset="tiny", variant="no_cotrain").video_loss_weight == 0.0
    assert FastWAMConfig(preset="tiny", video_loss_weight=0.0).variant == "no_cotrain"  # as before variants
    assert FastWAMConfig(preset="tiny", variant="idm", video_loss_weight=0.5).video_loss_weight == 0.5
    refused = [
        (dict(variant="no_cotrain", video_loss_weight=1.0), "video_loss_weight must be 0"),
        (dict(variant="joint", video_loss_weight=0.0), "needs video_loss_weight > 0"),
        (dict(variant="idm", video_loss_weight=0.0), "needs video_loss_weight > 0"),
        (dict(variant="causal"), "variant must be one of"),
        (dict(variant="no_cotrain", save_predicted_video=True), "needs a co-trained variant"),
    ]
    for fields, match in refused:
        with pytest.raises(ValueError, match=match):
            FastWAMConfig(preset="tiny", **fields)
    # Configs saved before the field existed.
    assert saved_variant({"video_loss_weight": 0.0}) == "no_cotrain" and saved_variant({}) == "fastwam"


def test_a_co_trained_checkpoint_runs_as_another_co_trained_variant(tmp_path):
    policy = make_policy(seed=3, num_inference_steps=STEPS)
    policy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["variant"] == "fastwam"  # recorded
    batch = observation(policy.config, batch_size=1)
    expected = policy.predict_action_chunk(batch)
    for variant in ("joint", "idm"):  # as `lerobot-eval --policy.path=DIR --policy.variant=...` does
        config = PreTrainedConfig.from_pretrained(tmp_path, cli_overrides=[f"--variant={variant}"])
        loaded = FastWAMPolicy.from_pretrained(tmp_path, config=config)
        assert loaded.model.mot.mask == variant
        chunk = loaded.predict_action_chunk(batch)
        assert torch.isfinite(chunk).all() and not torch.allclose(chunk, expected)
    torch.testing.assert_close(FastWAMPolicy.from_pretrained(tmp_path).predict_action_chunk(batch), expected)


def test_a_no_cotrain_checkpoint_refuses_joint_and_idm_and_a_co_trained_one_refuses_no_cotrain(tmp_path):
    make_policy(variant="no_cotrain").save_pretrained(tmp_path / "no_cotrain")
    for variant in ("joint", "idm"):
        with pytest.raises(ValueError, match="cannot run as 'joint' or 'idm'"):  # the command-line override
            PreTrainedConfig.from_pretrained(tmp_path / "no_cotrain", cli_overrides=[f"--variant={variant}"])
        with pytest.raises(ValueError, match=f"trained as variant 'no_cotrain' and cannot run as '{variant}'"):
            FastWAMPolicy.from_pretrained(tmp_path / "no_cotrain", config=make_config(variant=variant))
    make_policy().save_pretrained(tmp_path / "fastwam")
    with pytest.raises(ValueError, match="trained as variant 'fastwam' and cannot run as 'no_cotrain'"):
        FastWAMPolicy.from_pretrained(tmp_path / "fastwam", config=make_config(variant="no_cotrain"))


@pytest.mark.parametrize("variant", ["fastwam", "joint", "idm"])
@torch.no_grad()
def test_save_predicted_video_keeps_each_chunks_video_for_lerobot_eval(variant):
    """What lerobot-eval does: after each select_action take ``last_predicted_latents`` (and clear it), then
    concatenate the rollout's along dim 2 and call ``decode_predicted_latents``."""
    policy = make_policy(variant=variant, save_predicted_video=True, num_inference_steps=STEPS)
    cfg = policy.config
    batch = observation(cfg, batch_size=1)
    kept = []
    for _ in range(cfg.n_action_steps + 1):  # two chunks
        policy.select_action(batch)
        if policy.last_predicted_latents is not None:
            kept.append(policy.last_predicted_latents)
            policy.last_predicted_latents = None
    assert [tuple(k.shape) for k in kept] == [(1, 48, 3, 2, 4)] * 2  # current frame + 2 imagined, per chunk
    _, imagined = policy.predict_future_frames(batch)  # the same future, through the Python API
    torch.testing.assert_close(kept[0][:, :, 1:], imagined, rtol=1e-4, atol=1e-5)
    frames = policy.decode_predicted_latents(torch.cat(kept, dim=2))
    imagined = 2 * (cfg.num_video_frames - 1)  # each next to its chunk's current frame, held n_action_steps
    assert frames.shape[0] == imagined * cfg.n_action_steps and frames.shape[2:] == (2 * 64, 3)
    assert frames.shape[1] > 32 and frames.dtype == torch.uint8  # a label band above the 32x64 frames


@torch.no_grad()
def test_predicted_video_costs_nothing_when_off(monkeypatch):
    policy = make_policy()

    def imagine(*args, **kwargs):
        raise AssertionError("the future was denoised")

    monkeypatch.setattr(policy.model, "sample_future_latents", imagine)
    policy.predict_action_chunk(observation(policy.config))
    assert policy.last_predicted_latents is None
