"""`lerobot-fastwam cache`: windows and tasks encoded once, resumable, fingerprinted, checked, repairable, used by
lerobot-train."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.utils.feature_utils import dataset_to_policy_features

from lerobot_fastwam import FastWAMConfig, FastWAMPolicy
from lerobot_fastwam.data import latent_cache
from lerobot_fastwam.data.latent_cache import LatentCache, StaleCacheError, cache_dir
from lerobot_fastwam.testing.synthetic_dataset import make_dataset
from lerobot_fastwam.tools.cli import main

from ..helpers import logged_steps, run_train

REPO_ID = "local/fastwam_cache_test"
CACHE_ARGS = ["--policy.preset=tiny", "--policy.device=cpu", "--shard_size=16", "--num_workers=0", "--batch_size=4"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "dataset"
    make_dataset(root, repo_id=REPO_ID, episodes=2, frames=24, cameras=("front", "wrist"), image_hw=(64, 64))
    return root


def run_cache(root, *extra):
    main(
        [
            "cache",
            f"--dataset.repo_id={REPO_ID}",
            f"--dataset.root={root}",
            "--dataset.video_backend=pyav",
            *CACHE_ARGS,
            *extra,
        ]
    )


def policy_for(root, **overrides) -> tuple[FastWAMPolicy, LeRobotDatasetMetadata]:
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    features = dataset_to_policy_features(meta.features)
    config = FastWAMConfig(
        preset="tiny",
        device="cpu",
        output_features={"action": features["action"]},
        input_features={k: f for k, f in features.items() if k != "action"},
        **overrides,
    )
    return FastWAMPolicy(config, dataset_meta=meta), meta


def test_interrupted_cache_resumes_to_the_same_files(dataset_root):
    run_cache(dataset_root, "--max_shards=1")  # interrupted after the first of 3 shards
    manifest = json.loads((cache_dir(dataset_root) / "manifest.json").read_text())
    assert list(manifest["shards"]) == ["latents-00000.safetensors"] and not manifest["complete"]
    with pytest.raises(StaleCacheError, match="incomplete"):
        policy_for(dataset_root)
    run_cache(dataset_root)  # resumes
    resumed = {p.name: p.read_bytes() for p in cache_dir(dataset_root).glob("*.safetensors")}
    assert sorted(resumed) == [
        "latents-00000.safetensors",
        "latents-00001.safetensors",
        "latents-00002.safetensors",
        "text.safetensors",
    ]
    shutil.rmtree(cache_dir(dataset_root))
    run_cache(dataset_root)  # one uninterrupted run
    fresh = {p.name: p.read_bytes() for p in cache_dir(dataset_root).glob("*.safetensors")}
    assert fresh == resumed


def test_cached_latents_are_the_live_vae_latents(dataset_root):
    if not (cache_dir(dataset_root) / "manifest.json").exists():
        run_cache(dataset_root)
    cached, meta = policy_for(dataset_root)
    assert cached._latent_cache is not None and "latent_encoder" not in cached._modules  # VAE never built
    live, _ = policy_for(dataset_root, use_latent_cache=False)
    dataset = LeRobotDataset(
        REPO_ID, root=dataset_root, delta_timestamps=resolve_delta_timestamps(live.config, meta), video_backend="pyav"
    )
    batch = torch.utils.data.default_collate([dataset[i] for i in (0, 17, 23, 40)])  # 23, 47: episode ends
    # The random VAE has no published statistics: both normalise with the same statistics of the data.
    assert cached.config.latent_mean == live.config.latent_mean and len(live.config.latent_mean) == 48
    assert cached.config.latent_std == live.config.latent_std
    torch.testing.assert_close(cached._training_latents(batch), live._training_latents(batch), rtol=1e-5, atol=1e-5)
    first = live._training_latents(batch)[:, :, 0]  # statistics come from single frames: those are normalised
    assert first.mean().abs() < 0.5 and 0.3 < first.std() < 3.0
    cached.train()
    torch.testing.assert_close(cached._text_context(batch, 4), live.prompt_encoder(list(batch["task"])))


def test_a_cached_training_sample_decodes_no_video_frame(dataset_root, monkeypatch):
    """With its cache found, the policy marks the dataset LeRobot built (lerobot-train builds the dataset, then the
    policy with ``dataset.meta``): its samples decode no frame, keep the window's padding flags, and train to the
    loss of samples whose frames were decoded. Another dataset of the same files is read as before."""
    from lerobot.datasets import dataset_reader

    from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

    if not (cache_dir(dataset_root) / "manifest.json").exists():
        run_cache(dataset_root)
    decoded = []
    decode = dataset_reader.decode_video_frames
    monkeypatch.setattr(
        dataset_reader, "decode_video_frames", lambda path, ts, *a, **k: decoded.extend(ts) or decode(path, ts, *a, **k)
    )

    config = policy_for(dataset_root)[0].config
    delta = resolve_delta_timestamps(config, LeRobotDatasetMetadata(REPO_ID, root=dataset_root))
    marked = LeRobotDataset(REPO_ID, root=dataset_root, delta_timestamps=delta, video_backend="pyav")
    policy = FastWAMPolicy(config, dataset_meta=marked.meta)  # as lerobot-train: the dataset first, then the policy
    plain = LeRobotDataset(REPO_ID, root=dataset_root, delta_timestamps=delta, video_backend="pyav")
    rows = (0, 17, 23, 40)  # 23, 47: episode ends, padded windows
    without = [marked[i] for i in rows]
    assert decoded == [] and not {"observation.images.front", "observation.images.wrist"} & without[0].keys()
    with_frames = [plain[i] for i in rows]
    assert len(decoded) == 2 * len(rows) * len(delta["observation.images.front"])  # 2 cameras, 9 frames each
    for a, b in zip(without, with_frames, strict=True):
        for key in ("observation.images.front_is_pad", "index", "action", "observation.state"):
            assert torch.equal(a[key], b[key]), key

    # LeRobot's image transforms read every camera of a sample: with them on, frames are decoded as before.
    augmented = LeRobotDataset(
        REPO_ID, root=dataset_root, delta_timestamps=delta, video_backend="pyav", image_transforms=lambda x: x
    )
    latent_cache.skip_frame_decoding(augmented.meta)
    assert torch.equal(augmented[17]["observation.images.front"], with_frames[1]["observation.images.front"])

    pre, _ = make_fastwam_pre_post_processors(policy.config, marked.meta.stats)
    policy.train()
    losses = []
    for samples in (without, with_frames):
        batch = pre(torch.utils.data.default_collate(samples))
        torch.manual_seed(0)
        losses.append(policy.forward(batch)[0])
    assert torch.equal(losses[0], losses[1])


def test_changed_settings_make_the_cache_stale(dataset_root):
    if not (cache_dir(dataset_root) / "manifest.json").exists():
        run_cache(dataset_root)
    with pytest.raises(StaleCacheError, match=r"(?s)num_video_frames, video_frame_stride.*lerobot-fastwam cache"):
        policy_for(dataset_root, num_video_frames=5, video_frame_stride=2)
    with pytest.raises(StaleCacheError, match="image_size"):
        policy_for(dataset_root, image_size=(64, 128))


def test_lerobot_train_first_step_loss_is_the_same_with_and_without_the_cache(dataset_root, tmp_path):
    if not (cache_dir(dataset_root) / "manifest.json").exists():
        run_cache(dataset_root)
    args = [
        "--policy.type=fastwam",
        "--policy.preset=tiny",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={dataset_root}",
        "--dataset.video_backend=pyav",
        "--steps=1",
        "--batch_size=4",
        "--log_freq=1",
        "--save_checkpoint=false",
        "--num_workers=0",
        "--env_eval_freq=0",
        "--wandb.enable=false",
        "--seed=3",
    ]
    with_cache = run_train([*args, f"--output_dir={tmp_path / 'cached'}"], cwd=tmp_path)
    without = run_train([*args, f"--output_dir={tmp_path / 'live'}", "--policy.use_latent_cache=false"], cwd=tmp_path)
    assert "training from the latent cache" in with_cache.stdout + with_cache.stderr
    cached_losses, live_losses = logged_steps(with_cache)[1], logged_steps(without)[1]
    assert cached_losses == pytest.approx(live_losses, abs=2e-3)


def built_cache(root) -> dict[str, bytes]:
    """The cache's tensors and manifest (built if need be), by file name."""
    if not (cache_dir(root) / "manifest.json").exists():
        run_cache(root)
    return {
        p.name: p.read_bytes()
        for p in cache_dir(root).iterdir()
        if p.suffix in (".safetensors", ".json") and p.name != latent_cache.FILE_HASHES
    }


def copy_of(root, tmp_path, cache: bool = True):
    copy = tmp_path / "dataset"
    shutil.copytree(root, copy, ignore=None if cache else shutil.ignore_patterns(latent_cache.CACHE_DIRNAME))
    return copy


DATA_FILE = "data/chunk-000/file-000.parquet"


def rewrite_actions(root) -> None:
    """Re-record the first data file with other actions: same episodes, frames and file name."""
    path = root / DATA_FILE
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["action"] = [-a for a in frame["action"]]
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)


def test_changed_data_with_the_same_counts_makes_the_cache_stale(dataset_root, tmp_path):
    built_cache(dataset_root)
    root = copy_of(dataset_root, tmp_path)
    policy_for(root)  # the copy matches: the content digest covers relative paths, not where the dataset lies
    rewrite_actions(root)
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    assert (meta.total_episodes, meta.total_frames) == (2, 48)
    with pytest.raises(StaleCacheError, match=rf"(?s)files changed.*changed: {DATA_FILE}\).*lerobot-fastwam cache"):
        policy_for(root)


def test_file_hashes_are_memoised_and_edits_still_change_the_fingerprint(dataset_root, tmp_path, monkeypatch):
    root = copy_of(dataset_root, tmp_path, cache=False)
    cache_dir(root).mkdir()  # the memo lives in the cache directory
    monkeypatch.setattr(latent_cache, "RECENT_NS", 0)  # the copy is seconds old: memoise it all the same
    calls = []
    hash_file = latent_cache.file_sha256
    monkeypatch.setattr(latent_cache, "file_sha256", lambda path: calls.append(path) or hash_file(path))
    files = latent_cache.dataset_files(root)
    assert DATA_FILE in files and "meta/info.json" in files and "meta/tasks.parquet" in files
    assert any(f.startswith("videos/") for f in files) and any(f.startswith("meta/episodes/") for f in files)
    assert "meta/stats.json" not in files and not any(latent_cache.CACHE_DIRNAME in f for f in files)

    hashes = latent_cache.dataset_file_hashes(root)
    assert sorted(hashes) == files and len(calls) == len(files)
    memo = json.loads((cache_dir(root) / latent_cache.FILE_HASHES).read_text())["files"]
    assert {f: e["sha256"] for f, e in memo.items()} == hashes
    calls.clear()
    assert latent_cache.dataset_file_hashes(root) == hashes and calls == []  # stat only, nothing read
    (cache_dir(root) / latent_cache.FILE_HASHES).unlink()
    assert latent_cache.dataset_file_hashes(root) == hashes  # the memo is a speed-up, not an input
    calls.clear()

    # An edit of the same size with the mtime put back: ctime still moves, so the file is hashed again.
    path = root / DATA_FILE
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    edited = latent_cache.dataset_file_hashes(root)
    assert calls == [path] and edited[DATA_FILE] != hashes[DATA_FILE]
    assert latent_cache.content_digest(edited) != latent_cache.content_digest(hashes)
    monkeypatch.setattr(latent_cache, "RECENT_NS", 2_000_000_000)  # a file edited just now is not memoised
    latent_cache.dataset_file_hashes(root)
    assert DATA_FILE not in json.loads((cache_dir(root) / latent_cache.FILE_HASHES).read_text())["files"]


def scramble(path):
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xA5 for b in data[-64:])  # tensor bytes: the file still parses
    path.write_bytes(data)


def swap(a, b):
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)


SHARD0, SHARD1 = "latents-00000.safetensors", "latents-00001.safetensors"
DAMAGES = {
    "scrambled": (SHARD1, lambda d: scramble(d / SHARD1)),
    "truncated": (SHARD1, lambda d: (d / SHARD1).write_bytes((d / SHARD1).read_bytes()[:-100])),
    "swapped": (SHARD0, lambda d: swap(d / SHARD0, d / SHARD1)),
    "deleted": (SHARD1, lambda d: (d / SHARD1).unlink()),
    "text scrambled": ("text.safetensors", lambda d: scramble(d / "text.safetensors")),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_file_is_refused_and_a_rerun_repairs_it(dataset_root, tmp_path, damage):
    clean = built_cache(dataset_root)
    root = copy_of(dataset_root, tmp_path)
    name, do = DAMAGES[damage]
    do(cache_dir(root))
    with pytest.raises(StaleCacheError, match=rf"(?s){name}.*lerobot-fastwam cache. with the same arguments"):
        policy_for(root)
    run_cache(root)
    assert built_cache(root) == clean  # the files, manifest included, of a clean build


def test_a_shard_of_the_wrong_shape_is_refused(dataset_root, tmp_path):
    built_cache(dataset_root)
    root = copy_of(dataset_root, tmp_path)
    directory = cache_dir(root)
    manifest = json.loads((directory / "manifest.json").read_text())
    shard = torch.zeros(15, 2)  # one row short, and another row shape, with a manifest entry that matches it
    manifest["shards"][SHARD1] = latent_cache._save_checked(directory, SHARD1, {"latents": shard})
    with pytest.raises(StaleCacheError, match=rf"(?s){SHARD1} holds .*shape \(15, 2\), expected 16 rows"):
        LatentCache(directory, manifest)
