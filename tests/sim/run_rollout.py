"""LeRobot's own ``lerobot-rollout`` with the simulated arm registered: ``python tests/sim/run_rollout.py <its
arguments>``. Used by ``tests/policy/test_rollout.py`` and ``benchmarks/bench_rollout.py``."""

import sys

import fastwam_sim_arm  # noqa: F401  (registers --robot.type=fastwam_sim_arm; this folder is sys.path[0])
from lerobot.scripts.lerobot_rollout import rollout

import lerobot_fastwam  # noqa: F401  (the plugin, as LeRobot's plugin discovery would import it)

if __name__ == "__main__":
    sys.argv = ["lerobot-rollout", *sys.argv[1:]]
    rollout()
