"""save_pretrained / from_pretrained: identical chunks; any checkpoint mismatch is an error, not a warning."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import lerobot_fastwam
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

from ..helpers import make_policy, observation


@pytest.fixture
def saved(tmp_path):
    policy = make_policy(seed=3, cameras=2)
    policy.save_pretrained(tmp_path)
    return policy, tmp_path


def test_round_trip_gives_identical_action_chunks(saved):
    policy, path = saved
    loaded = FastWAMPolicy.from_pretrained(path)
    assert loaded.config.num_layers == policy.config.num_layers
    batch = observation(policy.config, batch_size=2, seed=1)
    torch.testing.assert_close(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch), rtol=0, atol=0)
    # Nothing was left on the meta device and the random frozen encoders came from the checkpoint.
    assert not any(p.is_meta for p in loaded.parameters())


def _rewrite(path, edit):
    weights = load_file(path / "model.safetensors")
    edit(weights)
    save_file(weights, path / "model.safetensors")


def test_missing_weight_is_an_error_naming_it(saved):
    _, path = saved
    key = "model.mot.action.action_out.weight"
    _rewrite(path, lambda w: w.pop(key))
    with pytest.raises(RuntimeError, match=r"missing: model\.mot\.action\.action_out\.weight\n"):
        FastWAMPolicy.from_pretrained(path)


def test_misshaped_weight_is_an_error_naming_it(saved):
    _, path = saved
    key = "model.state_encoder.weight"

    def edit(weights):
        weights[key] = torch.zeros(32, 5)

    _rewrite(path, edit)
    match = r"wrong shape or dtype: model\.state_encoder\.weight: checkpoint \(32, 5\)"
    with pytest.raises(RuntimeError, match=match):
        FastWAMPolicy.from_pretrained(path)


def test_unexpected_weight_is_an_error_naming_it(saved):
    _, path = saved

    def edit(weights):
        weights["model.extra.bias"] = torch.zeros(3)

    _rewrite(path, edit)
    with pytest.raises(RuntimeError, match=r"unexpected: model\.extra\.bias\n"):
        FastWAMPolicy.from_pretrained(path)


def test_checkpoint_holds_only_safetensors(saved):
    _, path = saved
    names = sorted(p.name for p in path.iterdir())
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".pt", ".bin", ".pth")) for n in names)


def test_loaded_policy_runs_in_the_compute_dtype_and_trains_with_fp32_masters(tmp_path):
    policy = make_policy(seed=2, dtype="bfloat16")
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())  # fresh: fp32 masters
    policy.save_pretrained(tmp_path)
    loaded = FastWAMPolicy.from_pretrained(tmp_path)
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())  # inference: half the memory
    chunk = loaded.predict_action_chunk(observation(loaded.config, batch_size=1))
    assert chunk.dtype == torch.float32 and torch.isfinite(chunk).all()
    params = loaded.get_optim_params()  # what LeRobot's trainer calls before building the optimizer
    assert params and all(p.dtype == torch.float32 for p in params)


def test_an_fp32_checkpoint_deploys_in_bfloat16_with_the_same_chunk_to_bf16_precision(saved):
    """``--policy.dtype=bfloat16`` at rollout: half the weight memory, the fp32 policy's actions."""
    from lerobot.configs.policies import PreTrainedConfig

    policy, path = saved
    config = PreTrainedConfig.from_pretrained(path)
    config.dtype = "bfloat16"
    loaded = FastWAMPolicy.from_pretrained(path, config=config)
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    batch = observation(policy.config, batch_size=2, seed=1)
    expected = policy.predict_action_chunk(batch)
    error = (loaded.predict_action_chunk(batch) - expected).abs().max() / expected.abs().max()
    assert 0 < error < 0.05


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_weights_file_is_an_error_naming_the_file(saved, damage):
    _, path = saved
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    match = r"model\.safetensors \(\d+ bytes\) is not a readable safetensors.*Re-download"
    with pytest.raises(ValueError, match=match):
        FastWAMPolicy.from_pretrained(path)


def test_integer_tensor_where_a_float_weight_belongs_is_an_error(saved):
    _, path = saved
    _rewrite(path, lambda w: w.update({"model.state_encoder.weight": w["model.state_encoder.weight"].to(torch.int64)}))
    with pytest.raises(RuntimeError, match=r"wrong shape or dtype: model\.state_encoder\.weight.*torch\.int64"):
        FastWAMPolicy.from_pretrained(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda text: text[: len(text) // 2], r"config\.json.*Unterminated|config\.json.*Expecting"),
        (
            lambda text: text.replace('"num_inference_steps": 10', '"num_inference_steps": 0'),
            r"config\.json.*num_inference_steps` must be >= 1",
        ),
        (lambda text: text.replace('"num_inference_steps"', '"num_infrence_steps"'), r"num_infrence_steps"),
    ],
    ids=["truncated", "value out of range", "unknown field"],
)
def test_invalid_config_json_is_an_error_naming_the_problem(saved, edit, match):
    _, path = saved
    config = path / "config.json"
    text = json.dumps(json.loads(config.read_text()), indent=2)
    config.write_text(edit(text))
    with pytest.raises(ValueError, match=match):
        FastWAMPolicy.from_pretrained(path)


def test_resuming_in_bfloat16_restores_the_fp32_masters_exactly(tmp_path):
    """bf16 training keeps fp32 masters; a resumed run must get those back, not their bf16 rounding."""
    policy = make_policy(seed=2, dtype="bfloat16")
    masters = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert any(not torch.equal(m, m.bfloat16().float()) for m in masters.values())  # bf16 would lose bits
    policy.save_pretrained(tmp_path)
    loaded = FastWAMPolicy.from_pretrained(tmp_path)  # what lerobot-train --resume=true builds
    params = dict(loaded.named_parameters())
    assert all(params[n].dtype == torch.bfloat16 for n in masters)
    loaded.get_optim_params()  # what lerobot-train calls before building the optimizer
    for name, master in masters.items():
        assert params[name].dtype == torch.float32
        assert torch.equal(params[name], master), name


def test_non_finite_weights_are_refused_at_load_naming_them(saved):
    _, path = saved

    def poison(weights):
        weights["model.state_encoder.weight"][0, 0] = float("nan")

    _rewrite(path, poison)
    with pytest.raises(ValueError, match=r"NaN or Inf in model\.state_encoder\.weight:.*earlier checkpoint"):
        FastWAMPolicy.from_pretrained(path)


def test_model_card_says_the_plugin_is_needed_and_how_the_checkpoint_was_trained(monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setattr(ModelCard, "validate", lambda self, *a, **k: None)  # the Hub's YAML check needs a network
    policy = make_policy(seed=1)
    policy.config.repo_id = "someone/fastwam_so101"
    card = policy.generate_model_card("someone/so101_pick", "fastwam", None, None)
    text = str(card)
    assert f"pip install /path/to/lerobot-fastwam  # lerobot_policy_fastwam {lerobot_fastwam.__version__}" in text
    assert "Trained on `someone/so101_pick`" in text
    assert "variant `fastwam`" in text and "lerobot-rollout --policy.path=someone/fastwam_so101" in text
    assert "datasets:" in text and "someone/so101_pick" in text  # LeRobot's own card data is kept
