import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin)
from lerobot_fastwam.configuration_fastwam import FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402

torch.set_num_threads(2)


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


@pytest.fixture
def policy():
    return make_policy()
