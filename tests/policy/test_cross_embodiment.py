"""One checkpoint, another arm (issue #21): pi0.5's relative actions (LeRobot's own processor steps, normalised with
the statistics of relative actions) and action/state sizes padded to ``max_action_dim`` / ``max_state_dim``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature, PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from lerobot.processor import (
    AbsoluteActionsProcessorStep,
    PolicyProcessorPipeline,
    RelativeActionsProcessorStep,
)
from safetensors.torch import load_file

from lerobot_fastwam.data.embodiment import use_relative_action_stats
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.processor_fastwam import FastWAMCurrentStateStep, make_fastwam_pre_post_processors
from lerobot_fastwam.testing.synthetic_dataset import make_dataset

from ..helpers import make_config, observation, run_train, training_batch

NEW_STEPS = (FastWAMCurrentStateStep, RelativeActionsProcessorStep, AbsoluteActionsProcessorStep)


def _stats(action_dim: int, state_dim: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def feature(dim):
        low = -1 - torch.rand(dim, generator=g)
        return {"mean": torch.randn(dim, generator=g), "std": 0.5 + torch.rand(dim, generator=g), "min": low}

    stats = {"observation.state": feature(state_dim), "action": feature(action_dim)}
    for value in stats.values():
        value["max"] = -value["min"]
    return stats


def _relative_chunks(actions: np.ndarray, states: np.ndarray, episodes: np.ndarray, chunk: int) -> np.ndarray:
    """Every chunk of ``chunk`` actions inside one episode minus the state at its start, by hand."""
    starts = [t for t in range(len(actions) - chunk + 1) if episodes[t] == episodes[t + chunk - 1]]
    return np.concatenate([actions[t : t + chunk] - states[t] for t in starts])


# ------------------------------------------------------------------------------------------------------------
# Relative actions
def test_relative_actions_round_trip_and_the_gripper_stays_absolute():
    names = ["shoulder.pos", "elbow.pos", "gripper.pos"]
    config = make_config(
        action_dim=3, state_dim=4, use_relative_actions=True, action_feature_names=names, action_clamp_margin=None
    )
    stats = _stats(3, 4)
    pre, post = make_fastwam_pre_post_processors(config, stats)
    batch = observation(config, batch_size=2, frames=config.num_video_frames)  # a training sample: [B, T, S] states
    action = torch.randn(2, config.chunk_size, 3)
    out = pre({**batch, "action": action})

    current, state = batch["observation.state"][:, 0], stats["observation.state"]  # the window's current state
    torch.testing.assert_close(out["observation.state"], (current - state["mean"]) / state["std"])
    relative = action - current[:, None, :3] * torch.tensor([1.0, 1.0, 0.0])  # the gripper is not made relative
    expected = (relative - stats["action"]["mean"]) / stats["action"]["std"]
    torch.testing.assert_close(out["action"], expected)
    torch.testing.assert_close(post(out["action"]), action)  # unnormalise, then absolute against the cached state


def test_relative_action_statistics_are_those_of_action_chunks_minus_their_start_state(tmp_path):
    dataset = make_dataset(tmp_path / "data", episodes=2, frames=20, cameras=("front",), use_videos=False)
    table = dataset.hf_dataset.with_format("numpy")  # (the first read reloads a written dataset's metadata)
    absolute = {name: np.asarray(value) for name, value in dataset.meta.stats["action"].items()}
    config = make_config(action_dim=6, state_dim=6, chunk_size=4, n_action_steps=4, use_relative_actions=True)
    use_relative_action_stats(config, dataset.meta)

    actions, states = np.stack(table["action"]), np.stack(table["observation.state"])
    relative = _relative_chunks(actions, states, np.asarray(table["episode_index"]), chunk=4)
    stats = dataset.meta.stats["action"]
    np.testing.assert_allclose(stats["mean"], relative.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["std"], relative.std(0), atol=1e-4)
    np.testing.assert_allclose(stats["min"], relative.min(0), atol=1e-6)
    assert not np.allclose(stats["mean"], absolute["mean"], atol=1e-3)
    config.use_relative_actions = False
    before = dict(dataset.meta.stats["action"])
    use_relative_action_stats(config, dataset.meta)  # off: the dataset's statistics are left as they are
    assert dataset.meta.stats["action"] == before


# ------------------------------------------------------------------------------------------------------------
# Padding
def test_a_padded_policy_trains_on_the_robots_dims_only_and_returns_them():
    torch.manual_seed(0)
    config = make_config(action_dim=4, state_dim=5, max_action_dim=8, max_state_dim=8)
    policy = FastWAMPolicy(config)
    assert policy.model.action.action_in.weight.shape[1] == 8 and policy.model.state_encoder.weight.shape[1] == 8
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    batch = training_batch(config)
    losses = []
    for _ in range(4):
        torch.manual_seed(1)
        loss, _ = policy.forward(batch)
        optimizer.zero_grad()
        loss.backward()
        # The padded dims are predicted but never scored (pi0.5, SmolVLA): nothing trains their outputs.
        assert not policy.model.action.action_out.weight.grad[4:].any()
        assert policy.model.action.action_out.weight.grad[:4].any()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    chunk = policy.predict_action_chunk(observation(config))
    assert chunk.shape == (2, config.chunk_size, 4) and torch.isfinite(chunk).all()


def test_a_checkpoint_of_a_4_dim_arm_fine_tunes_on_a_6_dim_arm(tmp_path):
    torch.manual_seed(0)
    FastWAMPolicy(make_config(action_dim=4, state_dim=4, max_action_dim=8, max_state_dim=8)).save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")

    # What lerobot-train --policy.path does on a 6-joint dataset: the checkpoint's config with the dataset's action
    # feature (LeRobot's make_policy), its statistics and metadata.
    config = PreTrainedConfig.from_pretrained(tmp_path)
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    meta = SimpleNamespace(repo_id="someone/six_joints", features={"observation.state": {"shape": (6,)}})
    policy = FastWAMPolicy.from_pretrained(tmp_path, config=config, dataset_stats=_stats(6, 6), dataset_meta=meta)

    assert (policy.config.action_dim, policy.config.state_dim) == (6, 6)
    loaded = policy.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in saved.items() if key in loaded)
    policy.train()
    loss, _ = policy.forward(training_batch(policy.config))
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.predict_action_chunk(observation(policy.config)).shape == (2, policy.config.chunk_size, 6)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"max_action_dim": 6}, r"The robot's action has 7 values, more than max_action_dim=6\. Set --policy\."),
        ({"max_state_dim": 4}, r"The robot's state has 8 values, more than max_state_dim=4"),
        ({"max_action_dim": 0}, r"`max_action_dim` must be >= 1"),
        ({"use_relative_actions": True, "state_dim": 5}, r"subtracts the state's first 7 values .* has 5 values"),
    ],
)
def test_sizes_that_cannot_work_are_refused_naming_the_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(**overrides)


# ------------------------------------------------------------------------------------------------------------
# Off by default: as before
def test_with_the_options_off_the_processors_and_the_loss_are_unchanged():
    config = make_config()
    assert config.max_action_dim is None and config.max_state_dim is None and not config.use_relative_actions
    stats = _stats(7, 8)
    pre, post = make_fastwam_pre_post_processors(config, stats)
    new = [type(s) for p in (pre, post) for s in p.steps if isinstance(s, NEW_STEPS)]
    assert new == list(NEW_STEPS)  # present as in pi0.5, switched off
    assert not any(s.enabled for s in [*pre.steps, *post.steps] if isinstance(s, NEW_STEPS[1:]))
    # The pipelines as they were: the same steps without the three new ones.
    old_pre, old_post = (
        PolicyProcessorPipeline(
            steps=[s for s in p.steps if not isinstance(s, NEW_STEPS)],
            to_transition=p.to_transition,
            to_output=p.to_output,
        )
        for p in (pre, post)
    )
    ours, before = pre(observation(config)), old_pre(observation(config))
    assert ours.keys() == before.keys()
    assert all(torch.equal(ours[k], before[k]) for k in ours if isinstance(ours[k], torch.Tensor))
    action = 3 * torch.randn(2, config.chunk_size, 7)
    assert torch.equal(post(action), old_post(action))

    # A training batch: the state window becomes its current state, which is all the policy reads.
    batch = training_batch(config)
    losses = []
    for pipeline in (pre, old_pre):
        torch.manual_seed(0)
        policy = FastWAMPolicy(config)
        torch.manual_seed(1)
        losses.append(policy.forward(pipeline(dict(batch)))[0])
    assert torch.equal(*losses)


def test_padding_to_the_robots_own_sizes_changes_nothing():
    results = []
    for pad in ({}, {"max_action_dim": 7, "max_state_dim": 8}):
        torch.manual_seed(0)
        config = make_config(**pad)
        policy = FastWAMPolicy(config)
        torch.manual_seed(1)
        loss = policy.forward(training_batch(config))[0]
        results.append((loss, policy.predict_action_chunk(observation(config))))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_fine_tuned_guard_clamps_to_the_new_datasets_range(tmp_path):
    """lerobot-train --policy.path overrides the unnormaliser's statistics; the guard follows them."""
    config = make_config(action_dim=3, state_dim=3)
    for pipeline in make_fastwam_pre_post_processors(config, _stats(3, 3, seed=0)):
        pipeline.save_pretrained(tmp_path)
    saved = PolicyProcessorPipeline.from_pretrained(tmp_path, config_filename="policy_postprocessor.json")
    new = _stats(3, 3, seed=1)
    overrides = {"unnormalizer_processor": {"stats": new}}
    tuned = PolicyProcessorPipeline.from_pretrained(
        tmp_path, config_filename="policy_postprocessor.json", overrides=overrides
    )
    guard, tuned_guard = (next(s for s in p.steps if hasattr(s, "action_min")) for p in (saved, tuned))
    assert torch.equal(guard.action_min, _stats(3, 3, seed=0)["action"]["min"])  # a checkpoint loads as saved
    assert torch.equal(tuned_guard.action_min, new["action"]["min"])
    assert torch.equal(tuned_guard.action_max, new["action"]["max"])


# ------------------------------------------------------------------------------------------------------------
# End to end with LeRobot's lerobot-train
def test_lerobot_train_relative_padded_then_fine_tune_on_an_arm_with_another_action_dim(tmp_path):
    common = [
        "--policy.push_to_hub=false",
        "--dataset.video_backend=pyav",
        "--steps=2",
        "--batch_size=2",
        "--save_freq=2",
        "--log_freq=1",
        "--num_workers=0",
        "--env_eval_freq=0",
        "--wandb.enable=false",
    ]
    six = make_dataset(tmp_path / "six", repo_id="local/six", episodes=2, frames=40, cameras=("front", "wrist"))
    run_train(
        [
            "--policy.type=fastwam",
            "--policy.preset=tiny",
            "--policy.device=cpu",
            "--policy.use_relative_actions=true",
            "--policy.max_action_dim=8",
            "--policy.max_state_dim=8",
            "--dataset.repo_id=local/six",
            f"--dataset.root={tmp_path / 'six'}",
            f"--output_dir={tmp_path / 'pretrain'}",
            *common,
        ],
        cwd=tmp_path,
    )
    pretrained = tmp_path / "pretrain" / "checkpoints" / "last" / "pretrained_model"
    normalizer = load_file(pretrained / "policy_preprocessor_step_6_normalizer_processor.safetensors")
    table = six.hf_dataset.with_format("numpy")
    relative = _relative_chunks(
        np.stack(table["action"]), np.stack(table["observation.state"]), np.asarray(table["episode_index"]), 32
    )
    np.testing.assert_allclose(normalizer["action.mean"].numpy(), relative.mean(0), atol=1e-5)  # not stats.json's

    make_dataset(tmp_path / "seven", repo_id="local/seven", episodes=2, frames=40, state_dim=7, action_dim=7)
    run_train(
        [
            f"--policy.path={pretrained}",
            "--dataset.repo_id=local/seven",
            f"--dataset.root={tmp_path / 'seven'}",
            f"--output_dir={tmp_path / 'finetune'}",
            *common,
        ],
        cwd=tmp_path,
    )
    tuned = tmp_path / "finetune" / "checkpoints" / "last" / "pretrained_model"
    config = json.loads((tuned / "config.json").read_text())
    assert config["output_features"]["action"]["shape"] == [7]
    assert config["input_features"]["observation.state"]["shape"] == [7]
    assert config["use_relative_actions"] and config["action_feature_names"] == [f"action_{i}" for i in range(7)]
    assert load_file(tuned / "model.safetensors")["model.mot.action.action_in.weight"].shape[1] == 8
    guard = load_file(tuned / "policy_postprocessor_step_1_fastwam_plugin_action_guard.safetensors")
    assert guard["action_min"].shape == (7,)  # the new dataset's range, not the 6-joint checkpoint's

    # The fine-tuned checkpoint drives the 7-joint arm: pre -> policy -> post, absolute actions.
    policy = FastWAMPolicy.from_pretrained(tuned)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(tuned))
    relative_step = next(s for s in pre.steps if isinstance(s, RelativeActionsProcessorStep))
    assert relative_step.enabled and relative_step.action_names == config["action_feature_names"]
    obs = {f"observation.images.{c}": torch.rand(1, 3, 64, 64) for c in ("front", "wrist")}
    obs |= {"observation.state": torch.rand(1, 7), "task": ["move the square clockwise around the table"]}
    action = post(policy.select_action(pre(obs)))
    assert action.shape == (1, 7) and torch.isfinite(action).all()
