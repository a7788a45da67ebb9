"""Checkpoints saved by LeRobot's built-in fastwam load in the plugin and give the same actions."""

import json

import pytest
import torch

from benchmarks.builtin_offline import build_builtin_policy
from lerobot_fastwam.frozen_encoders import LatentEncoder, PromptEncoder, in_memory_tokenizer
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

from .conftest import observation


def save_as_builtin(builtin, path):
    """Save as LeRobot would without the plugin: the type name points at the built-in while saving."""
    from lerobot.configs import PreTrainedConfig

    registry = PreTrainedConfig._choice_registry
    plugin_cls = registry["fastwam"]
    registry["fastwam"] = type(builtin.config)
    try:
        builtin.save_pretrained(path)
    finally:
        registry["fastwam"] = plugin_cls

TINY = dict(num_layers=2, num_heads=2, head_dim=12, video_ffn_dim=48, action_hidden_dim=16, action_ffn_dim=32,
            text_dim=32, freq_dim=16)


@pytest.fixture
def builtin_frozen_encoders(monkeypatch):
    """Serve the built-in's own random VAE / umT5 to the plugin where it would load Wan2.2 from the Hub."""
    holder = {}

    def vae(model_id, dtype):
        return LatentEncoder(holder["builtin"].model.vae.vae)

    def prompt(model_id, dtype, max_length, template, cache_size):
        encoder = holder["builtin"].model.text_encoder.model
        return PromptEncoder(in_memory_tokenizer(), encoder, max_length, template, cache_size)

    monkeypatch.setattr(LatentEncoder, "pretrained", classmethod(lambda cls, *a: vae(*a)))
    monkeypatch.setattr(PromptEncoder, "pretrained", classmethod(lambda cls, *a: prompt(*a)))
    return holder


@pytest.mark.parametrize(
    ("cameras", "state_dim", "action_dim"), [(1, 8, 7), (2, 8, 7), (1, None, 6), (2, None, 14)]
)
def test_builtin_checkpoint_gives_the_builtins_actions(tmp_path, builtin_frozen_encoders, cameras, state_dim, action_dim):
    builtin = build_builtin_policy(action_dim, state_dim, (32, 64), cameras, seed=cameras, **TINY).eval()
    save_as_builtin(builtin, tmp_path)
    assert "video_dit_config" in json.loads((tmp_path / "config.json").read_text())  # the built-in's format
    builtin_frozen_encoders["builtin"] = builtin

    plugin = FastWAMPolicy.from_pretrained(tmp_path)
    assert plugin.config.chunk_size == 32 and plugin.config.num_video_frames == 9

    batch = observation(plugin.config, batch_size=2, seed=7, tasks=["put the bowl on the plate", "open it"])
    expected = builtin.predict_action_chunk({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
    actual = plugin.predict_action_chunk(batch)
    assert actual.shape == expected.shape == (2, 32, action_dim)
    assert expected.abs().mean() > 0.1  # a real chunk, not a degenerate one
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
