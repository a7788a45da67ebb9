"""A test-only simulated arm for LeRobot's robot-facing scripts (``lerobot-rollout``, the async ``RobotClient``):
``joints`` joint positions, ``camera_names`` random uint8 cameras, every sent action kept (``sent``) and, with
``action_log``, appended to a JSON-lines file as ``{"t": unix time, "action": [...]}`` (for runs in a subprocess;
``benchmarks/bench_rollout.py`` measures loop rates from the times).

Importing it registers ``--robot.type=fastwam_sim_arm``; LeRobot builds the robot from its config class name
(``FastWAMSimArmConfig`` -> ``FastWAMSimArm``, in the same module).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from lerobot.robots import Robot, RobotConfig


@RobotConfig.register_subclass("fastwam_sim_arm")
@dataclass
class FastWAMSimArmConfig(RobotConfig):
    joints: int = 6
    camera_names: list[str] = field(default_factory=lambda: ["front", "wrist"])  # ("cameras" is LeRobot's)
    height: int = 480
    width: int = 640
    action_log: str | None = None


class FastWAMSimArm(Robot):
    config_class = FastWAMSimArmConfig
    name = "fastwam_sim_arm"

    def __init__(self, config: FastWAMSimArmConfig):
        super().__init__(config)
        self.config = config
        self.joint_names = [f"joint_{i}.pos" for i in range(config.joints)]
        self.sent: list[dict[str, float]] = []
        self._connected = False
        self._positions = np.zeros(config.joints, dtype=np.float32)
        self._rng = np.random.default_rng(0)

    @cached_property
    def observation_features(self) -> dict:
        cameras = {c: (self.config.height, self.config.width, 3) for c in self.config.camera_names}
        return {**{j: float for j in self.joint_names}, **cameras}

    @cached_property
    def action_features(self) -> dict:
        return {j: float for j in self.joint_names}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        shape = (self.config.height, self.config.width, 3)
        frames = {c: self._rng.integers(0, 256, shape, dtype=np.uint8) for c in self.config.camera_names}
        return {**dict(zip(self.joint_names, self._positions.tolist(), strict=True)), **frames}

    def send_action(self, action: dict) -> dict:
        self._positions = np.asarray([float(action[j]) for j in self.joint_names], dtype=np.float32)
        self.sent.append(dict(action))
        if self.config.action_log:
            with open(self.config.action_log, "a") as f:
                f.write(json.dumps({"t": time.time(), "action": self._positions.tolist()}) + "\n")
        return action

    def disconnect(self) -> None:
        self._connected = False
