"""Simulators the plugin registers with LeRobot: ``--env.type=metaworld_cpu`` with its scripted-expert recorder, and
``--robot.type=metaworld_arm``, the same env as a robot. Imports nothing from the rest of the package; Meta-World
itself is imported only when an env or arm is made. LeRobot finds a robot class by its config's module's package
(``lerobot_fastwam.sim``), hence the names here."""

from . import metaworld  # noqa: F401  (registers --env.type=metaworld_cpu)
from .metaworld_arm import MetaworldArm, MetaworldArmConfig

__all__ = ["MetaworldArm", "MetaworldArmConfig"]
