"""The faster action loop: compiled / CUDA-graph replay by default on CUDA only, the graph's static buffers
refilled for every chunk, and a loaded policy that compiles at load time (so a robot's first step does not) and
falls back to eager, loudly, when compilation fails or disagrees with the eager loop."""

import logging

import pytest
import torch
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from torch._dynamo.utils import counters

from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.network.action_graph import StaticLoop

from ..helpers import make_policy, observation


def test_speedups_default_to_cuda_only():
    model = make_policy().model
    assert model.action_loop_speedups(torch.device("cpu")) == (False, False)
    assert model.action_loop_speedups(torch.device("cuda", 0)) == (True, True)
    assert make_policy(compile_action_step=True).model.action_loop_speedups(torch.device("cpu")) == (True, False)
    off = make_policy(compile_action_step=False, cuda_graph=False).model
    assert off.action_loop_speedups(torch.device("cuda")) == (False, False)
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        make_policy(cuda_graph=True).model.action_loop_speedups(torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides",
    [{"variant": "fastwam"}, {"variant": "idm"}, {"action_consistency_weight": 1.0, "num_inference_steps": 1}],
    ids=["fastwam", "idm", "one-step"],
)
@torch.no_grad()
def test_static_buffer_loop_gives_the_eager_chunk_for_every_new_observation(monkeypatch, overrides):
    """The graph path without the capture itself (CPU): each chunk's inputs are copied into the same static
    buffers, so a second chunk that repeated the first one's would mean a stale buffer. One-step: the step-size
    embedding (given weights, as after training) enters the graph through the step modulations."""
    eager = make_policy(seed=3, **overrides)
    graphed = make_policy(seed=3, **overrides)
    for policy in (eager, graphed):
        if policy.model.action.step_size_embedder is not None:
            torch.manual_seed(4)
            policy.model.action.step_size_embedder.linear_2.weight.normal_(0, 0.3)
    graphed.model._action_loop_graphs = StaticLoop(capture=False)
    monkeypatch.setattr(graphed.model, "action_loop_speedups", lambda device: (False, True))
    first, second = observation(eager.config, batch_size=1, seed=1), observation(eager.config, batch_size=1, seed=2)
    chunks = [graphed.predict_action_chunk(first), graphed.predict_action_chunk(second)]
    torch.testing.assert_close(chunks[0], eager.predict_action_chunk(first), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunks[1], eager.predict_action_chunk(second), rtol=1e-5, atol=1e-6)
    assert len(graphed.model._action_loop_graphs) == 1  # one signature, its buffers reused
    graphed.predict_action_chunk(observation(eager.config, batch_size=2, seed=3))
    assert len(graphed.model._action_loop_graphs) == 2  # another batch size is another graph


@torch.no_grad()
def test_replaced_weights_get_new_graphs(monkeypatch):
    """A graph reads weights at fixed addresses: new weight tensors (restored fp32 masters, LoRA adapters)
    must not replay a graph captured over the old ones."""
    policy = make_policy(seed=3)
    monkeypatch.setattr(policy.model, "action_loop_speedups", lambda device: (False, True))
    policy.model._action_loop_graphs = StaticLoop(capture=False)
    batch = observation(policy.config, batch_size=1, seed=1)
    policy.predict_action_chunk(batch)
    graphs = policy.model._action_loop_graphs
    policy.predict_action_chunk(batch)
    assert policy.model._action_loop_graphs is graphs and len(graphs) == 1  # same weights: replayed
    weight = policy.model.action.blocks[0].attn1.to_q.weight
    weight.data = weight.data.clone()
    policy.predict_action_chunk(batch)
    assert policy.model._action_loop_graphs is not graphs  # captured anew


def _saved(tmp_path, **overrides):
    policy = make_policy(seed=6, **overrides)
    policy.save_pretrained(tmp_path)
    return tmp_path


def test_a_loaded_policy_compiles_at_load_not_at_its_first_chunk(tmp_path):
    path = _saved(tmp_path, compile_action_step=True)
    counters.clear()
    policy = FastWAMPolicy.from_pretrained(path)
    compiled_at_load = counters["stats"]["unique_graphs"]
    assert compiled_at_load > 0 and not policy.model.eager_action_loop
    policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=4))
    assert counters["stats"]["unique_graphs"] == compiled_at_load

    # lerobot-rollout --inference.type=rtc switches RTC on after loading: its guided path is compiled then.
    policy.config.rtc_config = RTCConfig(execution_horizon=10, max_guidance_weight=10.0)
    policy.init_rtc_processor()
    compiled_with_rtc = counters["stats"]["unique_graphs"]
    previous = policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=5))[0, 10:]
    guided = policy.predict_action_chunk(
        observation(policy.config, batch_size=1, seed=6), inference_delay=3, prev_chunk_left_over=previous
    )
    assert torch.isfinite(guided).all()
    assert counters["stats"]["unique_graphs"] == compiled_with_rtc


def test_eager_checkpoint_loads_without_compiling(tmp_path):
    path = _saved(tmp_path)
    counters.clear()
    FastWAMPolicy.from_pretrained(path)
    assert counters["stats"]["unique_graphs"] == 0


@pytest.mark.parametrize("fault", ["raises", "disagrees"])
def test_warm_up_falls_back_to_eager_with_a_warning(monkeypatch, caplog, fault):
    policy = make_policy(seed=2, compile_action_step=True)
    expected = policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=7))
    layers = policy.model.mot.action_layers

    def broken(*args):
        if fault == "raises":
            raise RuntimeError("no C++ compiler")
        return layers(*args) + 1.0

    policy.model._compiled_action_layers = broken
    with caplog.at_level(logging.WARNING):
        policy.warm_up()
    assert policy.model.eager_action_loop
    assert ("no C++ compiler" if fault == "raises" else "differs from the eager one") in caplog.text
    chunk = policy.predict_action_chunk(observation(policy.config, batch_size=1, seed=7))
    torch.testing.assert_close(chunk, expected, rtol=1e-4, atol=1e-5)  # eager, and unchanged
