"""A simulated arm to rehearse deployment: the demo's Meta-World env behind LeRobot's ``Robot`` interface.

``--robot.type=metaworld_arm --robot.task=button-press-topdown-v3`` gives ``lerobot-rollout``, LeRobot's async
``RobotClient`` and ``lerobot-fastwam serve`` an arm with the observations and actions ``lerobot-fastwam demo``
records (one ``corner2`` camera at ``observation_size``, hand xyz + gripper state, xyz + gripper deltas in
[-1, 1]), so a demo checkpoint runs on it through exactly the code that drives a real arm:

    lerobot-rollout --strategy.type=base --robot.type=metaworld_arm --robot.task=button-press-topdown-v3 \\
        --policy.path=outputs/demo/train/checkpoints/last/pretrained_model --task="Press a button from the top" \\
        --rename_map='{"observation.images.corner2": "observation.image"}' --fps=30 --duration=120

Each ``send_action`` steps the simulation once, so the arm moves at the rate the control loop sends actions.
An episode ends at Meta-World's success signal or after ``episode_length`` steps; the arm then resets itself
to the next seed (episode ``i`` uses ``seed + i``, as ``lerobot-eval --seed`` does) and the control loop never
knows, as with a real arm whose scene a person resets: the rest of the chunk in flight is executed in the new
episode. Every finished episode is logged and, with ``results_file``, appended to a JSON-lines file
(``episode``, ``success``, ``steps``: actions received, ``seconds``), which
``benchmarks/bench_sim_arm.py`` turns into success rates and loop rates.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from lerobot.robots import Robot, RobotConfig

from .metaworld import make_env

logger = logging.getLogger(__name__)

# lerobot-rollout hands the policy only the features named *.pos or *.vel: the state is the hand's position and the
# gripper's opening, the action the hand's displacement and the gripper's closing command for one step. The names
# differ, so LeRobot's return-to-start motion (the initial *.pos values sent as an action) is refused, not executed.
STATE_NAMES = ("x.pos", "y.pos", "z.pos", "gripper.pos")
ACTION_NAMES = ("x.vel", "y.vel", "z.vel", "gripper.vel")
CAMERA = "corner2"  # Meta-World's camera the demo renders; its key is observation.images.corner2


@RobotConfig.register_subclass("metaworld_arm")
@dataclass
class MetaworldArmConfig(RobotConfig):
    task: str = "button-press-topdown-v3"
    observation_size: int = 128  # the camera's side in pixels (the demo records 128)
    episode_length: int = 500  # steps without success before the episode counts as a failure (Meta-World's)
    seed: int = 0  # episode i resets with seed + i
    results_file: str | None = None  # JSON-lines file each finished episode is appended to

    def __post_init__(self):
        super().__post_init__()
        if self.observation_size < 8:
            raise ValueError(f"--robot.observation_size must be at least 8 pixels, got {self.observation_size}.")
        if self.episode_length < 1:
            raise ValueError(f"--robot.episode_length must be at least 1 step, got {self.episode_length}.")


class MetaworldArm(Robot):
    """LeRobot builds it from ``MetaworldArmConfig`` (the config's class name without ``Config``)."""

    config_class = MetaworldArmConfig
    name = "metaworld_arm"

    def __init__(self, config: MetaworldArmConfig):
        super().__init__(config)
        self.config = config
        self.episodes: list[dict] = []  # one record per finished episode
        self._env = None
        self._obs: dict | None = None

    @cached_property
    def observation_features(self) -> dict:
        size = self.config.observation_size
        return {**dict.fromkeys(STATE_NAMES, float), CAMERA: (size, size, 3)}

    @cached_property
    def action_features(self) -> dict:
        return dict.fromkeys(ACTION_NAMES, float)

    @property
    def is_connected(self) -> bool:
        return self._env is not None

    def connect(self, calibrate: bool = True) -> None:
        if self._env is not None:
            raise RuntimeError("metaworld_arm is already connected.")
        self._env = make_env(
            self.config.task, observation_size=self.config.observation_size, episode_length=self.config.episode_length
        )
        self._start_episode()

    @property
    def is_calibrated(self) -> bool:
        return True  # a simulation needs no calibration

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    @property
    def successes(self) -> int:
        return sum(e["success"] for e in self.episodes)

    def get_observation(self) -> dict:
        if self._obs is None:
            raise RuntimeError("metaworld_arm is not connected: call connect() first.")
        state = self._obs["agent_pos"]
        return {**{n: float(v) for n, v in zip(STATE_NAMES, state, strict=True)}, CAMERA: self._obs["pixels"]}

    def send_action(self, action: dict) -> dict:
        if self._env is None:
            raise RuntimeError("metaworld_arm is not connected: call connect() first.")
        missing = [n for n in ACTION_NAMES if n not in action]
        if missing:
            raise KeyError(f"metaworld_arm needs the actions {list(ACTION_NAMES)}; {missing} missing from {action}.")
        values = np.asarray([float(action[n]) for n in ACTION_NAMES], dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"metaworld_arm refuses a non-finite action {values.tolist()}.")
        sent = np.clip(values, -1.0, 1.0)
        self._obs, _, terminated, truncated, info = self._env.step(sent)
        self._steps += 1
        success = bool(info.get("is_success"))
        if success or terminated or truncated or self._steps >= self.config.episode_length:
            self._finish_episode(success)
        return dict(zip(ACTION_NAMES, sent.tolist(), strict=True))

    def disconnect(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._obs = None
        if self.episodes:
            logger.info(
                "metaworld_arm: %d/%d episodes succeeded on %s.", self.successes, len(self.episodes), self.config.task
            )

    def _start_episode(self) -> None:
        self._obs, _ = self._env.reset(seed=self.config.seed + len(self.episodes))
        self._steps = 0
        self._started = time.perf_counter()

    def _finish_episode(self, success: bool) -> None:
        record = {
            "episode": len(self.episodes),
            "success": success,
            "steps": self._steps,
            "seconds": time.perf_counter() - self._started,
        }
        self.episodes.append(record)
        logger.info(
            "metaworld_arm: episode %d %s after %d steps (%d/%d succeeded).",
            record["episode"],
            "succeeded" if success else "failed",
            self._steps,
            self.successes,
            len(self.episodes),
        )
        if self.config.results_file:
            with open(self.config.results_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        self._start_episode()
