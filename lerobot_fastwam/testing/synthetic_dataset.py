"""Write a small, deterministic LeRobotDataset v3 on disk (no Hub access), for demos and tests.

Each episode shows a colored square moving on a smooth background along a closed curve, clockwise or
counter-clockwise depending on the episode's task. The state is the square's current pose, the action is the
pose one frame later, and each camera renders the scene differently ("front": the whole scene, "wrist": a
zoomed view centred on the square), so the video has motion to predict and the action is a function of the
images, the state and the task.

Usage from Python::

    from lerobot_fastwam.testing.synthetic_dataset import make_dataset
    dataset = make_dataset("/tmp/fastwam_demo_data")

or from the command line::

    python -m lerobot_fastwam.testing.synthetic_dataset /tmp/fastwam_demo_data --episodes 4 --frames 64
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np

TASKS = (
    "move the square clockwise around the table",
    "move the square counter-clockwise around the table",
)


def _trajectory(frames: int, fps: int, direction: int, phase: float, dim: int) -> np.ndarray:
    """Smooth pose ``[frames + 1, dim]`` in [-1, 1]: (x, y) on an ellipse, then slower harmonics."""
    t = np.arange(frames + 1, dtype=np.float64) / fps
    omega = 2.0 * math.pi / 4.0  # one lap every 4 seconds
    angle = phase + direction * omega * t
    columns = [0.7 * np.cos(angle), 0.5 * np.sin(angle)]
    for i in range(2, dim):
        columns.append(0.8 * np.sin((i + 1) * 0.5 * angle + 0.3 * i))
    return np.stack(columns[:dim], axis=-1).astype(np.float32)


def _render(camera: str, index: int, pose: np.ndarray, height: int, width: int, hue: np.ndarray) -> np.ndarray:
    """One ``[height, width, 3]`` uint8 frame: a soft-edged square on a gradient background.

    Cameras named "wrist" (or every second camera) get a zoomed view that follows the square.
    """
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    x, y = float(pose[0]), float(pose[1])
    if "wrist" in camera or index % 2 == 1:
        # A view that follows the square, zoomed in 2x: the background moves, the square stays near the centre.
        xs, ys = xs * 0.5 + x * 0.8, ys * 0.5 + y * 0.8
        half = 0.15
    else:
        half = 0.22
    background = np.stack([0.35 + 0.25 * xs, 0.35 + 0.25 * ys, 0.45 - 0.15 * (xs + ys) / 2], axis=-1)
    # Signed distance to the square's border, turned into a soft mask (a few pixels of anti-aliasing).
    distance = np.maximum(np.abs(xs - x), np.abs(ys - y)) - half
    mask = np.clip(0.5 - distance * max(height, width) / 4.0, 0.0, 1.0)[..., None]
    # The square's color drifts slowly with the third pose value (when there is one).
    shade = 0.75 + 0.25 * (float(pose[2]) if pose.shape[0] > 2 else 0.0)
    image = background * (1.0 - mask) + (hue * shade)[None, None, :] * mask
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def dataset_features(
    cameras: tuple[str, ...], image_hw: tuple[int, int], state_dim: int, action_dim: int, use_videos: bool
) -> dict:
    height, width = image_hw
    features: dict = {
        "observation.state": {
            "dtype": "float32",
            "shape": (state_dim,),
            "names": [f"state_{i}" for i in range(state_dim)],
        },
        "action": {
            "dtype": "float32",
            "shape": (action_dim,),
            "names": [f"action_{i}" for i in range(action_dim)],
        },
    }
    for camera in cameras:
        features[f"observation.images.{camera}"] = {
            "dtype": "video" if use_videos else "image",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    return features


def make_dataset(
    root: str | Path,
    repo_id: str = "local/fastwam_test",
    episodes: int = 2,
    frames: int = 48,
    cameras: tuple[str, ...] = ("front", "wrist"),
    image_hw: tuple[int, int] = (64, 64),
    state_dim: int = 6,
    action_dim: int = 6,
    fps: int = 10,
    use_videos: bool = True,
    seed: int = 0,
    overwrite: bool = True,
):
    """Write the dataset under ``root`` (which must not exist, or is replaced when ``overwrite``).

    Episodes alternate between the two tasks of ``TASKS``. Returns the finalized ``LeRobotDataset``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: PLC0415  (slow import)

    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass overwrite=True or choose another root.")
        shutil.rmtree(root)
    pose_dim = max(state_dim, action_dim, 2)
    rng = np.random.default_rng(seed)
    dataset = LeRobotDataset.create(
        repo_id=repo_id,
        fps=fps,
        features=dataset_features(tuple(cameras), tuple(image_hw), state_dim, action_dim, use_videos),
        root=root,
        robot_type="synthetic_square",
        use_videos=use_videos,
    )
    palette = np.array([[0.9, 0.15, 0.1], [0.1, 0.75, 0.2], [0.15, 0.3, 0.95], [0.95, 0.8, 0.1]])
    for episode in range(episodes):
        task_id = episode % len(TASKS)
        direction = 1 if task_id == 0 else -1
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        hue = palette[episode % len(palette)]
        pose = _trajectory(frames, fps, direction, phase, pose_dim)
        for t in range(frames):
            frame = {
                "observation.state": pose[t, :state_dim].copy(),
                "action": pose[t + 1, :action_dim].copy(),  # the next pose: reachable from the current one
                "task": TASKS[task_id],
            }
            for index, camera in enumerate(cameras):
                frame[f"observation.images.{camera}"] = _render(camera, index, pose[t], *image_hw, hue)
            dataset.add_frame(frame)
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--repo-id", default="local/fastwam_demo")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--cameras", nargs="+", default=["front", "wrist"])
    parser.add_argument("--image-hw", type=int, nargs=2, default=[64, 64])
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = make_dataset(
        args.root,
        args.repo_id,
        args.episodes,
        args.frames,
        tuple(args.cameras),
        tuple(args.image_hw),
        fps=args.fps,
        seed=args.seed,
    )
    print(f"Wrote {dataset.meta.total_episodes} episodes, {dataset.meta.total_frames} frames to {args.root}")


if __name__ == "__main__":
    main()
