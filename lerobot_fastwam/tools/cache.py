"""``lerobot-fastwam cache``: encode a dataset's training windows and tasks once, beside the dataset
(``data/latent_cache.py`` holds the format and its checks).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lerobot.configs.default import DatasetConfig

from ..configuration_fastwam import FastWAMConfig


@dataclasses.dataclass
class CacheConfig:
    """Options of ``lerobot-fastwam cache``: the dataset, and the policy options that shape its inputs (the
    same ``--policy.*`` options as for ``lerobot-train``, e.g. ``--policy.preset``, ``--policy.image_size``).
    Run again with the same arguments, it finishes an interrupted run and re-encodes every cache file that fails
    its size and SHA-256 check, which gives the files of a clean build."""

    dataset: DatasetConfig
    policy: FastWAMConfig = dataclasses.field(default_factory=FastWAMConfig)
    shard_size: int = 1024  # windows per safetensors shard (the unit of resumption)
    batch_size: int = 8
    num_workers: int = 2
    max_shards: int | None = None  # stop after this many new shards (resume later)


def cache(argv: list[str]) -> Path:
    """Encode every training window of a dataset with the VAE and every task with umT5, beside the dataset."""
    import draccus
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.utils.feature_utils import dataset_to_policy_features

    from ..data.latent_cache import build_cache
    from ..encoders.latent_encoder import build_latent_encoder
    from ..encoders.prompt_encoder import build_prompt_encoder

    cfg = draccus.parse(CacheConfig, args=argv, prog="lerobot-fastwam cache")
    policy = cfg.policy
    meta = LeRobotDatasetMetadata(cfg.dataset.repo_id, root=cfg.dataset.root, revision=cfg.dataset.revision)
    features = dataset_to_policy_features(meta.features)
    policy.output_features = {k: f for k, f in features.items() if k == "action"}
    policy.input_features = {k: f for k, f in features.items() if k != "action"}
    policy.validate_features()
    cameras = set(policy.ordered_camera_keys)
    delta = {k: v for k, v in (resolve_delta_timestamps(policy, meta) or {}).items() if k in cameras}
    dataset = LeRobotDataset(
        cfg.dataset.repo_id,
        root=cfg.dataset.root,
        revision=cfg.dataset.revision,
        delta_timestamps=delta,
        video_backend=cfg.dataset.video_backend,
    )
    device = policy.device or "cpu"
    return build_cache(
        policy,
        dataset,
        build_latent_encoder(policy).to(device),
        build_prompt_encoder(policy).to(device),
        shard_size=cfg.shard_size,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        max_shards=cfg.max_shards,
    )
