"""``lerobot-fastwam demo``: a Fast-WAM that learns from pixels, from scripted demonstrations to success rate.

    lerobot-fastwam demo --task button-press-topdown-v3 --output outputs/demo [--baseline act]

Every stage is LeRobot's own machinery, run as a user would run it:

1. record the scripted expert of each Meta-World task into a LeRobotDataset (``DIR/data/demonstrations``;
   reused when it was recorded with the same tasks, episode count and seed) and a few held-out episodes
   (``DIR/data/heldout``, other seeds);
2. ``lerobot-fastwam cache``: encode every training window once (``.../demonstrations/fastwam_cache``);
3. ``lerobot-train --policy.type=fastwam --policy.preset=cpu`` with video co-training (``DIR/train``);
4. ``lerobot-eval --env.type=metaworld_cpu`` on fixed seeds (``DIR/eval``);
5. probes on the held-out frames: how much the predicted chunk depends on the camera image, its error against
   the recorded actions next to the dataset-mean action's, and the imagined future next to the real one;
6. with ``--baseline act``: LeRobot's ACT trained on the same data for the same wall time, evaluated on the
   same seeds and probed the same way;
7. ``DIR/report.json`` and ``DIR/report.md`` (training curve, evaluation video, future strip).

The demo deletes only what it wrote: it marks its output directory (``fastwam_demo_output.json``) and each
recording (``fastwam_demo_recording.json``), replaces its stage outputs only in a marked directory, and refuses a
non-empty unmarked ``--output`` or recording directory unless ``--overwrite`` is given. Every option, the
``--policy.*`` flags for ``lerobot-train`` included, is checked before anything is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .demo_options import (
    OUTPUT_MARKER,
    RECORDING_MARKER,
    cache_args,
    clear_stage,
    dataset_repo_id,
    fastwam_policy_args,
    lerobot_script,
    log_freq,
    parse_args,
    pending_marker,
    recording_refusal,
    recording_roots,
    train_command,
)

HELDOUT_SEED = 100_000  # held-out episodes reset with seeds far from the training ones (0..episodes-1)
HELDOUT_EPISODES = 3
PROBE_HORIZON = 10  # actions compared per chunk: the executed part (n_action_steps)

# LeRobot's ACT as measured in ../shared/reference/metaworld-baseline.md (16 M parameters, no pretrained backbone).
ACT_ARGS = [
    "--policy.type=act",
    "--policy.pretrained_backbone_weights=null",
    "--policy.chunk_size=32",
    "--policy.n_action_steps=10",
    "--policy.dim_model=256",
    "--policy.dim_feedforward=1024",
    "--policy.n_encoder_layers=2",
    "--policy.n_vae_encoder_layers=2",
    "--policy.optimizer_lr=1e-4",
    "--policy.optimizer_lr_backbone=1e-4",
    "--batch_size=8",
]
STEP_LOG = re.compile(r" step:\S+ .*?loss:([\d.e+-]+)")  # LeRobot rounds the step ("1K"): counted instead
TIMING_LOG = re.compile(r"updt_s:([\d.]+) data_s:([\d.]+)")
LOSS_TERM = re.compile(r"(loss_video|loss_action):([\d.e+-]+)")
TQDM = re.compile(r"(\d+)/(\d+) \[")


# ------------------------------------------------------------------------------------------------------
# Stages
def _say(message: str) -> None:
    print(f"[fastwam demo] {message}", flush=True)


def record(
    root: Path,
    repo_id: str,
    tasks: list[str],
    episodes: int,
    seed: int,
    expert: str = "scripted",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Record the expert episodes unless ``root`` already holds exactly this recording. Another recording the
    demo made at ``root`` is replaced; anything else only with ``overwrite`` (see ``recording_refusal``)."""
    from ..sim.metaworld import record_expert_dataset  # noqa: PLC0415

    spec = {"tasks": tasks, "episodes_per_task": episodes, "seed": seed, "repo_id": repo_id, "expert": expert}
    marker = root / RECORDING_MARKER
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec:
        _say(f"reusing the recorded dataset {root}")
        return json.loads(marker.read_text())
    refusal = recording_refusal(root, overwrite)
    if refusal:
        raise FileExistsError(refusal)
    if root.exists():
        shutil.rmtree(root)
    start = time.time()
    root.parent.mkdir(parents=True, exist_ok=True)
    pending_marker(root).write_text(json.dumps({"spec": spec}, indent=2))
    with _native_stderr_to(root.parent / f"{root.name}.record.log"):  # the video encoder's banner per episode
        dataset = record_expert_dataset(
            tasks, root, repo_id, episodes, seed=seed, progress_file=sys.stdout, expert=expert
        )
    info = {
        "spec": spec,
        "episodes": dataset.meta.total_episodes,
        "frames": dataset.meta.total_frames,
        "expert_failures": dataset.expert_failures,
        "seconds": time.time() - start,
    }
    marker.write_text(json.dumps(info, indent=2))
    pending_marker(root).unlink()
    normal_scheduling()  # the video encoder made this process real-time (see normal_scheduling)
    return info


@contextlib.contextmanager
def _native_stderr_to(path: Path):
    """Send file descriptor 2 (where native libraries such as the AV1 encoder print) to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def normal_scheduling() -> None:
    """Put the calling process back into Linux's default time-sharing scheduling.

    Run as root, LeRobot's video encoder (SVT-AV1, through PyAV) switches the recording process to real-time
    scheduling (SCHED_FIFO, priority 99), and every process it starts inherits that: a real-time
    ``lerobot-train`` starves the rest of the machine (a 2-core machine stopped answering for 40 minutes). The
    demo calls this after recording and in every child before it runs (``run_logged``)."""
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def run_logged(
    command: list[str], log_path: Path, desc: str, total: int | None = None, threads: int | None = None
) -> float:
    """Run a LeRobot script, its output to ``log_path``, a progress bar from its own step counter.

    ``threads``: its compute threads (``OMP_NUM_THREADS``, unless set by the user); by default all cores but one,
    left to a data-loading worker or the simulator (measured on 2 cores: a trainer decoding through one worker
    took 0.68 s/step with one compute thread, 0.97 s/step with two fighting the worker)."""
    from tqdm import tqdm  # noqa: PLC0415

    start = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.setdefault("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 2) - 1)))
    with open(log_path, "w") as log, tqdm(total=total, desc=desc, unit="step") as bar:
        log.write(" ".join(command) + "\n")
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=normal_scheduling,
        )
        for line in proc.stdout:  # universal newlines: tqdm's carriage returns end lines too
            log.write(line)
            match = TQDM.search(line)
            if match:
                done, of = int(match.group(1)), int(match.group(2))
                bar.total = of
                bar.update(done - bar.n)
        code = proc.wait()
    if code:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{desc} failed (exit {code}); see {log_path}. Last lines:\n{tail}")
    return time.time() - start


def evaluate(args, checkpoint: Path, out: Path, log: Path, policy_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """``lerobot-eval`` on ``metaworld_cpu`` with fixed seeds; returns success overall and per task.
    ``policy_args``: ``--policy.*`` overrides of the checkpoint's config (e.g. ``--policy.num_inference_steps=1``).
    An earlier evaluation at ``out`` is replaced only inside the demo's output directory (see ``clear_stage``)."""
    clear_stage(out)
    command = [
        lerobot_script("lerobot-eval"),
        f"--policy.path={checkpoint}",
        f"--policy.device={args.device}",
        "--env.type=metaworld_cpu",
        f"--env.task={','.join(args.tasks)}",
        f"--env.episode_length={args.episode_length}",
        f"--eval.n_episodes={args.eval_episodes}",
        "--eval.batch_size=1",
        "--eval.use_async_envs=false",
        f"--seed={args.seed}",
        f"--output_dir={out}",
        *policy_args,
    ]
    seconds = run_logged(command, log, f"lerobot-eval {checkpoint.parent.parent.parent.name}")
    info = json.loads((out / "eval_info.json").read_text())
    per_task = {
        group: {"success_rate": agg["pc_success"] / 100.0, "n_episodes": agg["n_episodes"]}
        for group, agg in info["per_group"].items()
    }
    return {
        "success_rate": info["overall"]["pc_success"] / 100.0,
        "n_eval_episodes": info["overall"]["n_episodes"],
        "per_task": per_task,
        "eval_seconds": seconds,
        "video_paths": info["overall"].get("video_paths", []),
    }


def probe(loaded, args, heldout: Path, data: Path) -> dict[str, Any]:
    """Image dependence and chunk errors on the held-out frames; ``loaded`` is (policy, pre, post)."""
    import torch  # noqa: PLC0415
    from lerobot.datasets import LeRobotDatasetMetadata  # noqa: PLC0415

    from .policy_probes import chunk_latency, probe_frames, probe_policy  # noqa: PLC0415

    policy, pre, post = loaded
    batch = probe_frames(heldout, dataset_repo_id(args.tasks) + "_heldout", args.probe_frames, PROBE_HORIZON)
    mean_action = torch.as_tensor(
        LeRobotDatasetMetadata(dataset_repo_id(args.tasks), root=data).stats["action"]["mean"]
    )
    return {
        **probe_policy(policy, pre, post, batch, mean_action, PROBE_HORIZON),
        "chunk_ms": chunk_latency(policy, pre, batch),
    }


def future_strip(loaded, heldout: Path, repo_id: str, path: Path) -> None:
    """A PNG: real frames of a held-out window (current, +4 strides, +8 strides) over the world model's
    imagined ones from the current frame alone."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    policy, pre, _ = loaded
    cfg = policy.config
    fps = LeRobotDatasetMetadata(repo_id, root=heldout).fps
    deltas = [i / fps for i in cfg.observation_delta_indices]
    dataset = LeRobotDataset(repo_id, root=heldout, delta_timestamps={k: deltas for k in cfg.ordered_camera_keys})
    item = dataset[0]
    observation = {  # the current frame of each camera, as a batch of one
        k: (v[0] if k in cfg.ordered_camera_keys else v).unsqueeze(0)
        for k, v in item.items()
        if k.startswith("observation.")
    }
    observation["task"] = [item["task"]]
    imagined, _ = policy.predict_future_frames(pre(observation))
    real = torch.cat([item[k] for k in cfg.ordered_camera_keys], dim=-1)  # [T, 3, H, W], cameras side by side
    shown = [0, 4, 8] if real.shape[0] > 8 else [0, real.shape[0] - 1]
    rows = []
    for frames in (real[shown], imagined[0].transpose(0, 1)[shown].cpu()):
        rows.append(torch.cat(list(frames), dim=-1))
    grid = torch.cat(rows, dim=-2).clamp(0, 1).permute(1, 2, 0).numpy()
    Image.fromarray((grid * 255).astype(np.uint8)).resize((grid.shape[1] * 2, grid.shape[0] * 2)).save(path)


def training_curve(log: Path, log_freq: int) -> list[dict[str, float]]:
    """``step``, ``loss``, ``loss_video``, ``loss_action`` from lerobot-train's log lines (one every
    ``log_freq`` steps)."""
    curve = []
    for line in log.read_text().splitlines():
        match = STEP_LOG.search(line)
        if match:
            point = {"step": (len(curve) + 1) * log_freq, "loss": float(match.group(1))}
            point.update({k: float(v) for k, v in LOSS_TERM.findall(line)})
            curve.append(point)
    return curve


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        for key in ("loss_action", "loss_video", "loss"):
            if curve and key in curve[0] and (key != "loss" or "loss_action" not in curve[0]):
                ax.plot([p["step"] for p in curve], [p[key] for p in curve], label=f"{name} {key}")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def calibrate_steps(args, data: Path, out: Path, policy_args: list[str], seconds: float) -> int:
    """Steps of a policy that fill ``seconds`` of lerobot-train wall time: a short run measures its start-up
    and seconds per step on this machine, now."""
    probe_steps = 30
    wall = run_logged(
        train_command(args, data, out, policy_args, probe_steps), out.with_suffix(".log"), "calibrating ACT speed"
    )
    timings = TIMING_LOG.findall(out.with_suffix(".log").read_text())
    per_step = float(timings[-1][0]) + float(timings[-1][1])
    startup = max(0.0, wall - probe_steps * per_step)
    shutil.rmtree(out, ignore_errors=True)
    return max(1, int((seconds - startup) / per_step))


# ------------------------------------------------------------------------------------------------------
def run(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OUTPUT_MARKER).is_file():
        (out / OUTPUT_MARKER).write_text(
            json.dumps({"written_by": "lerobot-fastwam demo", "command": "lerobot-fastwam demo " + " ".join(argv)})
        )
    data, heldout = (root.resolve() for root in recording_roots(args))
    repo_id = dataset_repo_id(args.tasks)

    _say(f"1/6 recording {args.episodes} {args.expert} expert episodes per task of {args.tasks}")
    recording = record(data, repo_id, args.tasks, args.episodes, seed=0, expert=args.expert, overwrite=args.overwrite)
    record(
        heldout,
        repo_id + "_heldout",
        args.tasks,
        HELDOUT_EPISODES,
        seed=HELDOUT_SEED,
        expert=args.expert,
        overwrite=args.overwrite,
    )

    _say("2/6 encoding the training windows once (lerobot-fastwam cache)")
    from .cache import cache  # noqa: PLC0415

    cache(cache_args(args, data))

    _say(f"3/6 training Fast-WAM with lerobot-train ({args.steps} steps)")
    train_dir = out / "train"
    clear_stage(train_dir)
    # From the cache a sample decodes no frame (about 2 ms to load): the trainer loads its own batches and computes
    # on every core (2 cores: 0.29 s/step, against 0.42 with one loader worker and one compute thread).
    train_seconds = run_logged(
        train_command(args, data, train_dir, fastwam_policy_args(args), args.steps, workers=0),
        out / "train.log",
        "lerobot-train fastwam",
        args.steps,
        threads=os.cpu_count(),
    )
    checkpoint = train_dir / "checkpoints" / "last" / "pretrained_model"

    _say(f"4/6 evaluating with lerobot-eval ({args.eval_episodes} episodes per task)")
    evaluation = evaluate(args, checkpoint, out / "eval", out / "eval.log")

    _say("5/6 probing the policy on held-out frames")
    from .policy_probes import load_policy  # noqa: PLC0415

    loaded = load_policy(checkpoint, args.device)
    probes = probe(loaded, args, heldout, data)
    future_strip(loaded, heldout, repo_id + "_heldout", out / "future_strip.png")

    curves = {"fastwam": training_curve(out / "train.log", log_freq(args.steps))}
    baseline = None
    if args.baseline == "act":
        _say("6/6 baseline: LeRobot's ACT on the same data for the same wall time")
        act_dir = out / "act_train"
        clear_stage(act_dir)
        act_steps = calibrate_steps(args, data, out / "act_calibration", ACT_ARGS, train_seconds)
        act_seconds = run_logged(
            train_command(args, data, act_dir, ACT_ARGS, act_steps),
            out / "act_train.log",
            "lerobot-train act",
            act_steps,
        )
        act_checkpoint = act_dir / "checkpoints" / "last" / "pretrained_model"
        act_eval = evaluate(args, act_checkpoint, out / "act_eval", out / "act_eval.log")
        curves["act"] = training_curve(out / "act_train.log", log_freq(act_steps))
        baseline = {
            "policy": "act",
            "checkpoint": str(act_checkpoint),
            "train_steps": act_steps,
            "train_seconds": act_seconds,
            **act_eval,
            **probe(load_policy(act_checkpoint, args.device), args, heldout, data),
        }
    plot_curves(curves, out / "training_curve.png")
    video = None
    if evaluation["video_paths"]:
        video = out / "eval_episode.mp4"
        shutil.copy(evaluation["video_paths"][0], video)

    report = {
        "success_rate": evaluation["success_rate"],
        "n_eval_episodes": evaluation["n_eval_episodes"],
        "tasks": args.tasks,
        "per_task_success": {k: v["success_rate"] for k, v in evaluation["per_task"].items()},
        "checkpoint": str(checkpoint),
        "dataset_root": str(data),
        "dataset_repo_id": repo_id,
        "dataset_episodes": recording["episodes"],
        "dataset_frames": recording["frames"],
        "expert": args.expert,
        "train_steps": args.steps,
        "train_seconds": train_seconds,
        "eval_seconds": evaluation["eval_seconds"],
        "image_dependence": probes["image_dependence"],
        "num_inference_steps": loaded[0].config.num_inference_steps,
        "chunk_ms": probes["chunk_ms"],
        "probes": probes,
        "mean_action_mse": probes["mean_action_mse"],
        "video_loss_weight": args.video_loss_weight,
        "seed": args.seed,
        "final_losses": curves["fastwam"][-1] if curves["fastwam"] else None,
        "baseline": baseline,
        "eval_video": str(video) if video else None,
        "command": "lerobot-fastwam demo " + " ".join(argv),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    _say(
        f"success {report['success_rate']:.0%} over {report['n_eval_episodes']} episodes, image dependence "
        f"{report['image_dependence']:.2f}; report: {out / 'report.md'}"
    )
    return report


def render_markdown(report: dict[str, Any]) -> str:
    rows = [("Fast-WAM (cpu preset)", report, report["probes"])]
    if report["baseline"]:
        rows.append(("LeRobot ACT", report["baseline"], report["baseline"]))
    lines = [
        f"# Fast-WAM demo: {', '.join(report['tasks'])}",
        "",
        f"`{report['command']}`",
        "",
        f"Data: {report['dataset_episodes']} {report['expert']} expert episodes ({report['dataset_frames']} frames) in "
        f"`{report['dataset_root']}`. Evaluation: `lerobot-eval --env.type=metaworld_cpu`, "
        f"{report['n_eval_episodes']} episodes, seeds from {report['seed']}; Fast-WAM samples each chunk in "
        f"{report['num_inference_steps']} step{'s' * (report['num_inference_steps'] > 1)}. Chunk ms: median "
        "time of one predict_action_chunk at batch 1 on this machine.",
        "",
        "| policy | train steps | train s | success | image dependence | chunk MSE | mean-action MSE | chunk ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result, probes in rows:
        lines.append(
            f"| {name} | {result['train_steps']} | {result['train_seconds']:.0f} | {result['success_rate']:.0%} | "
            f"{probes['image_dependence']:.2f} | {probes['policy_mse']:.4f} | {probes['mean_action_mse']:.4f} | "
            f"{probes['chunk_ms']:.1f} |"
        )
    if len(report["per_task_success"]) > 1:
        lines += ["", "| task | success |", "|---|---|"]
        lines += [f"| {task} | {rate:.0%} |" for task, rate in report["per_task_success"].items()]
    lines += [
        "",
        "Image dependence: RMS change of the first 10 predicted actions when only the camera image is swapped "
        "between held-out frames, over the change when the whole observation is swapped (0: the policy ignores "
        "the camera).",
        "",
        "## Training curve",
        "",
        "![training curve](training_curve.png)",
        "",
        "## Imagined future",
        "",
        "Top: the real frames now, 16 and 32 steps later (held-out episode). Bottom: the current frame through the "
        "frozen codec, then the future the world model imagines from it alone (not used by the actions).",
        "",
        "![future strip](future_strip.png)",
        "",
    ]
    if report["eval_video"]:
        lines += ["## An evaluation episode", "", "[eval_episode.mp4](eval_episode.mp4)", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    run(argv)
