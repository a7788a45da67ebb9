"""Meta-World at a resolution a CPU can render: LeRobot's own ``MetaworldEnv``, rendered small and plain.

LeRobot's Meta-World env renders 480x480 frames with shadows and multisampling (0.2-0.4 s a frame in software
rendering) and hands them to the policy at that size. ``--env.type=metaworld_cpu`` is the same env class,
task strings, success signal and scripted experts, rendered directly at ``observation_size`` (128 by default,
about 30 ms a step) with shadows and multisampling off, so a policy can be trained and evaluated on a laptop
CPU. The pixels a policy sees at evaluation are exactly the ones ``lerobot-fastwam demo`` records.

    lerobot-eval --policy.path=DIR --env.type=metaworld_cpu --env.task=button-press-topdown-v3 \
        --eval.n_episodes=20 --eval.batch_size=1

``metaworld`` itself is an optional dependency: ``pip install "lerobot_policy_fastwam[metaworld]"``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig

ENV_TYPE = "metaworld_cpu"
EXPERTS = ("scripted", "around-wall")
if sys.platform.startswith("linux"):  # headless software or GPU rendering; set MUJOCO_GL yourself to choose
    os.environ.setdefault("MUJOCO_GL", "egl")


def _env_class():
    """LeRobot's Meta-World env with small plain rendering (imported late: metaworld is an optional extra)."""
    try:
        import metaworld  # noqa: F401, PLC0415
        from lerobot.envs.metaworld import MetaworldEnv  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            f"Meta-World is not installed ({exc}). Install the extra: "
            "pip install 'lerobot_policy_fastwam[metaworld]' (it pins mujoco 3.3.7; mujoco 4.x breaks "
            "metaworld 3.0.0 with `could not broadcast (11,) into (12,)`)."
        ) from exc

    class CPUMetaworldEnv(MetaworldEnv):
        """Renders at ``observation_size`` with shadows and multisampling off; keeps the last raw state so
        the scripted expert can act (``expert_action``)."""

        def __init__(self, task: str, observation_size: int = 128, episode_length: int = 500, **kwargs: Any):
            kwargs.setdefault("camera_name", "corner2")
            kwargs.setdefault("obs_type", "pixels_agent_pos")
            super().__init__(
                task,
                observation_width=observation_size,
                observation_height=observation_size,
                visualization_width=observation_size,
                visualization_height=observation_size,
                **kwargs,
            )
            self._raw_obs: np.ndarray | None = None
            self._max_episode_steps = episode_length  # LeRobot's eval reads it as the rollout limit

        def _ensure_env(self) -> None:
            if self._env is not None:
                return
            super()._ensure_env()
            env = self._env
            env.width, env.height = self.observation_width, self.observation_height
            env.mujoco_renderer.width, env.mujoco_renderer.height = env.width, env.height
            model = env.model
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, env.width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, env.height)
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
            model.light_castshadow[:] = 0
            env.mujoco_renderer.close()  # a context made at the old size would be reused

        def _format_raw_obs(self, raw_obs: np.ndarray):
            self._raw_obs = raw_obs
            return super()._format_raw_obs(raw_obs)

        def expert_action(self) -> np.ndarray:
            """The task's scripted expert (LeRobot's mapping) on the current state, clipped to [-1, 1]."""
            action = self.expert_policy.get_action(self._raw_obs)
            return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    return CPUMetaworldEnv


class AroundWallExpert:
    """A bimodal expert for ``reach-wall-v3``: it goes around the wall on the left or on the right, 50/50.

    Meta-World's own expert lifts the hand over the wall, so all its demonstrations agree. This one drops the
    hand below the wall's top in front of the wall's middle, then passes the wall on a side drawn per episode:
    from that point the two modes are mirror images (x velocity +1 or -1), and their average (no sideways motion,
    then forward into the wall) never succeeds. That makes it the test of whether a policy samples a mode or
    averages them. Like the scripted experts it is a function of the state, so it recovers from any position.
    """

    TASK = "reach-wall-v3"
    WALL_X = 0.1  # the wall's centre; it spans x in [-0.02, 0.22], y in [0.74, 0.76], z up to 0.12
    SIDE_OFFSET = 0.24  # the passing lanes: x = 0.1 -/+ 0.24, 2 cm clear of the wall's ends and the hand's width
    LOW_Z = 0.07  # below the wall's top: the hand cannot go over it
    START_Y, PAST_Y = 0.6, 0.86

    def __init__(self, side: int):
        if side not in (-1, 1):
            raise ValueError(f"side must be -1 (left) or 1 (right), got {side}")
        self.lane_x = self.WALL_X + side * self.SIDE_OFFSET

    def __call__(self, raw_obs: np.ndarray) -> np.ndarray:
        hand, goal = raw_obs[:3], raw_obs[-3:]
        if hand[1] >= 0.80:  # past the wall
            target = goal
        elif hand[1] >= 0.70 or abs(hand[0] - self.lane_x) <= 0.02:  # in the lane: straight past the wall
            target = np.array([self.lane_x, self.PAST_Y, self.LOW_Z])
        elif hand[2] > self.LOW_Z + 0.025 and abs(hand[0] - self.lane_x) > 0.05:  # first down, before the middle
            target = np.array([self.WALL_X, self.START_Y, self.LOW_Z])
        else:  # sideways to the lane
            target = np.array([self.lane_x, self.START_Y, self.LOW_Z])
        action = np.zeros(4, dtype=np.float32)  # gripper open, as Meta-World's reach experts
        action[:3] = np.clip(5.0 * (target - hand), -1.0, 1.0)  # Meta-World's ``move`` gain
        return action


def task_descriptions() -> dict[str, str]:
    """Meta-World task name -> the instruction LeRobot's env gives the policy (read without importing metaworld)."""
    import lerobot.envs  # noqa: PLC0415

    return json.loads((Path(lerobot.envs.__file__).parent / "metaworld_config.json").read_text())["TASK_DESCRIPTIONS"]


def make_env(task: str, observation_size: int = 128, **kwargs: Any):
    """One CPU-rendered Meta-World env (``task`` with or without the ``metaworld-`` prefix)."""
    return _env_class()(task, observation_size=observation_size, **kwargs)


@EnvConfig.register_subclass(ENV_TYPE)
@dataclass
class CPUMetaworldEnvConfig(MetaworldEnvConfig):
    """``--env.type=metaworld_cpu``: LeRobot's Meta-World env config, rendered at ``observation_size``."""

    observation_size: int = 128
    episode_length: int = 500  # Meta-World's own limit; LeRobot's env ignores its config field, this one uses it

    def __post_init__(self):
        super().__post_init__()
        for key, feature in self.features.items():
            if feature.type is FeatureType.VISUAL:
                self.features[key] = PolicyFeature(FeatureType.VISUAL, (self.observation_size,) * 2 + (3,))

    @property
    def gym_kwargs(self) -> dict:
        return {**super().gym_kwargs, "observation_size": self.observation_size, "episode_length": self.episode_length}

    def create_envs(self, n_envs: int, use_async_envs: bool = False):
        """``{task: {0: vector env}}`` as LeRobot's ``create_metaworld_envs``, one entry per task of ``task``
        (comma-separated names or LeRobot's difficulty groups)."""
        import gymnasium as gym  # noqa: PLC0415
        from lerobot.envs.metaworld import DIFFICULTY_TO_TASKS  # noqa: PLC0415

        if use_async_envs and n_envs > 1:
            raise ValueError("metaworld_cpu runs synchronous envs; use --eval.use_async_envs=false.")
        env_class = _env_class()
        out: dict[str, dict[int, Any]] = {}
        for group in (t.strip() for t in self.task.split(",") if t.strip()):
            for tid, name in enumerate(DIFFICULTY_TO_TASKS.get(group, [group])):
                factories = [lambda n=name: env_class(n, **self.gym_kwargs) for _ in range(n_envs)]
                out.setdefault(group, {})[tid] = gym.vector.SyncVectorEnv(factories)
        return out


def record_expert_dataset(
    tasks: list[str],
    root,
    repo_id: str,
    episodes_per_task: int,
    observation_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    progress_file=None,
    expert: str = "scripted",
):
    """Record the scripted expert of each task into a LeRobotDataset v3 at ``root`` and return it.

    Keys, shapes, fps and task strings are exactly what ``lerobot-eval --env.type=metaworld_cpu`` hands the
    policy: ``observation.image`` (``observation_size`` square, stored as video: with images stored in the
    table, LeRobot decodes the image of every row a sample reads, 51 per Fast-WAM sample, 33 ms against 17.5 ms
    measured), ``observation.state`` (hand xyz + gripper), ``action`` (4, clipped to [-1, 1]), 80 fps,
    the env's ``task_description``. Episode ``i`` of a task resets with seed ``seed + i``; an episode ends at
    the first success, and the rare expert failure (500 steps without success) is not kept.
    ``expert``: ``scripted`` (each task's Meta-World expert) or ``around-wall`` (``AroundWallExpert``, whose side
    episode ``i`` draws from seed ``seed + i``).
    """
    if expert not in EXPERTS:
        raise ValueError(f"unknown expert {expert!r}; choose from {EXPERTS}")
    if expert == "around-wall" and any(t.removeprefix("metaworld-") != AroundWallExpert.TASK for t in tasks):
        raise ValueError(f"the around-wall expert solves {AroundWallExpert.TASK} only, not {tasks}")
    from lerobot.datasets import LeRobotDataset  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    features = {
        "observation.image": {
            "dtype": "video",
            "shape": (observation_size, observation_size, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "gripper"]},
    }
    dataset = LeRobotDataset.create(
        repo_id=repo_id,
        fps=MetaworldEnvConfig.fps,
        root=root,
        features=features,
        use_videos=True,
        image_writer_threads=2,
    )
    failures: dict[str, int] = {}
    bar = tqdm(
        total=len(tasks) * episodes_per_task, desc="Recording expert episodes", disable=not progress, file=progress_file
    )
    for task in tasks:
        env = make_env(task, observation_size=observation_size)
        try:
            for episode in range(episodes_per_task):
                obs, _ = env.reset(seed=seed + episode)
                around = None
                if expert == "around-wall":
                    around = AroundWallExpert(side=int(np.random.default_rng(seed + episode).choice([-1, 1])))
                for _ in range(env._max_episode_steps):
                    action = around(env._raw_obs) if around else env.expert_action()
                    dataset.add_frame(
                        {
                            "observation.image": obs["pixels"],
                            "observation.state": obs["agent_pos"].astype(np.float32),
                            "action": action,
                            "task": env.task_description,
                        }
                    )
                    obs, _, terminated, truncated, info = env.step(action)
                    if terminated or truncated:
                        break
                if info.get("is_success"):
                    dataset.save_episode()
                else:
                    dataset.clear_episode_buffer()
                    failures[task] = failures.get(task, 0) + 1
                bar.update(1)
        finally:
            env.close()
    bar.close()
    dataset.finalize()
    dataset.expert_failures = failures
    return dataset
