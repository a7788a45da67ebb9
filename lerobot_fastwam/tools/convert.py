"""``lerobot-fastwam convert``: an official ``.pt`` checkpoint and its ``dataset_stats.json`` -> a plugin checkpoint
directory (config, safetensors, processors with the normalisation statistics), usable as ``--policy.path``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..configuration_fastwam import FastWAMConfig

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

    from ..checkpoints.official import (
        OFFICIAL_NORM_MODES,
        WAN_HEADS,
        ConversionError,
        architecture_from_weights,
        check_checkpoint_keys,
        load_official_stats,
        official_shapes,
        read_official_checkpoint,
        read_run_config,
    )
    from ..checkpoints.wan_layout import wan_layout_to_plugin
    from ..checkpoints.weights import save_weights
    from ..data.camera_layout import tile_sizes
    from ..processor_fastwam import make_fastwam_pre_post_processors

    # Every input is checked before anything is written (an empty existing --output directory is fine).
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and (args.overwrite or not any(out.iterdir()))):
        kind = "a non-empty directory" if out.is_dir() else "a file"
        raise ConversionError(
            f"--output {out} is {kind}: pass a new or empty directory"
            + (", or add --overwrite to replace the converted files in it." if out.is_dir() else ".")
        )
    state = read_official_checkpoint(args.checkpoint)
    run = read_run_config(args.checkpoint)
    arch = architecture_from_weights(state, args.num_heads, run)
    if run is None and args.num_heads is not None and WAN_HEADS.get(arch["num_heads"] * arch["head_dim"]) is None:
        logging.info(
            "The weights do not record the head count; --num-heads %d is taken as given (no config.yaml of the "
            "training run next to %s to check it against).",
            args.num_heads,
            args.checkpoint,
        )
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
    save_weights(weights, out / "model.safetensors")
    pre.save_pretrained(out)
    post.save_pretrained(out)
    logging.info("Converted %s -> %s (%d tensors).", args.checkpoint, out, len(weights))
    return out
