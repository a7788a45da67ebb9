"""What a cached training run waits for: LeRobot's DataLoader over a demo dataset, with and without frame decoding.

The dataset, delta timestamps, DataLoader and pre-processor are built as ``lerobot-train`` builds them (dataset
first, then the policy with ``dataset.meta``, then the pre-processor); the policy finds the dataset's latent cache.
``decoded`` is the loader before issue #21's fix (every sample decodes its window's frames of every camera and
the pre-processor resizes them, then the policy discards them); ``cached`` is the loader with the policy's mark
on the metadata (no frame decoded). Reported per variant: samples per second delivered by the loader alone
(``--workers`` worker processes, as the demo's ``--num_workers``; the clock starts at the first batch, so worker
start-up is excluded) and the main process's share per batch (uint8 -> float and the pre-processor, which
``lerobot-train`` counts in ``data_s``). The variants run one after the other in one process.

    python benchmarks/loader_throughput.py --root outputs/demo/data/demonstrations \\
        --repo-id local/metaworld_button-press-topdown-v3 --workers 1 --batches 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

VARIANTS = ("decoded", "cached")


def measure(variant: str, args) -> dict:
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata  # noqa: PLC0415
    from lerobot.datasets.factory import resolve_delta_timestamps  # noqa: PLC0415
    from lerobot.utils.feature_utils import dataset_to_policy_features  # noqa: PLC0415

    from lerobot_fastwam import FastWAMConfig, FastWAMPolicy  # noqa: PLC0415
    from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors  # noqa: PLC0415

    meta = LeRobotDatasetMetadata(args.repo_id, root=args.root)
    features = dataset_to_policy_features(meta.features)
    config = FastWAMConfig(
        preset=args.preset,
        device="cpu",
        output_features={"action": features["action"]},
        input_features={k: f for k, f in features.items() if k != "action"},
    )
    delta = resolve_delta_timestamps(config, meta)
    dataset = LeRobotDataset(args.repo_id, root=args.root, delta_timestamps=delta, video_backend="pyav")
    if variant == "cached":
        policy = FastWAMPolicy(config, dataset_meta=dataset.meta)  # finds the cache and marks the metadata
        if policy._latent_cache is None:
            raise SystemExit(f"{args.root} has no latent cache for the {args.preset} preset: run lerobot-fastwam cache")
    pre, _ = make_fastwam_pre_post_processors(config, dataset.meta.stats)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    batches = iter(loader)
    next(batches)  # workers started, first batch ready
    start = time.perf_counter()
    main_ms = []
    for _ in range(args.batches):
        batch = next(batches)
        t0 = time.perf_counter()
        for key in dataset.meta.camera_keys:  # what lerobot-train does to each batch before its pre-processor
            if key in batch and batch[key].dtype == torch.uint8:
                batch[key] = batch[key].to(dtype=torch.float32) / 255.0
        pre(batch)
        main_ms.append(1000 * (time.perf_counter() - t0))
    seconds = time.perf_counter() - start
    frames = sum(len(v) for k, v in (delta or {}).items() if k in dataset.meta.video_keys)
    return {
        "variant": variant,
        "samples_per_s": args.batches * args.batch_size / seconds,
        "main_ms_per_batch": statistics.median(main_ms),
        "frames_per_sample": 0 if variant == "cached" else frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the dataset root (with its fastwam_cache)")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--preset", default="cpu", help="the policy preset the cache was built for")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process's share, as on a machine whose other core trains
    rows = [measure(v, args) for v in args.variants]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"batch {args.batch_size}, {args.workers} worker(s), {args.batches} batches after the first")
    print("| loader | frames decoded per sample | samples/s | main process ms/batch |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['frames_per_sample']} | {row['samples_per_s']:.0f} | "
            f"{row['main_ms_per_batch']:.1f} |"
        )
    if len(rows) == 2:
        print(f"cached / decoded samples per second: {rows[1]['samples_per_s'] / rows[0]['samples_per_s']:.1f}x")


if __name__ == "__main__":
    main()
