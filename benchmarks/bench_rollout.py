"""The robot loop rate a Fast-WAM policy sustains through LeRobot's own deployment paths.

A random-weight checkpoint (preset ``--preset``, two 640x480 cameras centre-cropped to the preset's tiles, 6
joints) drives the test-only simulated arm (``tests/sim/fastwam_sim_arm.py``, which time-stamps every action it
receives) through:

- ``sync``: ``lerobot-rollout --inference.type=sync`` (a chunk is predicted inside the control loop, every
  ``n_action_steps`` steps);
- ``rtc``: ``lerobot-rollout --inference.type=rtc`` (chunks are predicted in a background thread and blended by
  real-time chunking);
- ``async``: ``lerobot-fastwam serve`` (LeRobot's gRPC policy server) and LeRobot's ``RobotClient``, in
  separate processes on loopback.

For each requested ``--fps`` it reports the actions per second the robot received after the first one, and the
median and worst gap between consecutive actions (a stall while a chunk is computed shows in the worst gap).
Start-up (imports, loading, warm-up) is excluded: the clock starts at the first action.

    python benchmarks/bench_rollout.py --preset small --fps 30 100 --duration 20 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_fastwam.configuration_fastwam import FastWAMConfig
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "tests" / "sim"
JOINTS = 6
CAMERAS = ("front", "wrist")
TASK = "pick up the cube"
STARTUP_S = 25

CLIENT = """
import sys, threading, time
sys.path.insert(0, {sim!r})
from fastwam_sim_arm import FastWAMSimArm, FastWAMSimArmConfig
from lerobot.async_inference import robot_client
from lerobot.async_inference.configs import RobotClientConfig
robot = FastWAMSimArm(FastWAMSimArmConfig(joints={joints}, action_log={log!r}))
robot_client.make_robot_from_config = lambda config: robot
config = RobotClientConfig(policy_type="fastwam", pretrained_name_or_path={checkpoint!r}, robot=robot.config,
    actions_per_chunk={chunk}, task={task!r}, server_address={address!r}, fps={fps})
client = robot_client.RobotClient(config)
assert client.start()
threading.Thread(target=client.receive_actions, daemon=True).start()
control = threading.Thread(target=client.control_loop, kwargs={{"task": config.task}}, daemon=True)
control.start()
deadline = None
while control.is_alive():
    if deadline is None and robot.sent:
        deadline = time.monotonic() + {duration}
    if deadline is not None and time.monotonic() > deadline:
        break
    time.sleep(0.05)
client.stop()
"""


def make_checkpoint(path: Path, preset: str, n_action_steps: int) -> FastWAMConfig:
    inputs = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 480, 640)) for c in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (JOINTS,))
    config = FastWAMConfig(
        preset=preset,
        input_features=inputs,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (JOINTS,))},
        n_action_steps=n_action_steps,
        use_pretrained_wan=False,
        device="cpu",
    )
    torch.manual_seed(0)
    policy = FastWAMPolicy(config)
    policy.save_pretrained(path)
    ones = torch.ones(JOINTS)
    stats = {
        "observation.state": {"mean": 0 * ones, "std": ones, "min": -ones, "max": ones},
        "action": {"mean": 0 * ones, "std": ones, "min": -ones, "max": ones},
    }
    for pipeline in make_fastwam_pre_post_processors(config, stats):
        pipeline.save_pretrained(path)
    return config


def loop_rate(log: Path, duration: float) -> dict[str, float]:
    """Rate and gaps of the actions received in the first ``duration`` seconds after the first one."""
    times = [json.loads(line)["t"] for line in log.read_text().splitlines()] if log.exists() else []
    times = [t for t in times if t - times[0] <= duration]
    if len(times) < 3:
        return {"actions": len(times), "rate": float("nan"), "median_gap": float("nan"), "worst_gap": float("nan")}
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "actions": len(times),
        "rate": (len(times) - 1) / (times[-1] - times[0]),
        "median_gap": statistics.median(gaps) * 1e3,
        "worst_gap": max(gaps) * 1e3,
    }


def run_rollout(mode: str, checkpoint: Path, fps: int, duration: float, log: Path, execution_horizon: int) -> None:
    args = [
        "--strategy.type=base",
        f"--policy.path={checkpoint}",
        "--policy.device=cpu",
        "--robot.type=fastwam_sim_arm",
        f"--robot.action_log={log}",
        f"--task={TASK}",
        f"--fps={fps}",
        f"--duration={duration}",
        f"--inference.type={mode}",
    ]
    if mode == "rtc":
        args.append(f"--inference.rtc.execution_horizon={execution_horizon}")
    command = [sys.executable, str(SIM / "run_rollout.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 600)
    if result.returncode != 0:
        raise RuntimeError(f"lerobot-rollout ({mode}) failed:\n{result.stderr[-3000:]}")


@contextlib.contextmanager
def policy_server(workdir: Path, fps: int, *extra: str):
    """``lerobot-fastwam serve`` on a free loopback port (its output in ``workdir``); yields its address and
    stops it with SIGTERM, as a service manager would."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(workdir / f"serve_{fps}.log", "w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lerobot_fastwam.tools.cli",
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--fps={fps}",
                *extra,
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(1.0)
        yield f"127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def run_async(checkpoint: Path, fps: int, duration: float, log: Path, chunk: int, workdir: Path) -> None:
    with policy_server(workdir, fps) as address:
        code = CLIENT.format(
            sim=str(SIM),
            joints=JOINTS,
            log=str(log),
            checkpoint=str(checkpoint),
            chunk=chunk,
            task=TASK,
            address=address,
            fps=fps,
            duration=duration,
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=duration + 600
        )
        if result.returncode != 0:
            server_log = (workdir / f"serve_{fps}.log").read_text()
            raise RuntimeError(f"RobotClient failed:\n{result.stderr[-3000:]}\nserver:\n{server_log[-3000:]}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "cpu"])
    parser.add_argument("--modes", nargs="+", default=["sync", "rtc", "async"], choices=["sync", "rtc", "async"])
    parser.add_argument("--fps", nargs="+", type=int, default=[30, 100], help="requested control rates")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured after the first action")
    parser.add_argument("--n-action-steps", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_rollout.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        checkpoint = workdir / "checkpoint"
        config = make_checkpoint(checkpoint, args.preset, args.n_action_steps)
        for mode in args.modes:
            for fps in args.fps:
                log = workdir / f"{mode}_{fps}.jsonl"
                # lerobot-rollout's --duration counts from its start: STARTUP_S more covers loading and warm-up.
                if mode == "async":
                    run_async(checkpoint, fps, args.duration, log, config.chunk_size, workdir)
                else:
                    run_rollout(mode, checkpoint, fps, args.duration + STARTUP_S, log, args.n_action_steps)
                row = {"mode": mode, "fps": fps, **loop_rate(log, args.duration)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"### Rollout loop rate: {args.preset} preset ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch "
        f"{torch.__version__}; 1-min load average after the run {load:.2f}",
        f"- policy: random weights, 2 cameras 640x480 -> {tuple(config.image_size)} tiled, {JOINTS} joints, chunk "
        f"{config.chunk_size}, n_action_steps {config.n_action_steps}, {config.num_inference_steps} denoising steps; "
        f"rtc: execution horizon {args.n_action_steps}; async: actions_per_chunk {config.chunk_size}",
        "",
        "| mode | requested fps | actions/s reached | median gap (ms) | worst gap (ms) | actions |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['fps']} | {r['rate']:.1f} | {r['median_gap']:.1f} | {r['worst_gap']:.1f} "
            f"| {r['actions']} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + report)
    return rows


if __name__ == "__main__":
    main()
