"""Train Fast-WAM with LeRobot's `lerobot-train`, then load the checkpoint and predict action chunks.

Everything runs offline on CPU in a couple of minutes: the tiny preset (`--policy.preset=tiny`) builds small
random frozen encoders instead of downloading Wan2.2, and the dataset is a synthetic LeRobotDataset v3
(two cameras stored as video, a 6-D state, 6-D actions, two language tasks) written by
`lerobot_fastwam/testing/synthetic_dataset.py`.

    python examples/train_and_predict.py --output-dir /tmp/fastwam_demo --steps 200

Steps:
1. write the dataset to ``<output-dir>/dataset``;
2. train with ``lerobot-train --policy.type=fastwam --policy.preset=tiny ...`` into ``<output-dir>/train``
   (the full log goes to ``<output-dir>/train.log``);
3. load ``checkpoints/last/pretrained_model`` with ``FastWAMPolicy.from_pretrained`` and the saved
   processors with ``make_pre_post_processors(policy.config, pretrained_path=...)``;
4. predict a 32-step action chunk for a few dataset frames (preprocessor -> policy -> postprocessor) and
   compare it with the dataset's recorded actions, next to two trivial baselines.

Options it does not know go to ``lerobot-train`` unchanged (``--policy.num_inference_steps=5``, ...).

A few hundred CPU steps of a 43 K-parameter model show that the pipeline works end to end; they do not make
a good policy. The printed "spread" says whether the chunks depend on the observation yet (a policy that
ignores it scores about the dataset mean's error or worse). Raise ``--steps`` for a better fit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny preset needs nothing from the Hub

from lerobot_fastwam.testing.synthetic_dataset import make_dataset  # noqa: E402

REPO_ID = "local/fastwam_demo"
LOG_STEP = re.compile(r"(step:\d+ smpl:.*)$")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("outputs/fastwam_demo"),
        help="where the dataset, the training run and its log go (replaced on each run)",
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps (~0.2 s each on 2 CPU cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--lr",
        type=float,
        default=3e-3,
        help="peak learning rate (the paper's 1e-4 is for long runs; the demo is short)",
    )
    parser.add_argument("--episodes", type=int, default=4, help="episodes in the synthetic dataset")
    parser.add_argument("--frames", type=int, default=64, help="frames per episode")
    parser.add_argument("--num-predict", type=int, default=4, help="dataset frames to predict chunks for")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=1000)
    args, extra = parser.parse_known_args()
    if any(not arg.startswith("--") for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.train_args = extra  # anything else goes to lerobot-train, e.g. --policy.num_inference_steps=5
    return args


def train(args: argparse.Namespace, data_root: Path, train_dir: Path, log_path: Path) -> Path:
    cli = [
        "--policy.type=fastwam",
        "--policy.preset=tiny",
        f"--policy.device={args.device}",
        "--policy.push_to_hub=false",
        f"--policy.optimizer_lr={args.lr}",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={data_root}",
        "--dataset.video_backend=pyav",
        f"--steps={args.steps}",
        f"--batch_size={args.batch_size}",
        f"--save_freq={args.steps}",
        f"--log_freq={max(1, args.steps // 8)}",
        f"--output_dir={train_dir}",
        f"--seed={args.seed}",
        "--num_workers=0",
        "--env_eval_freq=0",
        "--wandb.enable=false",
        *args.train_args,
    ]
    print("$ lerobot-train " + " ".join(cli), flush=True)
    # `python -m lerobot.scripts.lerobot_train` is the `lerobot-train` console script of this interpreter.
    cmd = [sys.executable, "-m", "lerobot.scripts.lerobot_train", *cli]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            # tqdm's progress bar shares lines with the log: keep only the metrics.
            match = LOG_STEP.search(line.rstrip())
            if match:
                print("  " + match.group(1), flush=True)
        code = proc.wait()
    if code != 0:
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"lerobot-train failed with exit code {code}; log: {log_path}\n{tail}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s (log: {log_path})", flush=True)
    return train_dir / "checkpoints" / "last" / "pretrained_model"


def predict(args: argparse.Namespace, data_root: Path, checkpoint: Path) -> None:
    import torch  # noqa: PLC0415
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata  # noqa: PLC0415
    from lerobot.policies.factory import make_pre_post_processors  # noqa: PLC0415

    from lerobot_fastwam import FastWAMPolicy  # noqa: PLC0415  (also registers the plugin's processor step)

    start = time.perf_counter()
    policy = FastWAMPolicy.from_pretrained(checkpoint)
    policy.to(args.device).eval()
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config,
        pretrained_path=str(checkpoint),
        preprocessor_overrides={"device_processor": {"device": args.device}},
    )
    cfg = policy.config
    print(
        f"\nloaded {checkpoint} in {time.perf_counter() - start:.2f} s: cameras {cfg.ordered_camera_keys} "
        f"tiled to {list(cfg.image_size)}, chunk {cfg.chunk_size} x {cfg.action_dim} actions, "
        f"{sum(p.numel() for p in policy.model.parameters()):,} parameters in the trained network"
    )

    # Observations at single frames; the ground-truth chunk is the next `chunk_size` recorded actions.
    fps = LeRobotDatasetMetadata(REPO_ID, root=data_root).fps
    dataset = LeRobotDataset(
        REPO_ID,
        root=data_root,
        video_backend="pyav",
        delta_timestamps={"action": [i / fps for i in range(cfg.chunk_size)]},
    )
    last_start = len(dataset) - cfg.chunk_size
    indices = torch.linspace(0, max(last_start, 0), args.num_predict).round().long().tolist()
    items = [dataset[i] for i in indices]
    observation = {key: torch.stack([item[key] for item in items]) for key in cfg.input_features}
    observation["task"] = [item["task"] for item in items]
    truth = torch.stack([item["action"] for item in items])  # [B, chunk, A], in dataset units
    valid = ~torch.stack([item["action_is_pad"] for item in items])  # steps past an episode's end are padding
    print(
        "observation batch: "
        + ", ".join(f"{k} {tuple(v.shape)}" for k, v in observation.items() if isinstance(v, torch.Tensor))
        + f", {len(observation['task'])} tasks"
    )

    timings = []
    for _ in range(3):  # the first call also encodes the task strings (then cached)
        start = time.perf_counter()
        batch = preprocessor(dict(observation))
        chunk = postprocessor(policy.predict_action_chunk(batch))
        timings.append(time.perf_counter() - start)
    chunk = chunk.cpu()
    print(
        f"predicted chunk {tuple(chunk.shape)} ({cfg.num_inference_steps} denoising steps); batch of "
        f"{len(indices)}: first call {timings[0] * 1e3:.0f} ms, then {min(timings[1:]) * 1e3:.0f} ms "
        f"({min(timings[1:]) / len(indices) * 1e3:.0f} ms per observation)"
    )

    stats = dataset.meta.stats["action"]
    mean = torch.as_tensor(stats["mean"], dtype=torch.float32)
    state = observation["observation.state"]
    baselines = {"policy": chunk, "dataset mean action": mean.expand_as(truth)}
    if state.shape[-1] == truth.shape[-1]:  # the synthetic action is the next pose, so "stay put" is a baseline
        baselines["hold current state"] = state[:, None, :].expand_as(truth)
    print(f"\naction error vs the dataset's recorded actions ({int(valid.sum())} valid steps):")
    for name, prediction in baselines.items():
        error = (prediction - truth).abs()[valid]
        first = (prediction[:, 0] - truth[:, 0]).abs().mean()
        print(
            f"  {name:>20}: MAE {error.mean():.4f}  RMSE {error.pow(2).mean().sqrt():.4f}  first-step MAE {first:.4f}"
        )
    spread = lambda x: float(x.std(dim=0).mean())  # noqa: E731  (how much a chunk varies across frames)
    print(
        f"  spread of the chunks across the {len(indices)} frames: policy {spread(chunk):.3f}, "
        f"recorded {spread(truth):.3f} (a policy that ignores its observation has spread ~0)"
    )

    def fmt(rows):
        return "  ".join("[" + ", ".join(f"{v:+.2f}" for v in row) + "]" for row in rows.tolist())

    for row, index in enumerate(indices[:2]):
        print(f"frame {index} ({observation['task'][row]!r}), steps 0-2, first 3 dims:")
        print(f"  predicted {fmt(chunk[row, :3, :3])}")
        print(f"  recorded  {fmt(truth[row, :3, :3])}")

    # Closed-loop use: select_action pops one action at a time from a queue of n_action_steps.
    policy.reset()
    one = preprocessor({key: value[0] for key, value in observation.items()})  # one unbatched observation
    start = time.perf_counter()
    actions = [postprocessor(policy.select_action(one)) for _ in range(cfg.n_action_steps)]
    elapsed = time.perf_counter() - start
    print(
        f"\nselect_action: {len(actions)} actions of shape {tuple(actions[0].shape)} in {elapsed * 1e3:.0f} ms "
        f"(one chunk prediction, then {cfg.n_action_steps - 1} queue pops)"
    )


def main() -> None:
    args = parse_args()
    total = time.perf_counter()
    output_dir = args.output_dir.resolve()
    data_root, train_dir, log_path = output_dir / "dataset", output_dir / "train", output_dir / "train.log"
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(train_dir, ignore_errors=True)  # lerobot-train refuses an existing output dir

    start = time.perf_counter()
    dataset = make_dataset(data_root, repo_id=REPO_ID, episodes=args.episodes, frames=args.frames)
    print(
        f"wrote {dataset.meta.total_episodes} episodes / {dataset.meta.total_frames} frames "
        f"({', '.join(dataset.meta.camera_keys)} as video) to {data_root} in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )

    checkpoint = train(args, data_root, train_dir, log_path)
    predict(args, data_root, checkpoint)
    print(f"\ntotal {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
