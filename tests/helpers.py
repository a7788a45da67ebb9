"""Helpers the tests share: small configs and policies, preprocessed batches, the official checkpoint layout."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lerobot_fastwam.configuration_fastwam import FastWAMConfig, default_features
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

# The tiny architecture, as explicit fields (for LeRobot's built-in config, which has no presets).
TINY = dict(
    num_layers=2,
    num_heads=2,
    head_dim=12,
    video_ffn_dim=48,
    action_hidden_dim=16,
    action_ffn_dim=32,
    text_dim=32,
    freq_dim=16,
)


def make_config(action_dim=7, state_dim=8, cameras=1, **overrides) -> FastWAMConfig:
    overrides.setdefault("preset", "tiny")
    image_size = overrides.pop("image_size", (32, 64))
    inputs, outputs = default_features(action_dim, state_dim, image_size, cameras)
    return FastWAMConfig(
        input_features=inputs, output_features=outputs, device="cpu", image_size=image_size, **overrides
    )


def make_policy(seed=0, **kwargs) -> FastWAMPolicy:
    torch.manual_seed(seed)
    return FastWAMPolicy(make_config(**kwargs))


def observation(config: FastWAMConfig, batch_size=2, seed=0, frames=None, tasks=None) -> dict:
    """A preprocessed batch: cameras in [0, 1] at their tile size, state, task strings."""
    g = torch.Generator().manual_seed(seed)
    lead = (batch_size,) if frames is None else (batch_size, frames)
    batch = {key: torch.rand(*lead, 3, h, w, generator=g) for key, (h, w) in config.camera_tile_sizes.items()}
    if config.state_dim is not None:
        batch["observation.state"] = torch.randn(*lead, config.state_dim, generator=g)
    batch["task"] = tasks or [f"task {i % 2}" for i in range(batch_size)]
    return batch


def training_batch(config: FastWAMConfig, batch_size=2, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed + 1)
    batch = observation(config, batch_size, seed, frames=config.num_video_frames)
    batch["action"] = torch.randn(batch_size, config.chunk_size, config.action_dim, generator=g)
    batch["action_is_pad"] = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool)
    return batch


def official_payload(builtin) -> dict:
    """The official code's checkpoint layout: blocks under their experts (``mixtures.<e>.blocks.<i>``)."""
    mot = {}
    for key, value in builtin.model.mot.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers":  # layers.<i>.blocks.<expert>.<rest>
            key = ".".join(["mixtures", parts[3], "blocks", parts[1], *parts[4:]])
        mot[key] = value.clone()
    payload = {"mot": mot, "step": 100, "torch_dtype": "torch.float32"}
    if builtin.model.proprio_encoder is not None:
        payload["proprio_encoder"] = {k: v.clone() for k, v in builtin.model.proprio_encoder.state_dict().items()}
    return payload


# ------------------------------------------------------------------------------------------------------------------
# LeRobot's own lerobot-train in a subprocess, offline
TRAIN_TIMEOUT_S = 300
# LeRobot logs one line per log step, e.g. "step:2 smpl:4 ep:0 epch:0.04 loss:2.576 grdn:1.374 ..."
LOG_LINE = re.compile(r"step:(\d+) smpl:\S+ .*?\bloss:(\S+) .*?loss_video:(\S+) loss_action:(\S+)")


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("accelerate") is None:
        pytest.fail("lerobot-train needs `accelerate`: install LeRobot's training extra, `lerobot[training]`.")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    env["HF_LEROBOT_HOME"] = str(cwd / "lerobot_home")  # nothing outside the test's tmp dir
    cmd = [sys.executable, "-m", "lerobot.scripts.lerobot_train", *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
    if result.returncode != 0:
        log = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"lerobot-train exited {result.returncode}\n$ {' '.join(cmd)}\n{log}")
    return result


def logged_steps(result: subprocess.CompletedProcess) -> dict[int, tuple[float, float, float]]:
    """step -> (loss, loss_video, loss_action) from the training log (progress bars share the lines)."""
    steps = {}
    for match in LOG_LINE.finditer(result.stdout + result.stderr):
        steps[int(match.group(1))] = tuple(float(match.group(i)) for i in (2, 3, 4))
    return steps


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
