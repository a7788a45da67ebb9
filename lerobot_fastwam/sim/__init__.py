"""Simulators the plugin registers with LeRobot: ``--env.type=metaworld_cpu`` and its scripted-expert recorder.
Imports nothing from the rest of the package; ``lerobot_fastwam/__init__.py`` imports it to register the env."""
