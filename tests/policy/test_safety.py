"""Nothing unsafe reaches a robot: non-finite actions stop the loop with their cause, actions are clamped to
the training range, malformed observations are refused, and the action queue belongs to one control loop."""

import logging
import threading

import pytest
import torch

from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors
from lerobot_fastwam.safety import NonFiniteActionError

from ..helpers import make_config, make_policy, observation, training_batch

ACTION_DIM, STATE_DIM = 7, 8


def _stats(action_min=-1.0, action_max=1.0):
    def vec(value, dim):
        return torch.full((dim,), float(value))

    return {
        "observation.state": {"mean": vec(0, STATE_DIM), "std": vec(1, STATE_DIM)},
        "action": {
            "mean": vec(0, ACTION_DIM),
            "std": vec(1, ACTION_DIM),
            "min": vec(action_min, ACTION_DIM),
            "max": vec(action_max, ACTION_DIM),
        },
    }


@pytest.fixture(scope="module")
def policy():
    return make_policy(seed=3)


# ------------------------------------------------------------------------------------------------------------
# Output guard
def test_nan_weights_stop_the_robot_loop_naming_the_weights():
    policy = make_policy(seed=3)
    with torch.no_grad():
        policy.model.mot.action.action_out.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteActionError, match=r"weights contain NaN.*action_out\.weight"):
        policy.select_action(observation(policy.config))
    assert not policy._action_queue  # nothing queued for the next call either


def test_an_extreme_state_stops_the_loop_naming_the_state(policy, monkeypatch):
    batch = observation(policy.config)
    batch["observation.state"] = torch.full_like(batch["observation.state"], 1e30)
    with pytest.raises(
        ValueError,
        match=r"normalised `observation.state` reaches \|x\| = 1e\+30 \(at index \[0, 1, 2, 3, 4, 5, 6, 7\].*beyond",
    ):
        policy.predict_action_chunk(batch)  # refused before the network runs
    monkeypatch.setattr(policy.config, "max_normalized_input", None)  # without it, the overflow names the state
    with pytest.raises(NonFiniteActionError, match=r"normalised `observation.state` reaches \|x\| = 1e\+30"):
        policy.predict_action_chunk(batch)


def test_an_absurd_finite_state_is_refused_not_extrapolated(policy):
    """1e10 gives finite actions of about 1e7 when run; the limit refuses it with the fix."""
    batch = observation(policy.config)
    batch["observation.state"][0, 1] = 1e10
    with pytest.raises(ValueError, match=r"at index \[1\].*max_normalized_input=10000.*statistics"):
        policy.predict_action_chunk(batch)
    batch["observation.state"][0, 1] = 500.0  # far out (a value that barely varied in training), within the limit
    assert torch.isfinite(policy.predict_action_chunk(batch)).all()


@pytest.mark.parametrize(("key", "stat"), [("action", "std"), ("observation.state", "mean")])
def test_nan_dataset_stats_are_refused_when_the_processors_are_built_naming_the_dataset(key, stat):
    """Before, NaN action stats surfaced at the first action and NaN state stats at the first step, blamed on the
    checkpoint's preprocessor file."""
    stats = _stats()
    stats[key][stat][2] = float("nan")
    with pytest.raises(ValueError, match=rf"dataset statistics.*`{key}` {stat}\[2\] is nan.*recompute_stats"):
        make_fastwam_pre_post_processors(make_config(action_clamp_margin=None), stats)


# ------------------------------------------------------------------------------------------------------------
# Clamping to the training range
def test_out_of_range_actions_are_clamped_to_the_widened_training_range(caplog):
    _, post = make_fastwam_pre_post_processors(make_config(action_clamp_margin=0.1), _stats(-1.0, 1.0))
    # Unnormalised with mean 0 / std 1, so these are the actions themselves; the allowed range is [-1.2, 1.2].
    predicted = torch.tensor([[5.0, -5.0, 1.1, -1.1, 0.0, 1.2, -1.3]])
    with caplog.at_level(logging.WARNING):
        out = post(predicted)
        post(predicted)
    torch.testing.assert_close(out, torch.tensor([[1.2, -1.2, 1.1, -1.1, 0.0, 1.2, -1.2]]))
    assert sum("clamped" in r.message for r in caplog.records) == 1  # logged once, counted always
    guard = next(s for s in post.steps if type(s).__name__ == "FastWAMActionGuardStep")
    assert guard.num_clamped == 6


def test_clamping_is_saved_with_the_post_processor_and_can_be_switched_off(tmp_path):
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    _, post = make_fastwam_pre_post_processors(make_config(), _stats(0.0, 2.0))
    post.save_pretrained(tmp_path)
    kwargs = dict(to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    loaded = PolicyProcessorPipeline.from_pretrained(tmp_path, "policy_postprocessor.json", **kwargs)
    far = torch.full((2, ACTION_DIM), 10.0)
    torch.testing.assert_close(loaded(far), torch.full((2, ACTION_DIM), 2.1))  # max 2 + 5% of the width 2
    chunk = torch.full((2, 4, ACTION_DIM), -10.0)  # whole chunks are clamped too
    torch.testing.assert_close(loaded(chunk), torch.full((2, 4, ACTION_DIM), -0.1))
    off = PolicyProcessorPipeline.from_pretrained(
        tmp_path, "policy_postprocessor.json", overrides={"fastwam_plugin_action_guard": {"margin": None}}, **kwargs
    )
    torch.testing.assert_close(off(far), far)


def test_a_corrupt_saved_action_range_is_refused():
    from lerobot_fastwam.safety import FastWAMActionGuardStep

    with pytest.raises(ValueError, match="min > max"):
        FastWAMActionGuardStep(action_min=torch.ones(3), action_max=torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        FastWAMActionGuardStep(action_min=torch.zeros(3), action_max=torch.tensor([1.0, float("nan"), 1.0]))


# ------------------------------------------------------------------------------------------------------------
# Observations refused at the door
def _bad(policy, edit):
    batch = observation(policy.config)
    edit(batch)
    return batch


CAM = "observation.images.cam0"
BAD_OBSERVATIONS = {
    "camera batch differs from state": (lambda b: b.update({CAM: b[CAM][:1]}), r"disagree on the batch size"),
    "no batch dimension": (lambda b: b.update({CAM: b[CAM][0]}), r"no batch dimension.*unsqueeze\(0\)"),
    "state without batch dimension": (
        lambda b: b.update({"observation.state": b["observation.state"][0]}),
        r"no batch dimension",
    ),
    "channels last": (lambda b: b.update({CAM: b[CAM].permute(0, 2, 3, 1)}), r"channels last: permute"),
    "numpy image": (lambda b: b.update({CAM: b[CAM].numpy()}), r"is a ndarray.*preprocessor"),
    "uint8 image": (lambda b: b.update({CAM: (b[CAM] * 255).to(torch.uint8)}), r"dtype torch.uint8.*/ 255"),
    "bool image": (lambda b: b.update({CAM: b[CAM] > 0.5}), r"dtype torch.bool"),
    "task None in a list": (lambda b: b.update({"task": ["press", None]}), r"`task` must be a string"),
    "task not a string": (lambda b: b.update({"task": 3}), r"`task` must be a string"),
    "wrong number of tasks": (lambda b: b.update({"task": ["a", "b", "c"]}), r"3 task strings for a batch of 2"),
    "empty batch": (
        lambda b: b.update({CAM: b[CAM][:0], "observation.state": b["observation.state"][:0], "task": []}),
        r"batch is empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OBSERVATIONS))
def test_malformed_observations_are_refused_with_the_fix(policy, case):
    edit, match = BAD_OBSERVATIONS[case]
    with pytest.raises((ValueError, TypeError), match=match):
        policy.predict_action_chunk(_bad(policy, edit))
    policy.reset()
    with pytest.raises((ValueError, TypeError), match=match):
        policy.select_action(_bad(policy, edit))


def test_a_batch_with_more_tasks_than_the_prompt_cache_is_served_whole():
    policy = make_policy(seed=3, text_cache_size=2)
    tasks = ["open the drawer", "press the button", "push the puck"]
    together = policy.prompt_encoder(tasks)
    apart = torch.cat([make_policy(seed=3).prompt_encoder([t]) for t in tasks])
    torch.testing.assert_close(together, apart)
    chunk = policy.predict_action_chunk(observation(policy.config, batch_size=3, tasks=tasks))
    assert chunk.shape[0] == 3 and len(policy.prompt_encoder._cache) == 2


# ------------------------------------------------------------------------------------------------------------
# The action queue
def test_a_batch_size_change_never_returns_the_previous_batchs_action(policy, caplog):
    policy.reset()
    policy.select_action(observation(policy.config, batch_size=2, seed=1))  # queues n_action_steps - 1 actions
    single = observation(policy.config, batch_size=1, seed=2)
    with caplog.at_level(logging.WARNING):
        action = policy.select_action(single)
    torch.testing.assert_close(action, policy.predict_action_chunk(single)[:, 0])
    assert any("batch size changed from 2 to 1" in r.message for r in caplog.records)
    policy.reset()


def test_predict_action_chunk_is_thread_safe(policy):
    """Six threads at once, three rounds: the frozen encoders (the Wan VAE's per-call feature cache, the
    tokenizer and prompt LRU) are shared state; the chunks must equal serial calls."""
    batches = [observation(policy.config, seed=s, tasks=[f"task {s}", f"other {s}"]) for s in range(6)]
    serial = [policy.predict_action_chunk(b) for b in batches]

    def run(i, results, errors):
        try:
            results[i] = policy.predict_action_chunk(batches[i])
        except BaseException as err:  # reported below
            errors.append(err)

    for _ in range(3):
        policy.prompt_encoder._cache.clear()  # the threads encode the prompts concurrently
        results: dict[int, torch.Tensor] = {}
        errors: list[BaseException] = []
        threads = [threading.Thread(target=run, args=(i, results, errors)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i, expected in enumerate(serial):
            torch.testing.assert_close(results[i], expected)


def test_select_action_from_a_second_thread_is_an_error(policy):
    policy.reset()
    policy.select_action(observation(policy.config))
    errors = []

    def other_loop():
        try:
            policy.select_action(observation(policy.config))
        except RuntimeError as err:
            errors.append(str(err))

    thread = threading.Thread(target=other_loop)
    thread.start()
    thread.join()
    assert errors and "second thread" in errors[0] and "one policy per robot loop" in errors[0]
    policy.reset()


# ------------------------------------------------------------------------------------------------------------
# Non-finite inputs are named by where they came from, before the network runs
def test_non_finite_latents_and_text_are_named_by_their_source(policy, monkeypatch):
    from lerobot_fastwam.modeling_fastwam import LATENTS_KEY, TEXT_CONTEXT_KEY

    batch = observation(policy.config, batch_size=1)
    nan_like = lambda t: torch.full_like(t, float("nan"))  # noqa: E731
    good_latents = policy._current_latents(batch)
    encode = policy.latent_encoder.forward
    monkeypatch.setattr(policy.latent_encoder, "forward", lambda frames: nan_like(encode(frames)))
    with pytest.raises(ValueError, match="first-frame latents` contains NaN.*The VAE turned finite camera frames"):
        policy.predict_action_chunk(batch)
    monkeypatch.undo()

    text = policy.prompt_encoder(batch["task"])
    monkeypatch.setattr(policy.prompt_encoder, "forward", lambda tasks: nan_like(text))
    with pytest.raises(ValueError, match="text context` contains NaN.*umT5 made them"):
        policy.predict_action_chunk(batch)
    monkeypatch.undo()

    precomputed = {**batch, TEXT_CONTEXT_KEY: nan_like(text)}
    with pytest.raises(ValueError, match="text context` contains NaN.*Recompute the precomputed inputs"):
        policy.predict_action_chunk(precomputed)
    with pytest.raises(ValueError, match="fastwam.latents` contains NaN.*Recompute the precomputed inputs"):
        policy.predict_action_chunk({**batch, LATENTS_KEY: nan_like(good_latents)})


def test_a_nan_action_in_the_dataset_is_named_as_the_datasets(policy):
    batch = training_batch(policy.config, batch_size=2)
    batch["action"][1, 3, 0] = float("nan")
    batch["index"] = torch.tensor([40, 41])
    with pytest.raises(ValueError, match=r"recorded actions are not finite \(frame indices \[40, 41\]\).*episodes"):
        policy.forward(batch)
