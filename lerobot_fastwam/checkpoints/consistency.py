"""A checkpoint against the config and data it is loaded with: its cameras, and the normalisation statistics its
policy will run on.

Neither is caught by the weights. Fast-WAM tiles every camera into one image before the VAE, so its weights fit any
set of cameras, and a checkpoint loaded into a config of other cameras runs on images it never saw. LeRobot's
normaliser broadcasts statistics of the wrong length (one value: every joint normalised and clamped to one range)
or fails with a torch broadcast error at the first action. Both are refused here, naming where the statistics came
from: the checkpoint's processor files, or (fine-tuning, training) the dataset's ``meta/stats.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
from safetensors.torch import load_file

from .builtin_config import checkpoint_file

STAT_NAMES = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")  # per-element; not "count"

# The statistics each normalisation reads; the action guard also clamps to the action's min/max.
_READS = {
    NormalizationMode.MEAN_STD: ("mean", "std"),
    NormalizationMode.MIN_MAX: ("min", "max"),
    NormalizationMode.QUANTILES: ("q01", "q99"),
    NormalizationMode.QUANTILE10: ("q10", "q90"),
}

PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")
_STATS_STEPS = ("normalizer_processor", "unnormalizer_processor", "fastwam_plugin_action_guard")  # steps with stats

CHECKPOINT_SHAPE_FIX = (
    "The checkpoint's processors were saved for another robot (another action or state layout) or are damaged: use "
    "the checkpoint trained for this robot (re-download it if it is damaged), or fine-tune it on this robot's dataset "
    "with lerobot-train, which takes the dataset's statistics."
)
CHECKPOINT_NAN_FIX = (
    "Training could not have run on it, so the file is damaged or was edited: re-download the checkpoint, or save "
    "it again from its training run."
)


def saved_cameras(saved: dict[str, Any]) -> list[str]:
    """The cameras of a saved config in tiling order, as ``FastWAMConfig.ordered_camera_keys`` gives them."""
    if saved.get("camera_keys"):
        return list(saved["camera_keys"])
    features = saved.get("input_features") or {}
    return sorted(key for key, f in features.items() if isinstance(f, dict) and f.get("type") == "VISUAL")


def check_cameras(saved: dict[str, Any], config, source: str) -> None:
    """Refuse a config whose cameras (names, tiling order, layout) differ from those the checkpoint was trained on."""
    trained, layout = saved_cameras(saved), saved.get("camera_layout", "side_by_side")
    requested = config.ordered_camera_keys
    if not trained or (trained, layout) == (requested, config.camera_layout):
        return
    raise ValueError(
        f"{source} was trained on the cameras {trained} tiled {layout!r}, but the config it is loaded into has "
        f"{requested} tiled {config.camera_layout!r}. The weights fit any cameras, so it would run, on images it "
        "never saw. Load it with its own camera features (drop the --policy.input_features / camera_keys / "
        "camera_layout overrides) and map your cameras to its names with --rename_map; to fine-tune it on other "
        "cameras on purpose, set input_features / camera_keys in a copy of its config.json."
    )


def check_stats(
    stats: dict[str, dict[str, Any]],
    features: dict[str, PolicyFeature],
    norm_map: dict[str, Any],
    source: str,
    shape_fix: str,
    nan_fix: str | None,
) -> None:
    """Refuse statistics of a normalised (or clamped) feature whose shape is not the feature's, and NaN/Inf in those
    the normaliser and the action guard read (``nan_fix`` None: not checked). Images (``(C, 1, 1)``) are not."""
    for key, feature in features.items():
        if feature.type is FeatureType.VISUAL or key not in stats:
            continue
        mode = NormalizationMode(norm_map.get(feature.type.value, NormalizationMode.IDENTITY))
        read = set(_READS.get(mode, ())) | ({"min", "max"} if feature.type is FeatureType.ACTION else set())
        names = STAT_NAMES if mode is not NormalizationMode.IDENTITY else sorted(read)
        for name in (n for n in names if n in stats[key]):
            value = torch.as_tensor(stats[key][name], dtype=torch.float64)
            if tuple(value.shape) != tuple(feature.shape):
                count = f"{value.numel()} value{'s' * (value.numel() != 1)} (shape {tuple(value.shape)})"
                raise ValueError(
                    f"{source}: `{key}` {name} has {count}, but the policy's `{key}` has {math.prod(feature.shape)} "
                    f"(shape {tuple(feature.shape)}); LeRobot's normaliser would broadcast it (a single value "
                    f"normalises and clamps every joint to one range) or fail at the first step. {shape_fix}"
                )
            bad = (~value.isfinite()).nonzero().flatten().tolist() if nan_fix and name in read else []
            if bad:
                raise ValueError(f"{source}: `{key}` {name}[{bad[0]}] is {value[bad[0]].item()}. {nan_fix}")


def dataset_source(meta=None) -> tuple[str, str]:
    """(source, fix) for statistics that come from a LeRobot dataset (``meta``: its metadata, when known)."""
    repo = getattr(meta, "repo_id", None)
    where = f"{meta.root}/meta/stats.json" if getattr(meta, "root", None) else "meta/stats.json"
    name = repo or "<dataset>"
    return (
        f"The statistics of the dataset {repo} ({where})"
        if repo
        else f"The dataset statistics (the dataset's {where})",
        f"Recompute them: lerobot-edit-dataset --repo_id {name} --operation.type recompute_stats (it writes "
        f"{name}_recomputed_stats; add --new_repo_id {name} --operation.overwrite true to fix the dataset in place).",
    )


def saved_processor_stats(path, hub_kwargs: dict[str, Any]) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """(state file, stats by feature) of each normaliser and action guard saved with a checkpoint's processors."""
    for name in PROCESSOR_FILES:
        config_file = checkpoint_file(path, name, hub_kwargs)
        for step in json.loads(Path(config_file).read_text()).get("steps", []) if config_file else []:
            kind, state_name = step.get("registry_name"), step.get("state_file")
            state_file = kind in _STATS_STEPS and state_name and checkpoint_file(path, state_name, hub_kwargs)
            if not state_file:
                continue
            state = load_file(state_file)
            if kind == "fastwam_plugin_action_guard":
                yield state_name, {"action": {"min": state["action_min"], "max": state["action_max"]}}
                continue
            stats: dict[str, dict[str, Any]] = {}
            for flat, value in state.items():
                feature, _, stat = flat.rpartition(".")
                stats.setdefault(feature, {})[stat] = value
            yield state_name, stats


def check_loaded_stats(path, config, kwargs: dict[str, Any]) -> None:
    """The statistics a policy loaded by ``from_pretrained`` runs on: its checkpoint's processor files, or the
    dataset statistics LeRobot's ``make_policy`` passes when training, which replace the checkpoint's (the
    action guard's range too: ``safety.clamp_to_unnormalizer_range``), so a checkpoint of another arm
    (``max_action_dim``) fine-tunes on this one."""
    features = {**config.input_features, **config.output_features}
    norm_map = config.normalization_mapping
    if kwargs.get("dataset_stats") is not None:
        source, fix = dataset_source(kwargs.get("dataset_meta"))
        check_stats(kwargs["dataset_stats"], features, norm_map, source, fix, fix)
        return
    for name, stats in saved_processor_stats(path, kwargs):
        source = f"The processor file {name} of the checkpoint {path}"
        check_stats(stats, features, norm_map, source, CHECKPOINT_SHAPE_FIX, CHECKPOINT_NAN_FIX)
