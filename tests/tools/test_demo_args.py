"""`lerobot-fastwam demo` checks every option before it records anything, and deletes only what it wrote: its
marked output directory's stage outputs and its own recordings. Nothing here records or trains."""

import json
import types

import pytest
import torch

from lerobot_fastwam.sim import metaworld
from lerobot_fastwam.tools import demo
from lerobot_fastwam.tools.cli import main


class Stop(Exception):
    """Raised by a stubbed stage: the demo got past its checks."""


@pytest.fixture
def no_recording(monkeypatch):
    """Fail the test if the demo starts recording."""

    def record(*args, **kwargs):
        pytest.fail("the demo started recording before refusing")

    monkeypatch.setattr(demo, "record", record)


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_an_output_directory_the_demo_did_not_write_is_refused_and_kept(tmp_path, capsys, no_recording):
    out = tmp_path / "mine"
    (out / "train").mkdir(parents=True)
    (out / "train" / "notes.txt").write_text("mine")
    err = refused(["--output", str(out)], capsys)
    assert f"--output {out} is a non-empty directory" in err and "add --overwrite" in err
    assert "choose a new or empty directory" in err
    assert (out / "train" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # not marked either


def test_a_file_at_the_output_path_is_refused_even_with_overwrite(tmp_path, capsys, no_recording):
    out = tmp_path / "report.txt"
    out.write_text("mine")
    err = refused(["--output", str(out), "--overwrite"], capsys)
    assert f"--output {out} is a file" in err
    assert out.read_text() == "mine"


def test_a_recording_directory_the_demo_did_not_record_is_refused_and_kept(tmp_path, capsys, no_recording):
    """Both recordings are checked before the first one starts (``record`` itself refuses too: see below)."""
    data = tmp_path / "data"
    (data / "heldout").mkdir(parents=True)
    (data / "heldout" / "episode.parquet").write_text("mine")
    err = refused(["--output", str(tmp_path / "out"), "--data", str(data)], capsys)
    assert f"{data / 'heldout'} is a non-empty directory" in err and "fastwam_demo_recording.json" in err
    assert "choose another --data directory, or add --overwrite" in err
    assert not (tmp_path / "out").exists()
    assert (data / "heldout" / "episode.parquet").read_text() == "mine"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", ""], "--task '' names no task"),
        (["--task", " , ,"], "names no task"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--video-loss-weight", "-0.5"], "--video-loss-weight must be 0 or more"),
        (["--episodes", "0"], "--episodes must be at least 1"),
        (["--device", "gpu"], "--device gpu: Unknown device"),
        (["--policy.num_layer=2"], "--policy.num_layer=2: lerobot-fastwam cache refuses it (unrecognized arguments"),
        (["--policy.num_layers=two"], "--policy.num_layers=two: lerobot-fastwam cache refuses it (`policy.num_layers`"),
        (["--policy.num_video_frames=4"], "--policy.num_video_frames=4: lerobot-fastwam cache refuses it"),
        (["--policy.num_inference_steps=0"], "num_inference_steps"),
        (["--policy.num_layers=2", "--num_worker=1"], "--num_worker=1: lerobot-train refuses it"),
    ],
)
def test_a_bad_option_fails_before_anything_is_recorded(tmp_path, capsys, no_recording, argv, message):
    out = tmp_path / "out"
    err = refused(["--output", str(out), *argv], capsys)
    assert message in err
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused_with_the_fix(tmp_path, capsys, monkeypatch, no_recording):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = refused(["--output", str(tmp_path / "out"), "--device", "cuda"], capsys)
    assert "--device cuda is not available on this machine: pass --device cpu" in err
    assert not (tmp_path / "out").exists()


def test_the_malformed_flag_is_named_among_good_ones(tmp_path, capsys, no_recording):
    err = refused(
        ["--output", str(tmp_path / "out"), "--num_workers=2", "--policy.chunk_size=x", "--policy.num_layers=2"],
        capsys,
    )
    assert "error: --policy.chunk_size=x: " in err and "Couldn't parse 'x'" in err and "Fix or drop it" in err


def test_flags_for_lerobot_train_pass_the_check(tmp_path):
    extra = ["--num_workers=2", "--policy.num_layers=2", "--policy.action_consistency_weight=1"]
    args = demo.parse_args(["--output", str(tmp_path / "out"), *extra, "--policy.num_inference_steps=1"])
    assert args.train_args == [*extra, "--policy.num_inference_steps=1"]


@pytest.mark.parametrize("case", ["marked", "empty", "overwrite"])
def test_the_demos_own_output_an_empty_one_or_overwrite_is_accepted(tmp_path, monkeypatch, case):
    out = tmp_path / "out"
    out.mkdir()
    if case != "empty":
        (out / "train").mkdir()
        (out / "train" / "old.txt").write_text("old")
    if case == "marked":
        (out / demo.OUTPUT_MARKER).write_text("{}")

    def record(root, *args, **kwargs):
        raise Stop(root)

    monkeypatch.setattr(demo, "record", record)
    with pytest.raises(Stop):
        demo.run(["--output", str(out), *(["--overwrite"] if case == "overwrite" else [])])
    assert (out / demo.OUTPUT_MARKER).is_file()
    assert case == "empty" or (out / "train" / "old.txt").read_text() == "old"  # replaced only at training


def test_record_replaces_only_its_own_recordings(tmp_path, monkeypatch):
    """A finished recording of other options (its marker inside) and an interrupted one (the pending marker
    beside it) are the demo's and replaced; anything else is refused and kept."""
    calls = []

    def record_expert_dataset(tasks, root, *args, **kwargs):
        calls.append(root)
        assert not root.exists()  # LeRobot creates it
        raise Stop(root)

    monkeypatch.setattr(metaworld, "record_expert_dataset", record_expert_dataset)
    finished, interrupted, mine = tmp_path / "finished", tmp_path / "interrupted", tmp_path / "mine"
    for root in (finished, interrupted, mine):
        root.mkdir()
        (root / "data.parquet").write_text("x")
    (finished / demo.RECORDING_MARKER).write_text(json.dumps({"spec": {"episodes_per_task": 1}}))
    (tmp_path / f"interrupted.{demo.RECORDING_MARKER}").write_text("{}")
    for root in (finished, interrupted):
        with pytest.raises(Stop):
            demo.record(root, "local/x", ["reach-v3"], 2, seed=0)
    assert calls == [finished, interrupted]
    assert (tmp_path / f"finished.{demo.RECORDING_MARKER}").is_file()  # pending until the recording finishes
    with pytest.raises(FileExistsError, match=f"{mine} is a non-empty directory .* add --overwrite"):
        demo.record(mine, "local/x", ["reach-v3"], 2, seed=0)
    assert (mine / "data.parquet").read_text() == "x" and calls == [finished, interrupted]
    with pytest.raises(Stop):
        demo.record(mine, "local/x", ["reach-v3"], 2, seed=0, overwrite=True)


def test_evaluate_replaces_an_evaluation_only_in_the_demos_output(tmp_path, monkeypatch):
    """``benchmarks/few_step.py`` evaluates into ``eval_n<steps>`` beside the demo's marker: replaced; elsewhere
    a non-empty directory is refused and kept."""

    def run_logged(command, log, desc, total=None):
        raise Stop(command)

    monkeypatch.setattr(demo, "run_logged", run_logged)
    args = types.SimpleNamespace(device="cpu", tasks=["reach-v3"], episode_length=10, eval_episodes=1, seed=0)
    checkpoint = tmp_path / "train" / "checkpoints" / "last" / "pretrained_model"
    elsewhere = tmp_path / "results" / "eval_n1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "eval_info.json").write_text("mine")
    with pytest.raises(FileExistsError, match="not in a lerobot-fastwam demo output directory"):
        demo.evaluate(args, checkpoint, elsewhere, tmp_path / "eval.log")
    assert (elsewhere / "eval_info.json").read_text() == "mine"

    demo_output = tmp_path / "demo"
    (demo_output / "eval_n1").mkdir(parents=True)
    (demo_output / "eval_n1" / "eval_info.json").write_text("earlier")
    (demo_output / demo.OUTPUT_MARKER).write_text("{}")
    with pytest.raises(Stop):
        demo.evaluate(args, checkpoint, demo_output / "eval_n1", tmp_path / "eval.log", ("--policy.x=1",))
    assert not (demo_output / "eval_n1").exists()
