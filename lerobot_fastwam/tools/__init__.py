"""The ``lerobot-fastwam`` command and what it runs: demo, cache, convert, serve, memory planner, policy probes.
May import everything in the package; nothing in the package imports it."""
