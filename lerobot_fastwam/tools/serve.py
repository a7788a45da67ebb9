"""``lerobot-fastwam serve``: LeRobot's own async inference policy server (gRPC), accepting ``fastwam``."""

from __future__ import annotations

import logging
import sys

ASYNC_INSTALL_HINT = 'pip install "lerobot_policy_fastwam[async]"'


def serve(argv: list[str]) -> None:
    """LeRobot's async inference policy server (gRPC) with the plugin loaded, so that LeRobot's unmodified robot
    client (``python -m lerobot.async_inference.robot_client --policy_type=fastwam ...``) can use a Fast-WAM
    checkpoint. ``argv`` are LeRobot's own ``PolicyServerConfig`` options (``--host``, ``--port``, ``--fps``,
    ``--inference_latency``, ``--obs_queue_timeout``); LeRobot's ``serve`` runs until Ctrl-C or SIGTERM.

    Two things differ from ``python -m lerobot.async_inference.policy_server``: this package is imported (so
    ``fastwam`` and its checkpoints resolve to the plugin: ``plugin.py``), and ``"fastwam"`` is appended to
    ``lerobot.async_inference.constants.SUPPORTED_POLICIES``, the hard-coded list the server checks the client's
    policy type against. ``policy_server`` imports that list by name, so both modules hold the same list object
    and appending to it (in this process only) is the whole change; the server's code runs unmodified.
    """
    import signal
    import threading

    try:
        from lerobot.async_inference import policy_server
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("grpc", "google"):
            raise
        sys.exit(f"lerobot-fastwam serve: error: gRPC is not installed ({err}). Install it with: {ASYNC_INSTALL_HINT}")
    import draccus
    from lerobot.async_inference.configs import PolicyServerConfig

    if "fastwam" not in policy_server.SUPPORTED_POLICIES:
        policy_server.SUPPORTED_POLICIES.append("fastwam")
    config = draccus.parse(PolicyServerConfig, args=argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM (kill, docker stop) stops the server as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        policy_server.serve(config)  # LeRobot's entry point: given a config, it parses nothing itself
    except KeyboardInterrupt:
        logging.info("lerobot-fastwam serve: stopped.")
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
