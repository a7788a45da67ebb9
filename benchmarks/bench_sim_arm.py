"""A trained checkpoint deployed on the simulated arm through LeRobot's own deployment paths: success and loop rate.

``--robot.type=metaworld_arm`` (``lerobot_fastwam/sim/metaworld_arm.py``) is the Meta-World env the demo
records, behind LeRobot's ``Robot`` interface; it resets itself after each success or ``episode_length`` steps
and appends each finished episode to a results file. This script drives it with a demo checkpoint through

- ``sync``: ``lerobot-rollout --inference.type=sync`` (a chunk is predicted inside the control loop);
- ``rtc``: ``lerobot-rollout --inference.type=rtc`` (chunks predicted in a background thread, blended by
  real-time chunking with ``--execution-horizon``);
- ``async``: ``lerobot-fastwam serve`` (LeRobot's gRPC policy server) and LeRobot's ``RobotClient``
  (``python -m lerobot.async_inference.robot_client``), two processes on loopback.

Each runs the console command a user types until the arm has finished ``--episodes`` episodes (the same seeds
in every mode), stops it with Ctrl-C, and reports their success rate and loop rate (actions the arm executed
per second within episodes). The camera is renamed to the checkpoint's one camera key (``--rename_map``).

    python benchmarks/bench_sim_arm.py --checkpoint outputs/demo/train/checkpoints/last/pretrained_model \\
        --task button-press-topdown-v3 --episodes 20 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_rollout import policy_server
from results_block import write_block

from lerobot_fastwam.sim.metaworld import task_descriptions
from lerobot_fastwam.sim.metaworld_arm import CAMERA

MODES = ("sync", "rtc", "async")


def rename_map(checkpoint: Path) -> str:
    """``--rename_map`` from the arm's camera to the checkpoint's one camera key (as JSON)."""
    cameras = [
        k
        for k, f in json.loads((checkpoint / "config.json").read_text())["input_features"].items()
        if f["type"] == "VISUAL"
    ]
    if len(cameras) != 1:
        raise SystemExit(f"The simulated arm has one camera; {checkpoint} takes {cameras}.")
    return json.dumps({f"observation.images.{CAMERA}": cameras[0]})


def robot_args(args, results: Path, seed: int) -> list[str]:
    return [
        "--robot.type=metaworld_arm",
        f"--robot.task={args.task}",
        f"--robot.seed={seed}",
        f"--robot.episode_length={args.episode_length}",
        f"--robot.results_file={results}",
    ]


def console_script(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def run_until(command: list[str], results: Path, count: int, args, log: Path, cwd: Path) -> None:
    """Run a deployment command until ``results`` holds ``count`` episodes (or ``--max-seconds`` passed), then
    stop it with Ctrl-C (SIGINT), as a user would."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = time.monotonic() + args.max_seconds
        while process.poll() is None and time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= count:
                break
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        elif process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed; see {log}:\n{log.read_text()[-3000:]}")


def rollout_command(mode: str, args, results: Path, seed: int) -> list[str]:
    command = [
        console_script("lerobot-rollout"),
        "--strategy.type=base",
        f"--policy.path={args.checkpoint}",
        "--policy.device=cpu",
        *robot_args(args, results, seed),
        f"--task={args.prompt}",
        f"--rename_map={args.rename_map}",
        f"--fps={args.fps}",
        f"--duration={args.max_seconds + 60}",
        f"--inference.type={mode}",
        "--return_to_initial_position=false",
    ]
    if mode == "rtc":
        command.append(f"--inference.rtc.execution_horizon={args.execution_horizon}")
        if args.queue_threshold is not None:
            command.append(f"--inference.queue_threshold={args.queue_threshold}")
    return command


def client_command(args, results: Path, seed: int, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lerobot.async_inference.robot_client",
        *robot_args(args, results, seed),
        f"--server_address={address}",
        "--policy_type=fastwam",
        f"--pretrained_name_or_path={args.checkpoint}",
        "--policy_device=cpu",
        f"--actions_per_chunk={args.actions_per_chunk}",
        f"--task={args.prompt}",
        f"--fps={args.fps}",
    ]


def run_mode(mode: str, args, results: Path, log: Path, workdir: Path) -> None:
    """All episodes in one run (the arm resets itself), or with ``--restart-per-episode`` one run per episode
    (the policy starts afresh each time; for async, the server stays up and the client restarts)."""
    runs = (
        [(args.seed + i, i + 1) for i in range(args.episodes)]
        if args.restart_per_episode
        else [(args.seed, args.episodes)]
    )
    if mode != "async":
        for seed, count in runs:
            run_until(rollout_command(mode, args, results, seed), results, count, args, log, workdir)
        return
    with policy_server(workdir, args.fps, f"--rename_map={args.rename_map}") as address:
        for seed, count in runs:
            run_until(client_command(args, results, seed, address), results, count, args, log, workdir)


def summary(mode: str, results: Path) -> dict:
    episodes = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    steps, seconds = sum(e["steps"] for e in episodes), sum(e["seconds"] for e in episodes)
    successes = [e for e in episodes if e["success"]]
    return {
        "mode": mode,
        "episodes": len(episodes),
        "successes": len(successes),
        "success_rate": len(successes) / len(episodes) if episodes else float("nan"),
        "loop_rate": steps / seconds if seconds else float("nan"),
        "median_steps": statistics.median(e["steps"] for e in successes) if successes else float("nan"),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a demo checkpoint's pretrained_model folder")
    parser.add_argument("--task", default="button-press-topdown-v3", help="the Meta-World task the arm runs")
    parser.add_argument("--prompt", default=None, help="the instruction (default: the task's LeRobot description)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--fps", type=int, default=30, help="requested control rate")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per mode (seeds seed .. seed + n - 1)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="wall-time cap per mode")
    parser.add_argument("--execution-horizon", type=int, default=10, help="rtc: --inference.rtc.execution_horizon")
    parser.add_argument(
        "--queue-threshold",
        type=int,
        default=None,
        help="rtc: --inference.queue_threshold, the queue length at which the next chunk is computed (default: "
        "LeRobot's, 30)",
    )
    parser.add_argument("--actions-per-chunk", type=int, default=10, help="async: the client's actions_per_chunk")
    parser.add_argument("--episode-length", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1000, help="episode i resets with seed + i")
    parser.add_argument(
        "--restart-per-episode",
        action="store_true",
        help="start the command afresh for each episode, as when a scene is reset with the rollout stopped",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="write the table into this Markdown file (a rerun replaces it)"
    )
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint.resolve()
    args.rename_map = rename_map(args.checkpoint)
    args.prompt = args.prompt or task_descriptions()[args.task.removeprefix("metaworld-")]
    command = "python benchmarks/bench_sim_arm.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for mode in args.modes:
            results, log = workdir / f"{mode}.jsonl", workdir / f"{mode}.log"
            start = time.perf_counter()
            run_mode(mode, args, results, log, workdir)
            rows.append({**summary(mode, results), "wall_s": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)

    load = os.getloadavg()[0]
    lines = [
        f"### Simulated arm: {args.task} ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores); 1-min load average "
        f"after the runs {load:.2f}",
        f"- requested {args.fps} fps, {args.episodes} episodes per mode (at most {args.max_seconds:.0f} s); rtc "
        f"execution horizon {args.execution_horizon}, queue threshold {args.queue_threshold or 30}; async "
        f"actions_per_chunk {args.actions_per_chunk}; episode i resets with seed {args.seed} + i"
        f"{', one run per episode' if args.restart_per_episode else ', one run for all (the arm resets itself)'}; "
        f"{args.episode_length} steps without success is a failure",
        "",
        "| mode | episodes | successes | success rate | actions/s executed | median steps to success |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['episodes']} | {r['successes']} | {100 * r['success_rate']:.0f}% "
            f"| {r['loop_rate']:.1f} | {r['median_steps']:.0f} |"
        )
    print("\n".join(lines))
    if args.output:
        label = f"{args.task}{' restarted' if args.restart_per_episode else ''}"
        begin, end = f"<!-- bench_sim_arm {label} begin -->", f"<!-- bench_sim_arm {label} end -->"
        write_block(args.output, begin, end, lines, "## Deployment on the simulated arm: success and loop rate")
    return rows


if __name__ == "__main__":
    main()
