"""Training throughput: the plugin with a latent cache, the plugin without, and LeRobot's built-in fastwam.

Same architecture (the plugin's ``small`` preset by default), same batches of a synthetic LeRobotDataset
(two 64x64 video cameras tiled to 64x128, 9 frames per window, 32 actions), same optimizer. Each variant runs
in its own process so its peak memory (``ru_maxrss``) is its own. Batches are loaded and collated before the
clock starts, so the numbers are the policy's training step (forward + backward + clip + AdamW), the part a
GPU spends its time on; video decoding by the DataLoader is the same for all three and not timed. Each policy
steps with its own optimizer preset, as lerobot-train does (the plugin's is AdamW with the fused kernel).

    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py --config small --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

REPO_ID = "local/fastwam_throughput"
VARIANTS = ("plugin_cached", "plugin_uncached", "builtin")


def prepare(workdir: Path, config: str) -> None:
    """Synthetic dataset (once per workdir) + its Fast-WAM cache (``cache`` finishes, repairs or rebuilds a
    cache that is incomplete, damaged or stale, and returns at once for a healthy one)."""
    from lerobot_fastwam.testing.synthetic_dataset import make_dataset  # noqa: PLC0415
    from lerobot_fastwam.tools.cli import main as fastwam_cli  # noqa: PLC0415

    root = workdir / "dataset"
    if not root.exists():
        make_dataset(root, repo_id=REPO_ID, episodes=2, frames=48, cameras=("front", "wrist"), image_hw=(64, 64))
    fastwam_cli(
        [
            "cache",
            f"--dataset.repo_id={REPO_ID}",
            f"--dataset.root={root}",
            "--dataset.video_backend=pyav",
            f"--policy.preset={config}",
            "--policy.device=cpu",
            "--num_workers=0",
        ]
    )


def run_variant(variant: str, workdir: Path, config: str, batch_size: int, steps: int, warmup: int) -> dict:
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata  # noqa: PLC0415
    from lerobot.datasets.factory import resolve_delta_timestamps  # noqa: PLC0415
    from lerobot.utils.feature_utils import dataset_to_policy_features  # noqa: PLC0415

    from lerobot_fastwam import FastWAMConfig, FastWAMPolicy  # noqa: PLC0415
    from lerobot_fastwam.configuration_fastwam import PRESETS  # noqa: PLC0415

    torch.manual_seed(0)
    root = workdir / "dataset"
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    features = dataset_to_policy_features(meta.features)
    inputs = {k: f for k, f in features.items() if k != "action"}
    outputs = {"action": features["action"]}
    plugin_config = FastWAMConfig(
        preset=config,
        device="cpu",
        input_features=inputs,
        output_features=outputs,
        use_latent_cache=variant == "plugin_cached",
    )
    if variant == "builtin":
        from lerobot_fastwam.testing.builtin_offline import build_builtin_policy  # noqa: PLC0415

        p = PRESETS[config]
        policy = build_builtin_policy(
            meta.features["action"]["shape"][0],
            meta.features["observation.state"]["shape"][0],
            p["image_size"],
            2,
            num_layers=p["num_layers"],
            num_heads=p["num_heads"],
            head_dim=p["head_dim"],
            video_ffn_dim=p["video_ffn_dim"],
            action_hidden_dim=p["action_hidden_dim"],
            action_ffn_dim=p["action_ffn_dim"],
            text_dim=p["text_dim"],
            freq_dim=p["freq_dim"],
            text_max_length=plugin_config.text_max_length,
            vae_base_dim=plugin_config.random_vae_base_dim,
            text_encoder_layers=plugin_config.random_text_encoder_layers,
            seed=None,
        )
        # The built-in derives its camera keys from the dataset: give it this dataset's (sorted, as it does).
        policy.config.set_dataset_feature_metadata(meta.features)
    else:
        policy = FastWAMPolicy(plugin_config, dataset_meta=meta)
    delta = resolve_delta_timestamps(plugin_config, meta)
    dataset = LeRobotDataset(REPO_ID, root=root, delta_timestamps=delta, video_backend="pyav")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == warmup + steps:
            break
    policy.train()
    params = policy.get_optim_params()
    optimizer = policy.config.get_optimizer_preset().build(params)  # each policy's own, as lerobot-train
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    frozen_built = variant == "builtin" or "latent_encoder" in getattr(policy, "_modules", {})
    return {
        "variant": variant,
        "step_ms": round(step * 1e3, 1),
        "samples_per_s": round(batch_size / step, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "vae_and_umt5_loaded": frozen_built,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=["tiny", "small"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help="(internal) run one variant, print JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fastwam_tp_"))
    if args.variant:
        print(json.dumps(run_variant(args.variant, workdir, args.config, args.batch_size, args.steps, args.warmup)))
        return
    prepare(workdir, args.config)
    rows = []
    for variant in VARIANTS:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--workdir",
            str(workdir),
            "--config",
            args.config,
            "--batch-size",
            str(args.batch_size),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next(r for r in rows if r["variant"] == "builtin")["samples_per_s"]
    print(f"config {args.config}, batch {args.batch_size}, median of {args.steps} steps after {args.warmup} warm-up")
    print("| variant | step (ms) | samples/s | vs built-in | peak RSS (GiB) | VAE + umT5 loaded |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['step_ms']} | {r['samples_per_s']} | {r['samples_per_s'] / base:.2f}x "
            f"| {r['peak_rss_gib']} | {r['vae_and_umt5_loaded']} |"
        )


if __name__ == "__main__":
    main()
