"""What ``lerobot-fastwam serve`` and the camera fitting do with bad or unusual input: a camera of another aspect
ratio is fitted as in the local pipeline (not stretched), other camera names and absurd camera sizes are refused
when the robot connects with a message the client receives, invalid options are refused up front. The server
runs in a subprocess on loopback and is driven with the gRPC calls LeRobot's ``RobotClient`` makes (about
20-30 s on 2 CPU cores, most of it the server's imports)."""

from __future__ import annotations

import pickle  # nosec: the protocol LeRobot's client and server speak
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

grpc = pytest.importorskip("grpc", reason='needs gRPC: pip install "lerobot_policy_fastwam[async]"')

from lerobot.async_inference.helpers import (  # noqa: E402
    RemotePolicyConfig,
    TimedObservation,
    resize_robot_observation_image,
)
from lerobot.policies import make_pre_post_processors  # noqa: E402
from lerobot.transport import services_pb2, services_pb2_grpc  # noqa: E402
from lerobot.transport.utils import send_bytes_in_chunks  # noqa: E402
from lerobot.utils.feature_utils import hw_to_dataset_features  # noqa: E402

from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors  # noqa: E402
from lerobot_fastwam.tools.cli import main  # noqa: E402

from ..helpers import make_config, make_policy  # noqa: E402
from .serving import running_server, save_checkpoint  # noqa: E402

JOINTS = 3  # the robot's joints are its state and its action
CHUNK = 5
CAM = "observation.images.cam0"  # the checkpoint's camera; its tile is 32x64
SERVER_RENAME_MAP = '{"observation.images.front": "observation.images.cam0"}'
STARTUP_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint whose action range is wide: no chunk is clamped, so chunks compare value by value."""
    return save_checkpoint(tmp_path_factory.mktemp("fastwam_tiny"), JOINTS, JOINTS, bound=100.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``lerobot-fastwam serve --rename_map=...`` on a free loopback port: (address, its log file)."""
    with running_server(tmp_path_factory.mktemp("server"), f"--rename_map={SERVER_RENAME_MAP}") as running:
        yield running


def _features(cameras: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """The features ``RobotClient`` announces for a robot with these cameras (name -> height, width)."""
    hardware = {f"joint_{i}.pos": float for i in range(JOINTS)}
    hardware.update({name: (height, width, 3) for name, (height, width) in cameras.items()})
    return hw_to_dataset_features(hardware, "observation", use_video=False)


def _connect(address: str, checkpoint, cameras: dict[str, tuple[int, int]]):
    """``RobotClient.start``: a channel and stub whose policy instructions the server has taken."""
    channel = grpc.insecure_channel(address)
    stub = services_pb2_grpc.AsyncInferenceStub(channel)
    stub.Ready(services_pb2.Empty())
    spec = RemotePolicyConfig("fastwam", str(checkpoint), _features(cameras), CHUNK, "cpu")
    try:
        stub.SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(spec)))
    except grpc.RpcError:
        channel.close()
        raise
    return channel, stub


def _raw_observation(frames: dict[str, np.ndarray]) -> dict:
    state = {f"joint_{i}.pos": 0.1 * i for i in range(JOINTS)}
    return {**state, **frames, "task": "pick up the cube"}


def _get_chunk(stub, raw: dict) -> torch.Tensor | None:
    """``send_observation`` then ``receive_actions``: the chunk, or None for the server's empty reply."""
    obs = TimedObservation(timestamp=time.time(), observation=raw, timestep=0, must_go=True)
    stub.SendObservations(send_bytes_in_chunks(pickle.dumps(obs), services_pb2.Observation, silent=True))
    reply = stub.GetActions(services_pb2.Empty())
    if not reply.data:
        return None
    return torch.stack([a.get_action() for a in pickle.loads(reply.data)])  # nosec


def _local_chunk(checkpoint, image: torch.Tensor, raw: dict) -> torch.Tensor:
    """The chunk of the local pipeline (lerobot-rollout): the checkpoint's processors around
    ``predict_action_chunk``, given the camera as ``[1, 3, H, W]`` in [0, 1]."""
    policy = FastWAMPolicy.from_pretrained(checkpoint)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    state = torch.tensor([[raw[f"joint_{i}.pos"] for i in range(JOINTS)]], dtype=torch.float32)
    batch = pre({CAM: image, "observation.state": state, "task": raw["task"]})
    with torch.no_grad():
        return post(policy.predict_action_chunk(batch))[0, :CHUNK]


def test_serve_fits_a_camera_of_another_aspect_ratio_as_the_local_pipeline_does(server, checkpoint):
    """A square camera for a 32x64 tile: the chunk is the local pipeline's (centre crop), not that of the frame
    LeRobot's server would stretch to the checkpoint's feature shape."""
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    raw = _raw_observation({"cam0": frame})
    channel, stub = _connect(server[0], checkpoint, {"cam0": (64, 64)})
    with channel:
        served = _get_chunk(stub, raw)
    assert served is not None, "the server answered Empty (no chunk): see its output"

    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    stretched = resize_robot_observation_image(torch.from_numpy(frame), (3, 32, 64))[None].float() / 255
    local, local_stretched = _local_chunk(checkpoint, image, raw), _local_chunk(checkpoint, stretched, raw)
    assert (local - local_stretched).abs().max() > 1e-4, "the camera's pixels must change the chunk"
    torch.testing.assert_close(served, local, atol=1e-5, rtol=1e-5)


def test_serve_maps_the_robots_camera_with_its_rename_map(server, checkpoint):
    """``--rename_map`` on the server: LeRobot's robot client has no rename map of its own."""
    frame = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    channel, stub = _connect(server[0], checkpoint, {"front": (48, 80)})
    with channel:
        chunk = _get_chunk(stub, _raw_observation({"front": frame}))
    assert chunk is not None and chunk.shape == (CHUNK, JOINTS) and torch.isfinite(chunk).all()


def test_serve_refuses_a_robot_whose_cameras_are_not_the_checkpoints(server, checkpoint):
    with pytest.raises(grpc.RpcError) as refused:
        _connect(server[0], checkpoint, {"side": (48, 80)})
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details()
    assert "expects cameras ['observation.images.cam0'], the robot sends ['observation.images.side']" in message
    assert "--robot.cameras" in message and "lerobot-fastwam serve --rename_map=" in message


@pytest.mark.parametrize(
    ("size", "problem"), [((0, 0), "is empty"), ((1, 1), "is too small"), ((8, 4000), "has an aspect ratio")]
)
def test_serve_refuses_a_camera_size_no_fit_makes_sense_of(server, checkpoint, size, problem):
    with pytest.raises(grpc.RpcError) as refused:
        _connect(server[0], checkpoint, {"cam0": size})
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details()
    assert f"A {size[0]}x{size[1]} frame of camera `{CAM}` {problem}" in message
    assert "32x64 tile" in message and "camera config" in message


def test_serve_refuses_a_frame_of_another_size_than_the_robot_announced(server, checkpoint):
    """LeRobot's server would stretch it to the announced size; the robot gets no chunk and the log says why."""
    channel, stub = _connect(server[0], checkpoint, {"cam0": (48, 80)})
    with channel:
        chunk = _get_chunk(stub, _raw_observation({"cam0": np.zeros((1, 1, 3), dtype=np.uint8)}))
    assert chunk is None
    assert "sent a 1x1 frame, but the robot announced 48x80 frames" in server[1].read_text()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--port=70000", "--port must be between 1 and 65535, got 70000"),
        ("--port=0", "--port must be between 1 and 65535, got 0"),
        ("--fps=0", "--fps must be a positive rate"),
        ("--fps=-30", "--fps must be a positive rate"),
        ("--inference_latency=-1", "--inference_latency must be a finite number of seconds >= 0, got -1.0"),
        ("--obs_queue_timeout=nan", "--obs_queue_timeout must be a finite number of seconds >= 0, got nan"),
        ("--obs_queue_timeout=inf", "--obs_queue_timeout must be a finite number of seconds >= 0, got inf"),
        ("--port=abc", "`port`: Couldn't parse 'abc' into an int"),
    ],
)
def test_serve_refuses_invalid_options_up_front(isolated_lerobot_logging, monkeypatch, option, message):
    def accepted(*args, **kwargs):
        raise AssertionError(f"{option} was accepted: the server was about to start")

    monkeypatch.setattr(grpc, "server", accepted)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", option])
    assert str(exit_info.value.code).startswith(f"lerobot-fastwam serve: error: {message}")


def test_serve_on_a_port_in_use_names_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "lerobot_fastwam.tools.cli", "serve", "--host=127.0.0.1", f"--port={port}"]
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert result.returncode == 1
    assert f"lerobot-fastwam serve: error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "pick another --port" in result.stderr


def _fit_in_preprocessor(frame: torch.Tensor) -> torch.Tensor:
    config = make_config(action_dim=JOINTS, state_dim=JOINTS)
    pre, _ = make_fastwam_pre_post_processors(config)
    return pre({CAM: frame, "observation.state": torch.zeros(1, JOINTS), "task": "x"})[CAM]


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ((0, 0), "is empty"),
        ((1, 1), "is too small"),
        ((3, 6), "is too small"),
        ((1, 4000), "is too small"),
        ((4000, 8), "has an aspect ratio 1000.0x off the tile's"),
        ((480, 8), "has an aspect ratio 120.0x off the tile's"),
    ],
)
def test_camera_fitting_refuses_empty_tiny_and_absurdly_shaped_frames(size, problem):
    with pytest.raises(ValueError) as refused:
        _fit_in_preprocessor(torch.rand(1, 3, *size))
    message = str(refused.value)
    assert f"A {size[0]}x{size[1]} frame of camera `{CAM}` {problem}" in message
    assert "32x64 tile" in message and "--policy.camera_crops" in message


def test_the_policy_refuses_an_empty_frame_by_name():
    """The policy's own path (no pre-processor): before, a torch reshape error."""
    policy = make_policy(action_dim=JOINTS, state_dim=JOINTS)
    batch = {CAM: torch.rand(1, 3, 0, 0), "observation.state": torch.zeros(1, JOINTS), "task": ["x"]}
    with pytest.raises(ValueError, match=f"A 0x0 frame of camera `{CAM}` is empty"):
        policy.predict_action_chunk(batch)


@pytest.mark.parametrize("size", [(480, 640), (64, 64), (16, 128), (24, 32)])
def test_camera_fitting_keeps_fitting_real_mismatches(size):
    """A 640x480 camera, a square one, a 4x wider one (the limit), a small one: cropped to the 32x64 tile."""
    assert _fit_in_preprocessor(torch.rand(1, 3, *size)).shape == (1, 3, 32, 64)
