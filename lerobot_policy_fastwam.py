"""Entry module imported by LeRobot's plugin discovery (it imports modules named like `lerobot_policy_*`)."""

import lerobot_fastwam  # noqa: F401
