"""A checkpoint is refused when it cannot be what it claims: weights that fail their checksum, a head count its
training run contradicts, cameras or normalisation statistics that do not fit the config and data it loads with.
Each error names the problem, where it comes from and the fix (issue #22)."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lerobot_fastwam.checkpoints.weights import CHECKSUM_KEY
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors
from lerobot_fastwam.testing.builtin_offline import build_builtin_policy
from lerobot_fastwam.tools.cli import main

from ..helpers import TINY, make_config, make_policy, observation, official_payload

ACTION_DIM, STATE_DIM = 7, 8


def _stats() -> dict:
    def vec(value, dim):
        return torch.full((dim,), float(value))

    state = {"mean": vec(0, STATE_DIM), "std": vec(1, STATE_DIM)}
    action = {
        "mean": vec(0, ACTION_DIM),
        "std": vec(1, ACTION_DIM),
        "min": vec(-1, ACTION_DIM),
        "max": vec(1, ACTION_DIM),
    }
    return {"observation.state": state, "action": action}


def _save_checkpoint(path):
    """A checkpoint as lerobot-train writes it: config, weights, and processors with the dataset's statistics."""
    policy = make_policy(seed=3)
    policy.save_pretrained(path)
    for pipeline in make_fastwam_pre_post_processors(policy.config, _stats()):
        pipeline.save_pretrained(path)


# ------------------------------------------------------------------------------------------------------------
# 1. Checksum
def _flip_a_bit(path, key):
    """Flip the lowest mantissa bit of the first value of ``key`` in place: the weight stays finite."""
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start = 8 + size + json.loads(data[8 : 8 + size])[key]["data_offsets"][0]
    data[start] ^= 1
    file.write_bytes(bytes(data))


def test_a_bit_flipped_in_the_weights_fails_the_checksum_written_at_save(tmp_path):
    policy = make_policy(seed=3)
    policy.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert len(f.metadata()[CHECKSUM_KEY]) == 64  # SHA-256, written by save_pretrained
    FastWAMPolicy.from_pretrained(tmp_path)  # the saved file passes
    key = "model.mot.action.action_out.weight"
    _flip_a_bit(tmp_path, key)
    flipped = load_file(tmp_path / "model.safetensors")[key]
    assert torch.isfinite(flipped).all() and not torch.equal(flipped, policy.state_dict()[key])
    match = (
        r"model\.safetensors does not match the checksum written when it was saved \(SHA-256 of its tensors: "
        r"expected [0-9a-f]{64}, found [0-9a-f]{64}\): the file is corrupt or was edited\. Re-download or re-save it"
    )
    with pytest.raises(ValueError, match=match):
        FastWAMPolicy.from_pretrained(tmp_path)


def test_weights_without_a_checksum_still_load_with_a_notice(tmp_path, caplog):
    """LeRobot's built-in fastwam, earlier plugin versions and earlier conversions wrote no checksum."""
    policy = make_policy(seed=3)
    policy.save_pretrained(tmp_path)
    save_file(load_file(tmp_path / "model.safetensors"), tmp_path / "model.safetensors")  # no metadata
    with caplog.at_level(logging.INFO, logger="lerobot_fastwam.checkpoints.weights"):
        loaded = FastWAMPolicy.from_pretrained(tmp_path)
    assert any("carries no checksum" in r.message and r.levelno == logging.INFO for r in caplog.records)
    batch = observation(policy.config, batch_size=1)
    torch.testing.assert_close(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch))


# ------------------------------------------------------------------------------------------------------------
# 2. Head count of a conversion
@pytest.fixture(scope="module")
def payload() -> dict:
    """A tiny official checkpoint trained with 2 heads of 12 (video width 24, not a released Wan width)."""
    return official_payload(build_builtin_policy(ACTION_DIM, STATE_DIM, (32, 64), 2, seed=0, **TINY))


def _official_run(tmp_path, payload, **video):
    """The official training's layout: <run>/config.yaml and <run>/checkpoints/weights/step_<N>.pt."""
    run = tmp_path / "run"
    (run / "checkpoints" / "weights").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "weights" / "step_00000100.pt"
    torch.save(payload, checkpoint)
    video = {"hidden_dim": 24, "num_heads": 2, "attn_head_dim": 12, "ffn_dim": 48, "num_layers": 2, **video}
    action = {"hidden_dim": 16, "ffn_dim": 32, "num_heads": 2, "attn_head_dim": 12}
    lines = ["model:", "  video_dit_config:"] + [f"    {k}: {v}" for k, v in video.items()]
    lines += ["  action_dit_config:"] + [f"    {k}: {v}" for k, v in action.items()]
    (run / "config.yaml").write_text("\n".join(lines) + "\n")
    stats = {
        group: {"all": {"global_min": [-1.0] * n, "global_max": [1.0] * n}}
        for group, n in (("action", 7), ("state", 8))
    }
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    return checkpoint


def _convert(tmp_path, capsys, checkpoint, *extra) -> tuple[int, str]:
    args = ["convert", str(checkpoint), "--dataset-stats", str(tmp_path / "stats.json"), "--dtype", "float32"]
    try:
        main([*args, "--output", str(tmp_path / "out"), *extra])
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr().err
    return 0, ""


def test_convert_refuses_a_head_count_the_training_runs_config_contradicts(tmp_path, capsys, payload):
    checkpoint = _official_run(tmp_path, payload)
    code, err = _convert(tmp_path, capsys, checkpoint, "--num-heads", "3")  # 24 = 3 x 8 fits the shapes
    assert code == 2 and not (tmp_path / "out").exists()
    assert "--num-heads 3 does not fit the checkpoint's video width 24" in err
    assert "config.yaml, the config of its training run, gives 2 heads of 12: pass --num-heads 2 or leave it out" in err
    assert _convert(tmp_path, capsys, checkpoint) == (0, "")  # the head count comes from the run's config
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_heads"], config["head_dim"]) == (2, 12)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        assert CHECKSUM_KEY in f.metadata()  # conversions carry a checksum too


def test_convert_refuses_a_run_config_that_does_not_describe_the_weights(tmp_path, capsys, payload):
    checkpoint = _official_run(tmp_path, payload, hidden_dim=48, attn_head_dim=24)
    code, err = _convert(tmp_path, capsys, checkpoint, "--num-heads", "2")
    assert code == 2 and not (tmp_path / "out").exists()
    assert "config.yaml, the training run's config found next to the checkpoint, does not describe its weights" in err
    assert "video_dit_config.hidden_dim 48 (weights: 24)" in err and "move the config away" in err


# ------------------------------------------------------------------------------------------------------------
# 3. Cameras
@pytest.mark.parametrize(("trained", "requested"), [(2, {"cameras": 1}), (1, {"cameras": 2})], ids=["2->1", "1->2"])
def test_a_checkpoint_refuses_a_config_of_another_camera_count(tmp_path, trained, requested):
    make_policy(seed=3, cameras=trained).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"was trained on the cameras \[.*\] tiled 'side_by_side', but the config"):
        FastWAMPolicy.from_pretrained(tmp_path, config=make_config(**requested))


def test_a_checkpoint_refuses_its_cameras_in_another_tiling_order_and_loads_with_its_own(tmp_path):
    make_policy(seed=3, cameras=2).save_pretrained(tmp_path)
    swapped = make_config(cameras=2, camera_keys=["observation.images.cam1", "observation.images.cam0"])
    match = (
        r"cameras \['observation\.images\.cam0', 'observation\.images\.cam1'\] tiled 'side_by_side', but the config "
        r"it is loaded into has \['observation\.images\.cam1', 'observation\.images\.cam0'\].*--rename_map"
    )
    with pytest.raises(ValueError, match=match):
        FastWAMPolicy.from_pretrained(tmp_path, config=swapped)
    config = PreTrainedConfig.from_pretrained(tmp_path, cli_overrides=["--n_action_steps=5"])  # as --policy.path
    assert FastWAMPolicy.from_pretrained(tmp_path, config=config).config.n_action_steps == 5


# ------------------------------------------------------------------------------------------------------------
# 4. Statistics of another length
@pytest.mark.parametrize(
    ("state_file", "length"),
    [
        ("policy_preprocessor_step_6_normalizer_processor.safetensors", 1),
        ("policy_postprocessor_step_0_unnormalizer_processor.safetensors", 3),
        ("policy_postprocessor_step_1_fastwam_plugin_action_guard.safetensors", 9),
    ],
)
def test_saved_action_statistics_of_another_length_are_refused_at_load(tmp_path, state_file, length):
    _save_checkpoint(tmp_path)
    state = load_file(tmp_path / state_file)
    save_file(
        {k: v[:1].repeat(length) if k.startswith("action") else v for k, v in state.items()}, tmp_path / state_file
    )
    match = rf"{state_file} of the checkpoint .*: `action` \w+ has {length} values? \(shape \({length},\)\)"
    with pytest.raises(ValueError, match=match + r", but the policy's `action` has 7 .*saved for another robot"):
        FastWAMPolicy.from_pretrained(tmp_path)


def test_dataset_statistics_of_another_length_are_refused_when_the_processors_are_built():
    stats = _stats()
    stats["action"] = {name: value[:3] for name, value in stats["action"].items()}
    match = r"The dataset statistics \(the dataset's meta/stats\.json\): `action` mean has 3 values \(shape \(3,\)\)"
    with pytest.raises(ValueError, match=match + r".*lerobot-edit-dataset .*recompute_stats"):
        make_pre_post_processors(make_config(), dataset_stats=stats)  # what lerobot-train calls


# ------------------------------------------------------------------------------------------------------------
# 5. Non-finite statistics name their source
def test_nan_in_a_datasets_statistics_names_the_dataset_when_fine_tuning(tmp_path):
    _save_checkpoint(tmp_path / "checkpoint")
    stats = _stats()
    stats["observation.state"]["mean"][0] = float("nan")
    meta = SimpleNamespace(repo_id="someone/so101_pick", root=tmp_path / "so101_pick")
    config = PreTrainedConfig.from_pretrained(tmp_path / "checkpoint")
    match = (
        r"The statistics of the dataset someone/so101_pick \(.*so101_pick/meta/stats\.json\): `observation\.state` "
        r"mean\[0\] is nan\. Recompute them: lerobot-edit-dataset --repo_id someone/so101_pick --operation\.type "
        r"recompute_stats"
    )
    with pytest.raises(ValueError, match=match):  # what make_policy passes when lerobot-train fine-tunes
        FastWAMPolicy.from_pretrained(tmp_path / "checkpoint", config=config, dataset_stats=stats, dataset_meta=meta)


def test_nan_in_a_checkpoints_processor_statistics_names_the_processor_file(tmp_path):
    _save_checkpoint(tmp_path)
    state_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    state = load_file(tmp_path / state_file)
    state["action.std"][2] = float("nan")
    save_file(state, tmp_path / state_file)
    match = rf"The processor file {state_file} of the checkpoint .*: `action` std\[2\] is nan\. .*re-download"
    with pytest.raises(ValueError, match=match):
        FastWAMPolicy.from_pretrained(tmp_path)
