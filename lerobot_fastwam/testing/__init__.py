"""Offline stand-ins shared by the tests, benchmarks and examples (no Hub access needed):

- ``synthetic_dataset``: writes a small LeRobotDataset v3 (moving-pose videos, states, actions, tasks).
- ``builtin_offline``: LeRobot's built-in ``lerobot.policies.fastwam`` built with small random frozen encoders,
  the independent implementation the plugin is checked against.
"""
