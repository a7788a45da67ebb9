"""Precomputed VAE latents and umT5 embeddings for training, stored beside the dataset.

The official recipe and LeRobot's built-in run the Wan2.2 VAE over every training clip (about 466 GFLOP per
224x448 frame) and umT5 over every prompt at every step, although both are frozen. ``lerobot-fastwam cache``
encodes each training window once (the clip a training sample at dataset index ``i`` sees: frames ``i``,
``i + stride``, ..., clamped at its episode's end, exactly as LeRobot loads it) and each distinct task once:

    <dataset root>/fastwam_cache/
        manifest.json              fingerprint, shard size, finished shards, task list, latent statistics
        latents-00000.safetensors  "latents" [n, C, F, h, w] (raw codec latents) for dataset indices [0, n)
        ...
        text.safetensors           "context" [tasks, L, text_dim]

A policy built for training on that dataset (``make_policy`` hands it the dataset metadata) finds the cache
and checks its fingerprint: a match means the VAE and umT5 are never built and each batch reads its latents
by the sample's ``index``; a mismatch (other encoder, resolution, layout, frame stride, dataset version) is an
error that says how to rebuild. Latents are stored unnormalised; the manifest carries the per-channel
statistics the policy normalises them with (the codec's published ones, or estimated from the dataset's
frames exactly as a policy without the cache would). Shards are written whole and recorded in the manifest
only when complete, so an interrupted run resumes at the first missing shard and ends with the same files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "fastwam_cache"
MANIFEST = "manifest.json"
FORMAT_VERSION = 2


class StaleCacheError(RuntimeError):
    """The cache beside the dataset was made for other settings than the policy's."""


def fingerprint(config, dataset_meta) -> dict[str, Any]:
    """Everything the cached tensors depend on."""
    encoders = config.pretrained_model_id if config.use_pretrained_wan else (
        f"random(vae_base_dim={config.random_vae_base_dim}, text_layers={config.random_text_encoder_layers})"
    )
    info = dataset_meta.info
    return {
        "format": FORMAT_VERSION,
        "encoders": encoders,
        "video_codec": config.video_codec,
        "latent_channels": config.latent_channels,
        "text_dim": config.text_dim,
        "text_max_length": config.text_max_length,
        "prompt_template": config.prompt_template,
        "image_size": list(config.image_size),
        "camera_layout": config.camera_layout,
        "camera_keys": config.ordered_camera_keys,
        "num_video_frames": config.num_video_frames,
        "video_frame_stride": config.video_frame_stride,
        "dtype": config.dtype,  # latents are stored in the compute dtype (exact for fp32 training)
        "dataset": {
            "repo_id": dataset_meta.repo_id,
            "codebase_version": info.get("codebase_version"),
            "total_episodes": info.get("total_episodes"),
            "total_frames": info.get("total_frames"),
            "fps": info.get("fps"),
        },
    }


def cache_dir(dataset_root: str | Path) -> Path:
    return Path(dataset_root) / CACHE_DIRNAME


class LatentCache:
    """Read side: latents by dataset index, text context by task string."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory
        self.shard_size = int(manifest["shard_size"])
        self._shards = [
            safe_open(str(directory / name), framework="pt").get_tensor("latents") for name in manifest["shards"]
        ]
        with safe_open(str(directory / "text.safetensors"), framework="pt") as f:
            contexts = f.get_tensor("context")
        self._text = {task: contexts[i] for i, task in enumerate(manifest["tasks"])}
        stats = manifest["latent_stats"]
        self.latent_stats: tuple[list[float], list[float]] = (stats["mean"], stats["std"])

    @classmethod
    def find(cls, dataset_root: str | Path, config, dataset_meta) -> LatentCache | None:
        """The matching complete cache of this dataset, None when there is none; a stale one is an error."""
        directory = cache_dir(dataset_root)
        if not (directory / MANIFEST).exists():
            return None
        manifest = json.loads((directory / MANIFEST).read_text())
        expected = fingerprint(config, dataset_meta)
        if manifest.get("fingerprint") != expected:
            changed = sorted(
                k for k in expected.keys() | manifest.get("fingerprint", {}).keys()
                if expected.get(k) != manifest.get("fingerprint", {}).get(k)
            )
            raise StaleCacheError(
                f"The Fast-WAM cache in {directory} was built for other settings ({', '.join(changed)} differ). "
                f"Rebuild it with `lerobot-fastwam cache` and this policy's options, delete it, or train without "
                "it with --policy.use_latent_cache=false."
            )
        if not manifest.get("complete"):
            raise StaleCacheError(
                f"The Fast-WAM cache in {directory} is incomplete (an interrupted `lerobot-fastwam cache` run); "
                "run the same command again to finish it, or pass --policy.use_latent_cache=false."
            )
        logger.info("Fast-WAM: training from the latent cache %s (the VAE and umT5 are not loaded).", directory)
        return cls(directory, manifest)

    def latents(self, index: torch.Tensor) -> torch.Tensor:
        """``[B]`` dataset indices -> ``[B, C, F, h, w]`` latents (as stored)."""
        index = index.cpu().long()
        shards, rows = index // self.shard_size, index % self.shard_size
        out = self._shards[0].new_empty(len(index), *self._shards[0].shape[1:])
        for shard in shards.unique().tolist():  # one gather per shard touched
            selected = shards == shard
            out[selected] = self._shards[shard][rows[selected]]
        return out

    def text_context(self, tasks: list[str]) -> torch.Tensor:
        missing = [t for t in tasks if t not in self._text]
        if missing:
            raise StaleCacheError(f"Tasks {missing} are not in the Fast-WAM cache {self.directory}; rebuild it.")
        return torch.stack([self._text[t] for t in tasks])


@torch.no_grad()
def build_cache(
    config,
    dataset,
    latent_encoder,
    prompt_encoder,
    frames_of,
    shard_size: int = 1024,
    batch_size: int = 8,
    num_workers: int = 0,
    max_shards: int | None = None,
    progress: bool = True,
) -> Path:
    """Encode every window of ``dataset`` (a LeRobotDataset loaded with the policy's delta timestamps).

    ``frames_of(batch, num_frames)`` turns a LeRobot batch into tiled ``[B, 3, T, H, W]`` frames (the policy's
    own function, so cached and live latents come from the same pixels). ``max_shards`` stops after that many
    new shards (an interruption, for tests). Returns the cache directory.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from .frozen_encoders import estimate_latent_stats  # noqa: PLC0415

    directory = cache_dir(dataset.root)
    directory.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(config, dataset.meta)
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("fingerprint") != expected or manifest.get("shard_size") != shard_size:
        manifest = {"fingerprint": expected, "shard_size": shard_size, "shards": [], "complete": False}
    dtype = config.torch_dtype
    device = latent_encoder.device

    if "latent_stats" not in manifest:
        mean, std = latent_encoder.published_stats or estimate_latent_stats(latent_encoder, dataset, frames_of)
        manifest["latent_stats"] = {"mean": list(mean), "std": list(std)}
        _write(manifest_path, manifest)

    tasks = sorted(dataset.meta.tasks.index) if hasattr(dataset.meta.tasks, "index") else sorted(dataset.meta.tasks)
    if "tasks" not in manifest:
        context = prompt_encoder(list(tasks)).to(dtype).cpu().contiguous()
        save_file({"context": context}, str(directory / "text.safetensors"))
        manifest["tasks"] = list(tasks)
        _write(manifest_path, manifest)

    total = len(dataset)
    num_shards = -(-total // shard_size)
    written = 0
    bar = tqdm(total=total, desc="Fast-WAM cache", unit="window", disable=not progress,
               initial=min(len(manifest["shards"]) * shard_size, total))
    for shard in range(len(manifest["shards"]), num_shards):
        if max_shards is not None and written >= max_shards:
            break
        indices = range(shard * shard_size, min((shard + 1) * shard_size, total))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers
        )
        latents = []
        for batch in loader:
            frames = frames_of(batch, config.num_video_frames).to(device)
            latents.append(latent_encoder(frames).to(dtype).cpu())
            bar.update(frames.shape[0])
        name = f"latents-{shard:05d}.safetensors"
        save_file({"latents": torch.cat(latents).contiguous()}, str(directory / name))
        manifest["shards"].append(name)
        manifest["complete"] = len(manifest["shards"]) == num_shards
        _write(manifest_path, manifest)
        written += 1
    bar.close()
    return directory


def _write(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
