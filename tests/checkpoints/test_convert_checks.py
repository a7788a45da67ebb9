"""`lerobot-fastwam convert` refuses bad inputs before writing anything, with one line naming the cause and fix."""

import copy
import json

import pytest
import torch

from lerobot_fastwam.checkpoints.official import (
    ConversionError,
    architecture_from_weights,
    check_official_stats,
    read_official_checkpoint,
)
from lerobot_fastwam.checkpoints.wan_layout import official_key, wan_layout_to_plugin
from lerobot_fastwam.testing.builtin_offline import build_builtin_policy
from lerobot_fastwam.tools.cli import main

from ..helpers import TINY, official_payload

ACTION_DIM, STATE_DIM = 7, 8


@pytest.fixture(scope="module")
def payload() -> dict:
    """A tiny official checkpoint payload (video width 24 = 2 heads x 12)."""
    return official_payload(build_builtin_policy(ACTION_DIM, STATE_DIM, (32, 64), 2, seed=0, **TINY))


def field(n, low=-1.0, high=1.0) -> dict:
    return {"global_min": [low] * n, "global_max": [high] * n, "global_mean": [0.0] * n, "global_std": [1.0] * n}


def good_stats() -> dict:
    return {"action": {"arm": field(6), "gripper": field(1)}, "state": {"all": field(8, -2, 2)}}


def run_convert(tmp_path, capsys, payload, stats=None, *extra, checkpoint=None, heads="2") -> tuple[int, str]:
    """Run the CLI on ``payload`` (or ``checkpoint``) and ``stats``: its exit code (0: converted) and stderr.
    Defaults: ``--output tmp_path/out``, ``--num-heads heads`` (None: left out)."""
    if checkpoint is None:
        checkpoint = tmp_path / "official.pt"
        torch.save(payload, checkpoint)
    (tmp_path / "stats.json").write_text(json.dumps(good_stats() if stats is None else stats))
    args = ["convert", str(checkpoint), "--dataset-stats", str(tmp_path / "stats.json"), "--dtype", "float32"]
    args += [] if "--output" in extra else ["--output", str(tmp_path / "out")]
    args += [] if heads is None else ["--num-heads", heads]
    try:
        main([*args, *extra])
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr().err
    return 0, ""


def refused(tmp_path, capsys, payload, stats=None, *extra, **kwargs) -> str:
    """The CLI's one-line message for a refused conversion; nothing was written."""
    code, err = run_convert(tmp_path, capsys, payload, stats, *extra, **kwargs)
    assert code == 2, err
    assert err.startswith("lerobot-fastwam convert: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    return err


def test_good_conversion_into_an_empty_existing_directory(tmp_path, capsys, payload):
    (tmp_path / "out").mkdir()
    assert run_convert(tmp_path, capsys, payload, None, "--output", str(tmp_path / "out")) == (0, "")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_heads"], config["head_dim"], config["num_layers"]) == (2, 12, 2)
    assert {"model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"} <= {
        f.name for f in (tmp_path / "out").iterdir()
    }


def test_official_key_inverts_the_layout_mapping(tmp_path, payload):
    torch.save(payload, tmp_path / "official.pt")
    state = read_official_checkpoint(str(tmp_path / "official.pt"))
    assert {official_key(k) for k in wan_layout_to_plugin(state)} == set(state)


def test_existing_output_is_not_overwritten_without_the_flag(tmp_path, capsys, payload):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = refused(tmp_path, capsys, payload, None, "--output", str(out))
    assert "non-empty directory" in err and "--overwrite" in err and not (out / "config.json").exists()
    (tmp_path / "file").write_text("x")
    assert "is a file" in refused(tmp_path, capsys, payload, None, "--output", str(tmp_path / "file"), "--overwrite")
    assert run_convert(tmp_path, capsys, payload, None, "--output", str(out), "--overwrite")[0] == 0
    assert (out / "config.json").exists() and (out / "notes.txt").read_text() == "mine"


def _set(path: str, value):
    def edit(stats):
        *parents, last = path.split(".")
        node = stats
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
        return stats

    return edit


@pytest.mark.parametrize(
    ("edit", "norm", "expected"),
    [
        (_set("action.gripper", KeyError), "min/max", "`action` has 6 values over its fields ['arm'], the checkpoint"),
        (_set("action.arm.global_min", [-1.0] * 5), "min/max", "`action.arm` has 5 global_min but 6 global_max"),
        (_set("state.all", field(9)), "z-score", "`state` has 9 values over its fields ['all']"),
        (_set("state", KeyError), "min/max", "no usable `state` entry, but the model has 8 state values"),
        (_set("action", KeyError), "min/max", "no usable `action` entry, but the model has 7 action values"),
        (_set("action.gripper.global_std", KeyError), "z-score", "`action.gripper.global_std` is missing"),
        (_set("action.arm.global_max.3", float("nan")), "min/max", "`action.arm.global_max[3]` is nan"),
        (_set("state.all.global_mean.0", float("-inf")), "z-score", "`state.all.global_mean[0]` is -inf"),
        (_set("action.arm.global_min.2", 5.0), "min/max", "`action.arm.global_min[2]` = 5 > global_max[2] = 1"),
        (_set("state.all.global_std.4", 0.0), "z-score", "`state.all.global_std[4]` = 0, z-score needs std > 0"),
        (_set("action.arm.global_max", ["a"] * 6), "min/max", "`action.arm.global_max` is not a list of numbers"),
    ],
)
def test_bad_stats_are_refused_with_key_and_index(tmp_path, capsys, payload, edit, norm, expected):
    err = refused(tmp_path, capsys, payload, edit(good_stats()), "--norm", norm)
    assert expected in err and "Dataset stats" in err


def test_unreadable_stats_file_is_refused(tmp_path, capsys, payload):
    err = refused(tmp_path, capsys, payload, None, "--dataset-stats", str(tmp_path / "nowhere.json"))
    assert "Cannot read the dataset stats" in err and "nowhere.json" in err


def test_stats_of_a_model_without_state_need_no_state_entry():
    stats = good_stats()
    del stats["state"]
    check_official_stats(stats, "min/max", {"action": ACTION_DIM, "state": None})


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        ("5", "--num-heads 5 does not fit the checkpoint's video width 24"),
        ("8", "--num-heads 8 does not fit"),  # 24 / 8 = 3: odd head size
        (None, "video width 24 is not a released Wan width"),
    ],
)
def test_num_heads_must_fit_the_weights(tmp_path, capsys, payload, heads, expected):
    assert expected in refused(tmp_path, capsys, payload, heads=heads)


def test_num_heads_of_a_released_wan_width_must_be_its_own():
    state = {k: torch.empty(3072, 48, 1, 2, 2, device="meta") for k in ["mot.mixtures.video.patch_embedding.weight"]}
    for key in (
        "video.text_embedding.0",
        "video.time_embedding.0",
        "video.blocks.0.ffn.0",
        "action.action_encoder",
        "action.blocks.0.ffn.0",
    ):
        state[f"mot.mixtures.{key}.weight"] = torch.empty(64, 64, device="meta")
    with pytest.raises(ConversionError, match="Wan width 3072 has 24 heads of 128: pass --num-heads 24"):
        architecture_from_weights(state, 12)
    assert architecture_from_weights(state, None)["head_dim"] == 128


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda mot: mot.pop("mixtures.action.action_encoder.weight"),
            "1 missing: mot.mixtures.action.action_encoder.weight",
        ),
        (
            lambda mot: mot.pop("mixtures.video.blocks.1.cross_attn.k.weight"),
            "1 missing: mot.mixtures.video.blocks.1.cross_attn.k.weight",
        ),
        (
            lambda mot: mot.update({"mixtures.video.extra.weight": torch.zeros(1)}),
            "1 not in the model: mot.mixtures.video.extra.weight",
        ),
        (
            lambda mot: mot.update({"mixtures.action.blocks.1.ffn.0.weight": torch.zeros(3, 3)}),
            "1 of the wrong shape: mot.mixtures.action.blocks.1.ffn.0.weight (3, 3) (model: (32, 16))",
        ),
    ],
)
def test_checkpoint_without_the_model_tensors_is_refused(tmp_path, capsys, payload, edit, expected):
    broken = copy.copy(payload) | {"mot": dict(payload["mot"])}
    edit(broken["mot"])
    err = refused(tmp_path, capsys, broken)
    assert expected in err and "An official Fast-WAM checkpoint is a torch.save dict {'mot'" in err


def test_unreadable_checkpoints_are_refused(tmp_path, capsys, payload):
    good = tmp_path / "good.pt"
    torch.save(payload, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    not_official = tmp_path / "other.pt"
    torch.save({"model": payload["mot"]}, not_official)
    cases = {
        truncated: "is truncated",
        text: "is not a readable torch checkpoint",
        tmp_path / "missing.pt": "does not exist",
        tmp_path: "is a directory",
        not_official: "is not an official Fast-WAM checkpoint (it holds entries ['model'])",
    }
    for checkpoint, expected in cases.items():
        assert expected in refused(tmp_path, capsys, None, checkpoint=checkpoint), checkpoint
    with pytest.raises(ConversionError, match="is truncated"):
        read_official_checkpoint(str(truncated))
