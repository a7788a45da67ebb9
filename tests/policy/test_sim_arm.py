"""The simulated arm (``--robot.type=metaworld_arm``) and a trained demo checkpoint deployed on it through LeRobot's
own deployment commands: ``lerobot-rollout`` (sync and RTC) and ``lerobot-fastwam serve`` + LeRobot's
``RobotClient``. Each must make the arm succeed: only the policy's own actions can press the button (the arm
refuses LeRobot's return-to-start motion, whose keys are positions, not its actions)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("metaworld")

from lerobot_fastwam.sim.metaworld import task_descriptions  # noqa: E402
from lerobot_fastwam.sim.metaworld_arm import ACTION_NAMES, CAMERA, STATE_NAMES, MetaworldArm, MetaworldArmConfig  # noqa: E402

from .serving import running_server  # noqa: E402

TASK = "button-press-topdown-v3"
EPISODE_LENGTH = 100  # an expert presses the button in about 60 steps: a failure is cut short
RENAME = json.dumps({f"observation.images.{CAMERA}": "observation.image"})


def _arm(tmp_path, **overrides) -> MetaworldArm:
    config = MetaworldArmConfig(task=TASK, calibration_dir=tmp_path, **overrides)
    return MetaworldArm(config)


def test_the_arm_counts_a_success_resets_and_refuses_bad_actions(tmp_path):
    results = tmp_path / "episodes.jsonl"
    limit = 150
    arm = _arm(tmp_path, seed=5, episode_length=limit, results_file=str(results))
    assert list(arm.action_features) == list(ACTION_NAMES)
    arm.connect()
    try:
        first = arm.get_observation()
        assert first[CAMERA].shape == (128, 128, 3) and first[CAMERA].dtype.name == "uint8"
        assert [first[n] for n in STATE_NAMES] == pytest.approx(arm._env._raw_obs[:4].tolist())
        with pytest.raises(KeyError, match="x.vel"):
            arm.send_action({n: 0.0 for n in STATE_NAMES})  # LeRobot's return-to-start motion
        with pytest.raises(ValueError, match="non-finite"):
            arm.send_action({**dict.fromkeys(ACTION_NAMES, 0.0), "z.vel": math.nan})
        for _ in range(limit):  # the task's scripted expert, as the demo records it
            expert = arm._env.expert_action()
            arm.send_action(dict(zip(ACTION_NAMES, expert.tolist(), strict=True)))
            if arm.episodes:
                break
        assert arm.episodes and arm.episodes[0]["success"] and arm.episodes[0]["steps"] < limit
        assert json.loads(results.read_text()) == arm.episodes[0]
        # Reset to the next seed: the hand is back at the start pose, above the button it pressed down.
        assert arm.get_observation()["z.pos"] == pytest.approx(first["z.pos"], abs=0.01)
        for _ in range(limit):  # doing nothing fails after episode_length steps
            arm.send_action(dict.fromkeys(ACTION_NAMES, 0.0))
        assert [e["success"] for e in arm.episodes] == [True, False] and arm.episodes[1]["steps"] == limit
    finally:
        arm.disconnect()
    assert not arm.is_connected


def _run_until_a_success(command: list[str], results: Path, cwd: Path, limit_s: float = 120) -> str:
    """Run a deployment command until the arm reports a successful episode (or ``limit_s``), then stop it with
    Ctrl-C (SIGINT), as a user would; returns its output after checking it stopped cleanly."""
    log = cwd / "command.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + limit_s
        while process.poll() is None and time.monotonic() < deadline:
            if results.exists() and any(json.loads(line)["success"] for line in results.read_text().splitlines()):
                break
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    output = log.read_text()
    # LeRobot's robot client lets Ctrl-C end it with a KeyboardInterrupt traceback (after stopping cleanly).
    assert "Traceback" not in output or output.rstrip().endswith("KeyboardInterrupt"), output[-4000:]
    assert results.exists(), f"no episode finished:\n{output[-4000:]}"
    episodes = [json.loads(line) for line in results.read_text().splitlines()]
    assert any(e["success"] for e in episodes), f"{episodes}\n{output[-4000:]}"
    return output


def _robot_args(results: Path) -> list[str]:
    return [
        "--robot.type=metaworld_arm",
        f"--robot.task={TASK}",
        f"--robot.episode_length={EPISODE_LENGTH}",
        "--robot.seed=1000",
        f"--robot.results_file={results}",
    ]


@pytest.mark.parametrize("inference", ["sync", "rtc"])
def test_lerobot_rollout_makes_the_simulated_arm_succeed(demo_run, tmp_path, inference):
    checkpoint = demo_run[0] / "train" / "checkpoints" / "last" / "pretrained_model"
    results = tmp_path / "episodes.jsonl"
    command = [
        str(Path(sys.executable).with_name("lerobot-rollout")),
        "--strategy.type=base",
        f"--policy.path={checkpoint}",
        "--policy.device=cpu",
        *_robot_args(results),
        f"--task={task_descriptions()[TASK]}",
        f"--rename_map={RENAME}",
        "--fps=30",
        "--duration=150",
        f"--inference.type={inference}",
        "--return_to_initial_position=false",
        *(["--inference.rtc.execution_horizon=10"] if inference == "rtc" else []),
    ]
    _run_until_a_success(command, results, tmp_path)


def test_serve_and_lerobots_robot_client_make_the_simulated_arm_succeed(demo_run, tmp_path):
    checkpoint = demo_run[0] / "train" / "checkpoints" / "last" / "pretrained_model"
    results = tmp_path / "episodes.jsonl"
    with running_server(tmp_path, f"--rename_map={RENAME}") as (address, _):
        command = [
            sys.executable,
            "-m",
            "lerobot.async_inference.robot_client",
            *_robot_args(results),
            f"--server_address={address}",
            "--policy_type=fastwam",
            f"--pretrained_name_or_path={checkpoint}",
            "--policy_device=cpu",
            "--actions_per_chunk=10",
            f"--task={task_descriptions()[TASK]}",
            "--fps=30",
        ]
        _run_until_a_success(command, results, tmp_path)
