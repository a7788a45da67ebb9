"""``lerobot-fastwam serve``: LeRobot's async inference policy server (gRPC), accepting ``fastwam``."""

from __future__ import annotations

import logging
import math
import pickle  # nosec: the protocol LeRobot's client and server speak
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.camera_layout import fit_camera

ASYNC_INSTALL_HINT = 'pip install "lerobot_policy_fastwam[async]"'
CAMERA_PREFIX = "observation.images."
GRPC_WORKERS = 4  # as LeRobot's own ``policy_server.serve``


def serve(argv: list[str]) -> None:
    """LeRobot's async inference policy server (gRPC) with the plugin loaded, so that LeRobot's unmodified robot
    client (``python -m lerobot.async_inference.robot_client --policy_type=fastwam ...``) can use a Fast-WAM
    checkpoint. ``argv`` are LeRobot's own ``PolicyServerConfig`` options (``--host``, ``--port``, ``--fps``,
    ``--inference_latency``, ``--obs_queue_timeout``), checked up front, plus ``--rename_map``; it runs until
    Ctrl-C or SIGTERM.

    What differs from ``python -m lerobot.async_inference.policy_server``: this package is imported (so
    ``fastwam`` and its checkpoints resolve to the plugin: ``plugin.py``); ``"fastwam"`` is appended to
    ``lerobot.async_inference.constants.SUPPORTED_POLICIES``, the hard-coded list the server checks the client's
    policy type against (``policy_server`` imports it by name, so appending in this process is enough); and the
    servicer is LeRobot's ``PolicyServer`` with the Fast-WAM changes of ``_fastwam_policy_server`` (other
    policy types run as in LeRobot).
    """
    import signal
    import threading

    try:
        from lerobot.async_inference import policy_server
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("grpc", "google"):
            raise
        sys.exit(f"lerobot-fastwam serve: error: gRPC is not installed ({err}). Install it with: {ASYNC_INSTALL_HINT}")
    from concurrent import futures

    import draccus
    import grpc
    from draccus.utils import DecodingError, ParsingError
    from lerobot.transport import services_pb2_grpc

    if "fastwam" not in policy_server.SUPPORTED_POLICIES:
        policy_server.SUPPORTED_POLICIES.append("fastwam")
    try:
        config = draccus.parse(_serve_config_class(), args=argv, prog="lerobot-fastwam serve")
    except ParsingError as err:  # draccus reports a refused value as "Couldn't instantiate class": say which
        reason = err if isinstance(err, DecodingError) or err.__cause__ is None else err.__cause__
        sys.exit(f"lerobot-fastwam serve: error: {reason}")
    servicer = _fastwam_policy_server(policy_server.PolicyServer)(config)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS))
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(servicer, server)
    address = f"{config.host}:{config.port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as err:  # gRPC's "Failed to bind": the port is taken, or the host is not this machine's
        sys.exit(
            f"lerobot-fastwam serve: error: cannot listen on {address} ({err}). Another process may hold the port "
            "(pick another --port), or --host is not an address of this machine (0.0.0.0 listens on all)."
        )
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM (kill, docker stop) stops the server as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        logging.info("lerobot-fastwam serve: PolicyServer listening on %s.", address)
        server.wait_for_termination()
    except KeyboardInterrupt:
        logging.info("lerobot-fastwam serve: stopped.")
    finally:
        server.stop(grace=None)
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def check_server_options(config) -> None:
    """Refuse option values LeRobot's server would fail on obscurely (draccus' "Couldn't instantiate class", a
    ZeroDivisionError for ``--fps=0``, a hang for a NaN ``--obs_queue_timeout``), naming each option and its range."""
    problems = []
    if not 1 <= config.port <= 65535:
        problems.append(f"--port must be between 1 and 65535, got {config.port} (e.g. --port=8080)")
    if config.fps <= 0:
        problems.append(f"--fps must be a positive rate (the robot's control frequency in Hz), got {config.fps}")
    for name in ("inference_latency", "obs_queue_timeout"):
        value = getattr(config, name)
        if not math.isfinite(value) or value < 0:
            problems.append(f"--{name} must be a finite number of seconds >= 0, got {value}")
    if problems:
        raise ValueError("; ".join(problems) + ".")


def check_robot_cameras(config, lerobot_features: dict[str, dict], rename_map: dict[str, str]) -> None:
    """Check, when the robot connects, that its cameras (``lerobot_features``, as the client announces them) give
    every camera the checkpoint (``config``) expects once renamed, at sizes its camera fitting accepts: a fit of a
    blank frame of each announced size, so a bad size is refused here rather than on every observation."""
    robot_sizes = {key: ft["shape"][:2] for key, ft in lerobot_features.items() if key.startswith(CAMERA_PREFIX)}
    robot_key = {rename_map.get(key, key): key for key in robot_sizes}
    expected = config.ordered_camera_keys
    missing = [key for key in expected if key not in robot_key]
    if missing:
        renamed = f" (after --rename_map: {sorted(robot_key)})" if rename_map else ""
        example = f'{{"{CAMERA_PREFIX}<robot camera>": "{missing[0]}"}}'
        raise ValueError(
            f"The checkpoint expects cameras {expected}, the robot sends {sorted(robot_sizes)}{renamed}: "
            f"{missing} missing. Name the robot's cameras as the checkpoint's (the keys of the client's "
            f"--robot.cameras), or map them on the server: lerobot-fastwam serve --rename_map='{example}' "
            "(LeRobot's robot_client has no --rename_map option)."
        )
    for key, (height, width) in config.camera_tile_sizes.items():
        frame_h, frame_w = robot_sizes[robot_key[key]]
        blank = torch.zeros(1, 3, 1, 1).expand(1, 3, frame_h, frame_w)
        fit_camera(blank, key, height, width, config.camera_fit, *config.camera_crop(key))


def check_frames_as_announced(raw_observation: dict[str, Any], lerobot_features: dict[str, dict]) -> None:
    """Each camera frame must have the size the robot announced when it connected: the server sizes frames to
    that announcement before the camera fitting, so another size would be stretched."""
    for key, ft in lerobot_features.items():
        if not key.startswith(CAMERA_PREFIX):
            continue
        frame = raw_observation.get(key.removeprefix(CAMERA_PREFIX))
        size, announced = None if frame is None else tuple(frame.shape[:2]), tuple(ft["shape"][:2])
        if size != announced:
            sent = "no frame" if size is None else f"a {size[0]}x{size[1]} frame"
            raise ValueError(
                f"Camera `{key}` sent {sent}, but the robot announced {announced[0]}x{announced[1]} frames when it "
                "connected. Restart the robot client after changing a camera's resolution."
            )


def _serve_config_class() -> type:
    """``PolicyServerConfig`` (defined here, on first use: its module needs gRPC, an optional extra) with its
    options checked by ``check_server_options`` first and a server-side ``--rename_map``."""
    from lerobot.async_inference.configs import PolicyServerConfig

    @dataclass
    class ServeConfig(PolicyServerConfig):
        # Robot camera key -> checkpoint camera key, for fastwam policies (LeRobot's robot client sends no rename map)
        rename_map: dict[str, str] = field(default_factory=dict)

        def __post_init__(self):
            check_server_options(self)
            super().__post_init__()

    return ServeConfig


def _fastwam_policy_server(base: type) -> type:
    """LeRobot's ``PolicyServer`` (``base``, passed in: its module needs gRPC) fitting Fast-WAM's cameras as the
    local pipeline does. LeRobot's server resizes every frame to the policy's image feature shape before the
    pre-processor (``helpers.prepare_raw_observation``), which stretches a camera of another aspect ratio; for
    ``fastwam`` the shape it is given is the robot's own, so frames reach the pre-processor's camera fitting
    (crop or pad, ``camera_layout.fit_camera``) unresized. Also for ``fastwam``: ``--rename_map`` applies, and
    cameras are checked when the robot connects, refused with a message the client receives (LeRobot's server
    would answer every observation with an empty chunk and log a bare ``KeyError``)."""
    import grpc
    from lerobot.async_inference.helpers import RemotePolicyConfig
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.transport import services_pb2

    class FastWAMPolicyServer(base):
        @property
        def policy_image_features(self):
            if self.policy_type != "fastwam":
                return super().policy_image_features
            return {
                key: PolicyFeature(FeatureType.VISUAL, (ft["shape"][2], *ft["shape"][:2]))
                for key, ft in self.lerobot_features.items()
                if key.startswith(CAMERA_PREFIX)
            }

        def SendPolicyInstructions(self, request, context):  # noqa: N802
            spec = pickle.loads(request.data)  # nosec
            if not isinstance(spec, RemotePolicyConfig) or spec.policy_type != "fastwam":
                return super().SendPolicyInstructions(request, context)
            spec.rename_map = {**self.config.rename_map, **spec.rename_map}  # the client's own entries win
            reply = super().SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(spec)), context)
            if self.running:
                try:
                    check_robot_cameras(self.policy.config, spec.lerobot_features, spec.rename_map)
                except ValueError as err:
                    self.logger.error(f"Refused the robot: {err}")
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return reply

        def _predict_action_chunk(self, observation_t):
            if self.policy_type == "fastwam":
                check_frames_as_announced(observation_t.get_observation(), self.lerobot_features)
            return super()._predict_action_chunk(observation_t)

    return FastWAMPolicyServer
