"""``lerobot-fastwam``: command-line tools around the policy.

lerobot-fastwam convert CHECKPOINT.pt --dataset-stats dataset_stats.json --output DIR
lerobot-fastwam demo --task button-press-topdown-v3 --output DIR [--baseline act]
lerobot-fastwam cache --dataset.repo_id=ID [--dataset.root=DIR] [--policy.<option>=... as for training]
lerobot-fastwam serve [--host=H --port=P ... as for python -m lerobot.async_inference.policy_server]
lerobot-fastwam memory --preset wan2.2-ti2v-5b [--recipe full frozen-video lora] [--batch-size N] [--gpu-memory-gb 24]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch
from lerobot.configs.default import DatasetConfig

from .configuration_fastwam import FastWAMConfig

# The official benchmarks' data layouts (configs/data/libero_2cam.yaml, robotwin.yaml); explicit flags win.
CONVERSION_DEFAULTS = {
    "libero": {
        "camera_keys": ["observation.images.image", "observation.images.image2"],
        "camera_layout": "side_by_side",
        "image_size": [224, 448],
        "norm": "min/max",
        "n_action_steps": 10,
        "libero_gripper": True,
    },
    "robotwin": {
        "camera_keys": [
            "observation.images.cam_high",
            "observation.images.cam_left_wrist",
            "observation.images.cam_right_wrist",
        ],
        "camera_layout": "top_and_wrists",
        "image_size": [384, 320],
        "norm": "z-score",
        "n_action_steps": 24,
        "libero_gripper": False,
    },
}


def convert(args: argparse.Namespace) -> Path:
    """Official ``.pt`` + ``dataset_stats.json`` -> a plugin checkpoint directory (config, safetensors,
    processors with the normalisation stats)."""
    from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.fastwam.processor_fastwam import FastWAMActionToggleProcessorStep
    from lerobot.utils.constants import ACTION, OBS_STATE
    from safetensors.torch import save_file

    from .camera_layout import tile_sizes
    from .checkpoint_conversion import (
        OFFICIAL_NORM_MODES,
        ConversionError,
        architecture_from_weights,
        check_checkpoint_keys,
        load_official_stats,
        official_shapes,
        read_official_checkpoint,
        wan_layout_to_plugin,
    )
    from .processor_fastwam import make_fastwam_pre_post_processors

    # Every input is checked before anything is written (an empty existing --output directory is fine).
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and (args.overwrite or not any(out.iterdir()))):
        kind = "a non-empty directory" if out.is_dir() else "a file"
        raise ConversionError(
            f"--output {out} is {kind}: pass a new or empty directory"
            + (", or add --overwrite to replace the converted files in it." if out.is_dir() else ".")
        )
    state = read_official_checkpoint(args.checkpoint)
    arch = architecture_from_weights(state, args.num_heads)
    action_dim, state_dim = arch.pop("action_dim"), arch.pop("state_dim")
    for key, value in CONVERSION_DEFAULTS[args.benchmark].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    stats = load_official_stats(args.dataset_stats, args.norm, action_dim, state_dim)
    height, width = args.image_size
    cameras = args.camera_keys
    mode = NormalizationMode[OFFICIAL_NORM_MODES[args.norm]]
    try:
        tiles = tile_sizes(args.camera_layout, (height, width), len(cameras))
        inputs = {key: PolicyFeature(FeatureType.VISUAL, (3, *size)) for key, size in zip(cameras, tiles, strict=True)}
        if state_dim is not None:
            inputs[OBS_STATE] = PolicyFeature(FeatureType.STATE, (state_dim,))
        config = FastWAMConfig(
            input_features=inputs,
            output_features={ACTION: PolicyFeature(FeatureType.ACTION, (action_dim,))},
            camera_keys=list(cameras),
            camera_layout=args.camera_layout,
            image_size=(height, width),
            n_action_steps=args.n_action_steps,
            normalization_mapping={"VISUAL": NormalizationMode.IDENTITY, "STATE": mode, "ACTION": mode},
            pretrained_model_id=args.wan_model_id,
            text_max_length=args.text_max_length,
            dtype=args.dtype,
            push_to_hub=False,
            **arch,
        )
        config.validate_features()
    except ValueError as err:
        raise ConversionError(f"The options give no valid Fast-WAM config: {err}") from err
    check_checkpoint_keys(state, official_shapes(config, action_dim, state_dim))
    weights = wan_layout_to_plugin(state)
    pre, post = make_fastwam_pre_post_processors(config, dataset_stats=stats)
    if args.libero_gripper:  # the official LIBERO eval maps the gripper back: -1 open, +1 close
        post.steps.insert(-1, FastWAMActionToggleProcessorStep(toggle_dimensions=[-1]))

    out.mkdir(parents=True, exist_ok=True)
    config._save_pretrained(out)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    pre.save_pretrained(out)
    post.save_pretrained(out)
    logging.info("Converted %s -> %s (%d tensors).", args.checkpoint, out, len(weights))
    return out


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

    from .frozen_encoders import build_latent_encoder, build_prompt_encoder
    from .latent_cache import build_cache

    cfg = draccus.parse(CacheConfig, args=argv)
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


ASYNC_INSTALL_HINT = 'pip install "lerobot_policy_fastwam[async]"'


def serve(argv: list[str]) -> None:
    """LeRobot's async inference policy server (gRPC) with the plugin loaded, so that LeRobot's unmodified robot
    client (``python -m lerobot.async_inference.robot_client --policy_type=fastwam ...``) can use a Fast-WAM
    checkpoint. ``argv`` are LeRobot's own ``PolicyServerConfig`` options (``--host``, ``--port``, ``--fps``,
    ``--inference_latency``, ``--obs_queue_timeout``); LeRobot's ``serve`` runs until Ctrl-C or SIGTERM.

    Two things differ from ``python -m lerobot.async_inference.policy_server``: this package is imported (so
    ``fastwam`` and its checkpoints resolve to the plugin: ``plugin.py``), and ``"fastwam"`` is appended to
    ``lerobot.async_inference.constants.SUPPORTED_POLICIES``, the hard-coded list the server checks the client's
    policy type against. ``policy_server`` imports that list by name, so both modules hold the same list object
    and appending to it (in this process only) is the whole change; the server's code runs unmodified.
    """
    import signal
    import threading

    try:
        from lerobot.async_inference import policy_server
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("grpc", "google"):
            raise
        sys.exit(f"lerobot-fastwam serve: error: gRPC is not installed ({err}). Install it with: {ASYNC_INSTALL_HINT}")
    import draccus
    from lerobot.async_inference.configs import PolicyServerConfig

    if "fastwam" not in policy_server.SUPPORTED_POLICIES:
        policy_server.SUPPORTED_POLICIES.append("fastwam")
    config = draccus.parse(PolicyServerConfig, args=argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # SIGTERM (kill, docker stop) stops the server as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        policy_server.serve(config)  # LeRobot's entry point: given a config, it parses nothing itself
    except KeyboardInterrupt:
        logging.info("lerobot-fastwam serve: stopped.")
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo  # noqa: PLC0415

        demo(argv[1:])
        return
    if argv[:1] == ["cache"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"Wrote {cache(argv[1:])}")
        return
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    if argv[:1] == ["memory"]:
        from .memory_planner import main as memory  # noqa: PLC0415

        memory(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="lerobot-fastwam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="Meta-World: record, cache, train, evaluate, report (options: --help after it)")
    sub.add_parser("cache", help="encode a dataset's training windows and tasks once (options: --help after it)")
    sub.add_parser("serve", help="LeRobot's async inference policy server, accepting fastwam (--help after it)")
    sub.add_parser("memory", help="plan the GPU memory of training and inference (options: --help after it)")
    c = sub.add_parser("convert", help="official .pt checkpoint -> plugin checkpoint directory")
    c.add_argument("checkpoint", help="official checkpoint, e.g. libero_uncond_2cam224.pt")
    c.add_argument("--dataset-stats", required=True, help="the dataset_stats.json that came with it")
    c.add_argument("--output", required=True, help="directory to write (usable as --policy.path)")
    c.add_argument(
        "--benchmark",
        default="libero",
        choices=sorted(CONVERSION_DEFAULTS),
        help="defaults for the options below from the official data config of this benchmark",
    )
    c.add_argument(
        "--camera-keys",
        nargs="+",
        default=None,
        help="cameras in tiling order (LeRobot LIBERO: image, image2; RoboTwin: top, left, right)",
    )
    c.add_argument("--camera-layout", default=None, choices=["side_by_side", "top_and_wrists"])
    c.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"))
    c.add_argument(
        "--norm",
        default=None,
        choices=["min/max", "z-score"],
        help="the official norm_default_mode (LIBERO: min/max, RoboTwin: z-score)",
    )
    c.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads, not recorded in the weights (default: the released Wan model's of that "
        "width, 24 for Wan2.2-TI2V-5B)",
    )
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output directory, replacing the converted files in it",
    )
    c.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float16", "float32"],
        help="compute dtype of the converted policy",
    )
    c.add_argument("--text-max-length", type=int, default=128, help="umT5 context length (official: 128)")
    c.add_argument("--n-action-steps", type=int, default=None, help="actions executed per chunk (10 / 24)")
    c.add_argument(
        "--libero-gripper",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="map the gripper action back to LIBERO's convention in the postprocessor",
    )
    c.add_argument(
        "--wan-model-id",
        default="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        help="Wan2.2 Diffusers repo (id or local dir) for the frozen VAE and text encoder",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "convert":
        from .checkpoint_conversion import ConversionError

        try:
            with torch.no_grad():
                path = convert(args)
        except ConversionError as err:  # a refused input: its message names the problem and the fix
            parser.exit(2, f"lerobot-fastwam convert: error: {err}\n")
        print(f"Wrote {path}. Use it with --policy.path={path}")


if __name__ == "__main__":
    main()
