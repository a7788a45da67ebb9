"""What the tests of ``lerobot-fastwam serve`` share: a tiny checkpoint with its processors, and the server on a
free loopback port, stopped with SIGTERM as `kill` or `docker stop` would."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

from ..helpers import free_port, make_policy

STARTUP_TIMEOUT_S = 90


def save_checkpoint(path: Path, action_dim: int, state_dim: int, bound: float) -> Path:
    """A tiny 2-step checkpoint and its processors; states and actions range over [-bound, bound]."""
    policy = make_policy(action_dim=action_dim, state_dim=state_dim, num_inference_steps=2)
    policy.save_pretrained(path)

    def stats(dim: int) -> dict:
        return {
            "mean": torch.zeros(dim),
            "std": torch.ones(dim),
            "min": -bound * torch.ones(dim),
            "max": bound * torch.ones(dim),
        }

    features = {"observation.state": stats(state_dim), "action": stats(action_dim)}
    for pipeline in make_fastwam_pre_post_processors(policy.config, features):
        pipeline.save_pretrained(path)
    return path


@contextlib.contextmanager
def running_server(cwd: Path, *args: str):
    """``lerobot-fastwam serve ARGS`` in ``cwd`` (LeRobot's server writes logs/ into its working directory):
    yields (address, log file); at the end it must stop on SIGTERM and exit 0."""
    port = free_port()
    cmd = [sys.executable, "-m", "lerobot_fastwam.tools.cli", "serve", "--host=127.0.0.1", f"--port={port}", *args]
    log = cwd / "serve.log"  # a file, not a pipe: a full pipe would block the server
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    import grpc  # noqa: PLC0415  (the callers skip without it)

    try:
        with grpc.insecure_channel(address) as channel:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    break
                except grpc.FutureTimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        proc.wait()
                        pytest.fail(f"the server did not come up:\n{log.read_text()}")
        yield address, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # Ctrl-C takes the same path
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"the server did not stop on SIGTERM:\n{log.read_text()}")
    assert proc.returncode == 0, log.read_text()
