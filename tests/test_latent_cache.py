"""`lerobot-fastwam cache`: windows and tasks encoded once, resumable, fingerprinted, used by lerobot-train."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.utils.feature_utils import dataset_to_policy_features

from lerobot_fastwam import FastWAMConfig, FastWAMPolicy
from lerobot_fastwam.cli import main
from lerobot_fastwam.latent_cache import StaleCacheError, cache_dir

from .dataset_utils import make_dataset
from .test_lerobot_train import logged_steps, run_train

REPO_ID = "local/fastwam_cache_test"
CACHE_ARGS = ["--policy.preset=tiny", "--policy.device=cpu", "--shard_size=16", "--num_workers=0", "--batch_size=4"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "dataset"
    make_dataset(root, repo_id=REPO_ID, episodes=2, frames=24, cameras=("front", "wrist"), image_hw=(64, 64))
    return root


def run_cache(root, *extra):
    main(["cache", f"--dataset.repo_id={REPO_ID}", f"--dataset.root={root}", "--dataset.video_backend=pyav",
          *CACHE_ARGS, *extra])


def policy_for(root, **overrides) -> tuple[FastWAMPolicy, LeRobotDatasetMetadata]:
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    features = dataset_to_policy_features(meta.features)
    config = FastWAMConfig(
        preset="tiny", device="cpu", output_features={"action": features["action"]},
        input_features={k: f for k, f in features.items() if k != "action"}, **overrides,
    )
    return FastWAMPolicy(config, dataset_meta=meta), meta


def test_interrupted_cache_resumes_to_the_same_files(dataset_root):
    run_cache(dataset_root, "--max_shards=1")  # interrupted after the first of 3 shards
    manifest = json.loads((cache_dir(dataset_root) / "manifest.json").read_text())
    assert manifest["shards"] == ["latents-00000.safetensors"] and not manifest["complete"]
    with pytest.raises(StaleCacheError, match="incomplete"):
        policy_for(dataset_root)
    run_cache(dataset_root)  # resumes
    resumed = {p.name: p.read_bytes() for p in cache_dir(dataset_root).glob("*.safetensors")}
    assert sorted(resumed) == ["latents-00000.safetensors", "latents-00001.safetensors",
                               "latents-00002.safetensors", "text.safetensors"]
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
    dataset = LeRobotDataset(REPO_ID, root=dataset_root, delta_timestamps=resolve_delta_timestamps(live.config, meta),
                             video_backend="pyav")
    batch = torch.utils.data.default_collate([dataset[i] for i in (0, 17, 23, 40)])  # 23, 47: episode ends
    # The random VAE has no published statistics: both normalise with the same statistics of the data.
    assert cached.config.latent_mean == live.config.latent_mean and len(live.config.latent_mean) == 48
    assert cached.config.latent_std == live.config.latent_std
    torch.testing.assert_close(cached._latents(batch, 9), live._latents(batch, 9), rtol=1e-5, atol=1e-5)
    first = live._latents(batch, 9)[:, :, 0]  # statistics come from single frames: those are normalised
    assert first.mean().abs() < 0.5 and 0.3 < first.std() < 3.0
    cached.train()
    torch.testing.assert_close(cached._text_context(batch, 4), live.prompt_encoder(list(batch["task"])))


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
    args = ["--policy.type=fastwam", "--policy.preset=tiny", "--policy.device=cpu", "--policy.push_to_hub=false",
            f"--dataset.repo_id={REPO_ID}", f"--dataset.root={dataset_root}", "--dataset.video_backend=pyav",
            "--steps=1", "--batch_size=4", "--log_freq=1", "--save_checkpoint=false", "--num_workers=0",
            "--env_eval_freq=0", "--wandb.enable=false", "--seed=3"]
    with_cache = run_train([*args, f"--output_dir={tmp_path / 'cached'}"], cwd=tmp_path)
    without = run_train([*args, f"--output_dir={tmp_path / 'live'}", "--policy.use_latent_cache=false"], cwd=tmp_path)
    assert "training from the latent cache" in with_cache.stdout + with_cache.stderr
    cached_losses, live_losses = logged_steps(with_cache)[1], logged_steps(without)[1]
    assert cached_losses == pytest.approx(live_losses, abs=2e-3)
