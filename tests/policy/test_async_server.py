"""`lerobot-fastwam serve`: LeRobot's own async inference server (gRPC, in a subprocess on loopback) serves a tiny
Fast-WAM checkpoint to LeRobot's own client side: first the gRPC calls ``RobotClient`` makes, message by message,
then ``RobotClient`` itself driving the test's simulated arm (``tests/sim``). About 15-25 s on 2 CPU cores,
most of it the server's imports."""

from __future__ import annotations

import pickle  # nosec: the protocol LeRobot's client and server speak
import sys
import threading
import time

import pytest
import torch

grpc = pytest.importorskip("grpc", reason='needs gRPC: pip install "lerobot_policy_fastwam[async]"')

from lerobot.async_inference.helpers import (  # noqa: E402
    RemotePolicyConfig,
    TimedObservation,
    map_robot_keys_to_lerobot_features,
)
from lerobot.transport import services_pb2, services_pb2_grpc  # noqa: E402
from lerobot.transport.utils import grpc_channel_options, send_bytes_in_chunks  # noqa: E402

from ..sim.fastwam_sim_arm import FastWAMSimArm, FastWAMSimArmConfig  # noqa: E402
from .serving import running_server, save_checkpoint  # noqa: E402

ACTION_DIM = STATE_DIM = 3  # the sim arm's joints are its state and its action
CHUNK = 5
CAMERA_HW = (48, 80)  # the robot's camera; the server resizes it to the policy's (32, 64)
STARTUP_TIMEOUT_S = 90


def _sim_arm(tmp_path) -> FastWAMSimArm:
    """One camera named as the policy's (``cam0``), at another size than its tile: the server resizes it."""
    config = FastWAMSimArmConfig(joints=STATE_DIM, camera_names=["cam0"], height=CAMERA_HW[0], width=CAMERA_HW[1])
    config.calibration_dir = tmp_path
    return FastWAMSimArm(config)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("fastwam_tiny"), ACTION_DIM, STATE_DIM, bound=1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``lerobot-fastwam serve`` on a free loopback port; it must stop cleanly on SIGTERM."""
    with running_server(tmp_path_factory.mktemp("server")) as (address, log):
        yield address
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "lerobot-fastwam serve: stopped." in output, output


def test_the_server_answers_the_robot_clients_calls_with_a_fastwam_chunk(server, checkpoint, tmp_path):
    """The calls of ``RobotClient.start``, ``send_observation`` and ``receive_actions``, with their messages."""
    robot = _sim_arm(tmp_path)
    with grpc.insecure_channel(server, grpc_channel_options(initial_backoff=f"{1 / 30:.4f}s")) as channel:
        stub = services_pb2_grpc.AsyncInferenceStub(channel)
        stub.Ready(services_pb2.Empty())
        features = map_robot_keys_to_lerobot_features(robot)
        spec = RemotePolicyConfig("fastwam", str(checkpoint), features, CHUNK, "cpu")
        stub.SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(spec)))

        raw = robot.get_observation()
        raw["task"] = "pick up the cube"
        obs = TimedObservation(timestamp=time.time(), observation=raw, timestep=7, must_go=True)
        chunks = send_bytes_in_chunks(pickle.dumps(obs), services_pb2.Observation, log_prefix="[TEST]", silent=True)
        stub.SendObservations(chunks)
        reply = stub.GetActions(services_pb2.Empty())

    assert len(reply.data) > 0, "the server answered Empty (no chunk): see its output"
    timed_actions = pickle.loads(reply.data)  # nosec
    assert [a.get_timestep() for a in timed_actions] == list(range(7, 7 + CHUNK))
    actions = torch.stack([a.get_action() for a in timed_actions])
    assert actions.shape == (CHUNK, ACTION_DIM)
    assert torch.isfinite(actions).all()


def test_lerobots_robot_client_runs_a_fastwam_policy_through_the_server(
    server, checkpoint, monkeypatch, tmp_path, isolated_lerobot_logging
):
    """LeRobot's ``RobotClient``, unmodified, against the server: actions reach the robot."""
    monkeypatch.chdir(tmp_path)  # the client's log file goes to logs/ in the working directory
    from lerobot.async_inference import robot_client
    from lerobot.async_inference.configs import RobotClientConfig

    robot = _sim_arm(tmp_path)
    monkeypatch.setattr(robot_client, "make_robot_from_config", lambda config: robot)
    config = RobotClientConfig(
        policy_type="fastwam",
        pretrained_name_or_path=str(checkpoint),
        robot=robot.config,
        actions_per_chunk=CHUNK,
        task="pick up the cube",
        server_address=server,
    )
    client = robot_client.RobotClient(config)
    assert client.start()
    receiver = threading.Thread(target=client.receive_actions, daemon=True)
    control = threading.Thread(target=client.control_loop, kwargs={"task": config.task}, daemon=True)
    receiver.start()
    control.start()
    deadline = time.monotonic() + 30
    while len(robot.sent) < CHUNK and time.monotonic() < deadline and control.is_alive():
        time.sleep(0.05)
    client.stop()
    control.join(timeout=10)
    receiver.join(timeout=10)

    assert not control.is_alive() and not receiver.is_alive()
    assert client.action_chunk_size == CHUNK
    assert len(robot.sent) >= CHUNK, f"the robot got {len(robot.sent)} actions"
    actions = torch.tensor([[a[key] for key in robot.action_features] for a in robot.sent])
    assert actions.shape[1] == ACTION_DIM and torch.isfinite(actions).all()


def test_serve_without_grpc_names_the_extra_to_install(monkeypatch):
    import lerobot.async_inference

    from lerobot_fastwam.tools.cli import main

    monkeypatch.setitem(sys.modules, "grpc", None)  # what an environment without gRPC gives the server module
    monkeypatch.delitem(sys.modules, "lerobot.async_inference.policy_server", raising=False)
    monkeypatch.delattr(lerobot.async_inference, "policy_server", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port=1"])
    message = str(exit_info.value.code)
    assert message.startswith("lerobot-fastwam serve: error: gRPC is not installed")
    assert message.endswith('pip install "lerobot_policy_fastwam[async]"')
