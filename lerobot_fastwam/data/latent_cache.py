"""Precomputed VAE latents and umT5 embeddings for training, stored beside the dataset.

The official recipe and LeRobot's built-in run the Wan2.2 VAE over every training clip (about 466 GFLOP per
224x448 frame) and umT5 over every prompt at every step, although both are frozen. ``lerobot-fastwam cache``
encodes each training window once (the clip a training sample at dataset index ``i`` sees: frames ``i``,
``i + stride``, ..., clamped at its episode's end, exactly as LeRobot loads it) and each distinct task once:

    <dataset root>/fastwam_cache/
        manifest.json              fingerprint, shard size, each file's size and SHA-256, task list, latent
                                   statistics, the SHA-256 of every dataset file the cache was built from
        latents-00000.safetensors  "latents" [n, C, F, h, w] (raw codec latents) for dataset indices [0, n)
        ...
        text.safetensors           "context" [tasks, L, text_dim]
        file_hashes.json           memo of the dataset files' SHA-256 (a speed-up only, see below)

A policy built for training on that dataset (``make_policy`` hands it the dataset metadata) finds the cache
and checks its fingerprint: a match means the VAE and umT5 are never built and each batch reads its latents
by the sample's ``index``; a mismatch is an error that says how to rebuild. The fingerprint covers:

* the settings the tensors depend on: cache format, encoders (pretrained id or random-model sizes), video
  codec, latent channels, text width and length, prompt template, image size, camera layout and keys, number
  and stride of video frames, dtype;
* the dataset's identity and counts: repo id, codebase version, episodes, frames, fps;
* the dataset's content: one SHA-256 over the sorted (relative path, SHA-256) of every file under
  ``<root>/data`` and ``<root>/videos`` and of ``meta/info.json``, ``meta/tasks*`` and ``meta/episodes*``
  (dot-files, ``meta/stats.json`` and this cache directory are not part of it). A dataset re-recorded or
  edited in place is refused even when its counts are unchanged.

Hashing a dataset reads all of it once (about 1.5 GB/s on one core); ``file_hashes.json`` then memoises each
file's hash keyed by its relative path, size, ``mtime_ns`` and ``ctime_ns``, so a later check only stats the
files and re-hashes those whose key changed. The fingerprint is still a function of the settings and the
bytes alone (deleting the memo changes nothing but the time). The memo trusts the file system's timestamps:
an edit that keeps a file's size and leaves both its mtime and its ctime unchanged is not seen. Restoring
the mtime with ``os.utime`` does not hide an edit (the kernel sets ctime on every write and on ``utime``
itself, and unprivileged users cannot set it back); only changing the system clock, writing to the block
device underneath, or a file system without a real ctime (Windows reports the creation time there) can.
Files modified within the last two seconds are hashed but not memoised, as timestamps are coarse.

Every file the cache writes is recorded in the manifest with its byte size and SHA-256, and read back only
after both match (and the shards' shapes: ``shard_size`` rows each, the remainder in the last one, the same
per-row shape throughout): a truncated, corrupted, missing or swapped file is an error naming it. Latents are
stored unnormalised; the manifest carries the per-channel statistics the policy normalises them with (the
codec's published ones, or estimated from the dataset's frames exactly as a policy without the cache would).
Shards are written whole (to a temporary name, then renamed) and recorded in the manifest only when complete,
so an interrupted run resumes at the missing shards and ends with the same files; a rerun also re-encodes any
recorded shard that fails its check, so repairing a damaged cache gives the files of a clean build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "fastwam_cache"
MANIFEST = "manifest.json"
TEXT = "text.safetensors"
FILE_HASHES = "file_hashes.json"
FORMAT_VERSION = 3
HASH_CHUNK = 1 << 20  # bytes read per hash update
RECENT_NS = 2_000_000_000  # files modified this recently are not memoised (coarse file-system timestamps)
REPAIR = (
    "Rerun `lerobot-fastwam cache` with the same arguments to repair it (only damaged files are "
    "re-encoded), or train without the cache with --policy.use_latent_cache=false."
)


class StaleCacheError(RuntimeError):
    """The cache beside the dataset was made for other settings or data than the policy's, or is damaged."""


def settings_fingerprint(config, dataset_meta) -> dict[str, Any]:
    """The settings and dataset counts the cached tensors depend on (no file is read)."""
    encoders = (
        config.pretrained_model_id
        if config.use_pretrained_wan
        else (f"random(vae_base_dim={config.random_vae_base_dim}, text_layers={config.random_text_encoder_layers})")
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


def fingerprint(config, dataset_meta, file_hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything the cached tensors depend on: the settings, the dataset's counts and its files' content.

    ``file_hashes`` (from :func:`dataset_file_hashes`) saves hashing the dataset again when the caller has them.
    """
    result = settings_fingerprint(config, dataset_meta)
    hashes = dataset_file_hashes(dataset_meta.root) if file_hashes is None else file_hashes
    result["dataset"]["content_sha256"] = content_digest(hashes)
    return result


def content_digest(file_hashes: dict[str, str]) -> str:
    """One SHA-256 over the sorted (relative path, SHA-256) pairs of the dataset's files."""
    digest = hashlib.sha256()
    for rel in sorted(file_hashes):
        digest.update(f"{rel}\0{file_hashes[rel]}\n".encode())
    return digest.hexdigest()


def dataset_files(dataset_root: str | Path) -> list[str]:
    """The dataset files a cache depends on, as sorted POSIX paths relative to the root (LeRobot v3 layout:
    ``data/``, ``videos/``, ``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/``)."""
    root = Path(dataset_root)
    meta = root / "meta"
    tops = [root / "data", root / "videos", meta / "info.json"]
    if meta.is_dir():
        tops += sorted(p for p in meta.iterdir() if p.name.startswith(("tasks", "episodes")))
    files = []
    for top in tops:
        if top.is_file():
            files.append(top)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):  # nothing when `top` is a file
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != CACHE_DIRNAME]
            files += [Path(dirpath) / name for name in filenames if not name.startswith(".")]
    return sorted(p.relative_to(root).as_posix() for p in files)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def dataset_file_hashes(dataset_root: str | Path) -> dict[str, str]:
    """Relative path -> SHA-256 of each of :func:`dataset_files`, memoised in ``fastwam_cache/file_hashes.json``
    by (path, size, mtime_ns, ctime_ns) when the cache directory exists (see the module docstring)."""
    root = Path(dataset_root)
    memo_path = cache_dir(root) / FILE_HASHES
    memo = _read_json(memo_path).get("files", {})
    hashes, kept = {}, {}
    now = time.time_ns()
    for rel in dataset_files(root):
        st = (root / rel).stat()
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
        known = memo.get(rel, {})
        if {k: known.get(k) for k in key} == key and isinstance(known.get("sha256"), str):
            hashes[rel] = known["sha256"]
        else:
            hashes[rel] = file_sha256(root / rel)
        if now - max(st.st_mtime_ns, st.st_ctime_ns) > RECENT_NS:
            kept[rel] = {**key, "sha256": hashes[rel]}
    if kept != memo and memo_path.parent.is_dir():
        try:
            _write(memo_path, {"files": kept})
        except OSError as err:  # a read-only dataset: correct, only slower next time
            logger.debug("Fast-WAM: could not write %s (%s).", memo_path, err)
    return hashes


def cache_dir(dataset_root: str | Path) -> Path:
    return Path(dataset_root) / CACHE_DIRNAME


FRAMES_FROM_CACHE = "fastwam_frames_from_cache"  # the dataset-metadata attribute ``skip_frame_decoding`` sets


def skip_frame_decoding(dataset_meta) -> None:
    """Tell the readers of ``dataset_meta``'s dataset not to decode video frames (``plugin.py``, point 4).

    A policy training from the cache reads each sample's latents by its index, so every frame the dataset
    decodes (9 per camera per sample at the paper's settings, and the current one) would be resized by the
    pre-processor and thrown away. The mark is an attribute of the metadata object LeRobot hands both the
    dataset's reader and the policy, so it reaches the loader workers with the dataset (forked or pickled).
    """
    setattr(dataset_meta, FRAMES_FROM_CACHE, True)


class LatentCache:
    """Read side: latents by dataset index, text context by task string, every file checked before use."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory
        self.shard_size = int(manifest["shard_size"])
        total = int(manifest["total_windows"])
        recorded = manifest["shards"]
        self._shards = []
        for shard in range(-(-total // self.shard_size)):
            name = shard_name(shard)
            if name not in recorded:
                raise StaleCacheError(f"The Fast-WAM cache file {directory / name} is not in the manifest. {REPAIR}")
            latents = _load_checked(directory, name, recorded[name])["latents"]
            rows = min(self.shard_size, total - shard * self.shard_size)
            first = self._shards[0] if self._shards else latents
            if latents.shape[0] != rows or latents.shape[1:] != first.shape[1:] or latents.dtype != first.dtype:
                raise StaleCacheError(
                    f"The Fast-WAM cache file {directory / name} holds {latents.dtype} latents of shape "
                    f"{tuple(latents.shape)}, expected {rows} rows of {tuple(first.shape[1:])} {first.dtype}. {REPAIR}"
                )
            self._shards.append(latents)
        contexts = _load_checked(directory, TEXT, manifest["text"])["context"]
        if contexts.shape[0] != len(manifest["tasks"]):
            raise StaleCacheError(
                f"The Fast-WAM cache file {directory / TEXT} holds {contexts.shape[0]} task "
                f"embeddings for {len(manifest['tasks'])} tasks. {REPAIR}"
            )
        self._text = {task: contexts[i] for i, task in enumerate(manifest["tasks"])}
        stats = manifest["latent_stats"]
        self.latent_stats: tuple[list[float], list[float]] = (stats["mean"], stats["std"])

    @classmethod
    def find(cls, dataset_root: str | Path, config, dataset_meta) -> LatentCache | None:
        """The matching complete cache of this dataset, None when there is none; a stale one is an error."""
        directory = cache_dir(dataset_root)
        if not (directory / MANIFEST).exists():
            return None
        manifest = _read_json(directory / MANIFEST)
        if not manifest:
            raise StaleCacheError(
                f"The Fast-WAM cache manifest {directory / MANIFEST} cannot be read. Rerun `lerobot-fastwam cache` "
                "to rebuild the cache, or train without it with --policy.use_latent_cache=false."
            )
        hashes = dataset_file_hashes(dataset_root)
        expected = fingerprint(config, dataset_meta, hashes)
        found = manifest.get("fingerprint", {})
        if found != expected:
            changed = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
            counts = {k: v for k, v in expected["dataset"].items() if k != "content_sha256"}
            if changed == ["dataset"] and {k: (found.get("dataset") or {}).get(k) for k in counts} == counts:
                raise StaleCacheError(
                    f"The dataset's files changed since the Fast-WAM cache in {directory} was built "
                    f"({_file_changes(manifest.get('dataset_files', {}), hashes)}), so its latents may not be "
                    "the data's. Rerun `lerobot-fastwam cache` with this policy's options to rebuild it, delete "
                    "it, or train without it with --policy.use_latent_cache=false."
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
        # LeRobot hands the policy the dataset's metadata only, so whether augmentation is on cannot be seen here.
        logger.warning(
            "Fast-WAM: the latent cache holds latents of unaugmented frames; --dataset.image_transforms (if "
            "enabled) does not apply to them. Train with --policy.use_latent_cache=false to use augmentation."
        )
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


def shard_name(shard: int) -> str:
    return f"latents-{shard:05d}.safetensors"


@torch.no_grad()
def build_cache(
    config,
    dataset,
    latent_encoder,
    prompt_encoder,
    shard_size: int = 1024,
    batch_size: int = 8,
    num_workers: int = 0,
    max_shards: int | None = None,
    progress: bool = True,
) -> Path:
    """Encode every window of ``dataset`` (a LeRobotDataset loaded with the policy's delta timestamps).

    Clips are tiled by ``camera_layout.training_clip``, the policy's own function, so cached and live latents
    come from the same pixels. A matching cache is resumed: the files its manifest records are checked (size,
    SHA-256) and those that fail are encoded again, with the missing ones. ``max_shards`` stops after that many
    new shards (an interruption, for tests). Returns the cache directory.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from .camera_layout import training_clip  # noqa: PLC0415
    from .latent_stats import estimate_latent_stats  # noqa: PLC0415

    directory = cache_dir(dataset.root)
    directory.mkdir(parents=True, exist_ok=True)
    hashes = dataset_file_hashes(dataset.root)
    expected = fingerprint(config, dataset.meta, hashes)
    total = len(dataset)
    num_shards = -(-total // shard_size)
    manifest_path = directory / MANIFEST
    manifest = _read_json(manifest_path)
    if (manifest.get("fingerprint"), manifest.get("shard_size"), manifest.get("total_windows")) != (
        expected,
        shard_size,
        total,
    ):
        manifest = {
            "fingerprint": expected,
            "dataset_files": hashes,
            "shard_size": shard_size,
            "total_windows": total,
            "shards": {},
            "complete": False,
        }
    damaged = [name for name, entry in manifest["shards"].items() if _warn_problem(directory, name, entry)]
    for name in damaged:
        del manifest["shards"][name]
    if "text" in manifest and _warn_problem(directory, TEXT, manifest["text"]):
        del manifest["text"], manifest["tasks"]
    if damaged or "text" not in manifest:
        manifest["complete"] = False
        _write(manifest_path, manifest)
    dtype = config.torch_dtype
    device = latent_encoder.device

    if "latent_stats" not in manifest:
        mean, std = latent_encoder.published_stats or estimate_latent_stats(latent_encoder, dataset, config)
        manifest["latent_stats"] = {"mean": list(mean), "std": list(std)}
        _write(manifest_path, manifest)

    tasks = sorted(dataset.meta.tasks.index) if hasattr(dataset.meta.tasks, "index") else sorted(dataset.meta.tasks)
    if "text" not in manifest:
        context = prompt_encoder(list(tasks)).to(dtype).cpu().contiguous()
        manifest["text"] = _save_checked(directory, TEXT, {"context": context})
        manifest["tasks"] = list(tasks)
        _write(manifest_path, manifest)

    todo = [shard for shard in range(num_shards) if shard_name(shard) not in manifest["shards"]]
    written = 0
    bar = tqdm(
        total=total,
        desc="Fast-WAM cache",
        unit="window",
        disable=not progress,
        initial=total - sum(min(shard_size, total - s * shard_size) for s in todo),
    )
    for shard in todo:
        if max_shards is not None and written >= max_shards:
            break
        indices = range(shard * shard_size, min((shard + 1) * shard_size, total))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers
        )
        latents = []
        for batch in loader:
            frames = training_clip(batch, config, config.num_video_frames).to(device)
            latents.append(latent_encoder(frames).to(dtype).cpu())
            bar.update(frames.shape[0])
        name = shard_name(shard)
        manifest["shards"][name] = _save_checked(directory, name, {"latents": torch.cat(latents).contiguous()})
        manifest["shards"] = dict(sorted(manifest["shards"].items()))  # the same manifest however it was built
        _write(manifest_path, manifest)
        written += 1
    bar.close()
    if not manifest["complete"] and len(manifest["shards"]) == num_shards:  # last shard or a repaired text
        manifest["complete"] = True
        _write(manifest_path, manifest)
    return directory


def _save_checked(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Write ``tensors`` to ``directory / name`` atomically; its manifest entry (size and SHA-256)."""
    data = save_safetensors(tensors)
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(directory / name)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _file_problem(directory: Path, name: str, entry: dict[str, Any], data: bytes | None = None) -> str | None:
    """What is wrong with a cache file against its manifest entry, None when nothing is."""
    path = directory / name
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size if data is None else len(data)
    if size != entry.get("bytes"):
        return f"has {size} bytes where the manifest recorded {entry.get('bytes')} (truncated or replaced)"
    digest = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    if digest != entry.get("sha256"):
        return "does not match the SHA-256 the manifest recorded (corrupted, or another file in its place)"
    return None


def _warn_problem(directory: Path, name: str, entry: dict[str, Any]) -> bool:
    if problem := _file_problem(directory, name, entry):
        logger.warning("Fast-WAM: the cache file %s %s; encoding it again.", directory / name, problem)
    return problem is not None


def _load_checked(directory: Path, name: str, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a cache file whose size and SHA-256 match its manifest entry (read once)."""
    path = directory / name
    data = path.read_bytes() if path.is_file() and path.stat().st_size == entry.get("bytes") else None
    if problem := _file_problem(directory, name, entry, data):
        raise StaleCacheError(f"The Fast-WAM cache file {path} {problem}. {REPAIR}")
    try:
        return load_safetensors(data)
    except Exception as err:  # noqa: BLE001 - an entry written by a broken build
        raise StaleCacheError(f"The Fast-WAM cache file {path} cannot be read ({err}). {REPAIR}") from err


def _file_changes(before: dict[str, str], after: dict[str, str], shown: int = 3) -> str:
    """``changed: a, b; added: c; removed: d`` for the dataset files that differ, a few of each."""
    groups = {
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
    }
    parts = [
        f"{label}: {', '.join(names[:shown])}" + (f" and {len(names) - shown} more" if len(names) > shown else "")
        for label, names in groups.items()
        if names
    ]
    return "; ".join(parts) or "their content digest differs"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: ranks may write the memo at once
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
