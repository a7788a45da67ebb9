"""A test-only simulated arm for ``lerobot-rollout``: 6 joints, two 640x480 cameras, every sent action logged.

Imported before LeRobot's rollout script parses its arguments, so ``--robot.type=fastwam_sim_arm`` resolves;
LeRobot builds the robot from its config class name (``FastWAMSimArmConfig`` -> ``FastWAMSimArm``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from lerobot.robots import Robot, RobotConfig

JOINTS = [f"joint_{i}.pos" for i in range(6)]
CAMERAS = ("front", "wrist")


@RobotConfig.register_subclass("fastwam_sim_arm")
@dataclass
class FastWAMSimArmConfig(RobotConfig):
    action_log: str = "actions.jsonl"  # one JSON list of joint targets per sent action
    height: int = 480
    width: int = 640


class FastWAMSimArm(Robot):
    config_class = FastWAMSimArmConfig
    name = "fastwam_sim_arm"

    def __init__(self, config: FastWAMSimArmConfig):
        super().__init__(config)
        self.config = config
        self._connected = False
        self._joints = np.zeros(len(JOINTS), dtype=np.float32)
        self._rng = np.random.default_rng(0)

    @cached_property
    def observation_features(self) -> dict:
        return {**{j: float for j in JOINTS}, **{c: (self.config.height, self.config.width, 3) for c in CAMERAS}}

    @cached_property
    def action_features(self) -> dict:
        return {j: float for j in JOINTS}

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
        frames = {
            c: self._rng.integers(0, 256, (self.config.height, self.config.width, 3), dtype=np.uint8) for c in CAMERAS
        }
        return {**dict(zip(JOINTS, self._joints.tolist(), strict=True)), **frames}

    def send_action(self, action: dict) -> dict:
        values = [float(action[j]) for j in JOINTS]
        self._joints = np.asarray(values, dtype=np.float32)
        with open(self.config.action_log, "a") as f:
            f.write(json.dumps(values) + "\n")
        return action

    def disconnect(self) -> None:
        self._connected = False
