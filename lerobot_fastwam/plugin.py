"""What importing ``lerobot_fastwam`` changes in LeRobot, and why. ``install()`` (run by the package's
``__init__``, which LeRobot's plugin discovery imports through ``lerobot_policy_fastwam``) does five things:

1. **Policy type.** ``--policy.type=fastwam`` resolves to this plugin's ``FastWAMConfig`` in every LeRobot script
   (lerobot-train, lerobot-eval, lerobot-rollout, ``get_policy_class``, ``make_pre_post_processors``),
   replacing LeRobot's built-in ``lerobot.policies.fastwam`` in ``PreTrainedConfig``'s choice registry. The
   built-in's config module is imported first, so that its own registration can never run later and undo ours.
2. **Built-in checkpoints.** ``PreTrainedConfig.from_pretrained``, the one place every LeRobot entry point parses
   a checkpoint's config (``--policy.path``), translates a config saved by the built-in fastwam to the plugin's
   fields in a temporary copy, so built-in checkpoints load unchanged; other configs go to LeRobot's own code.
   It also reports an unreadable or refused ``config.json`` with its cause instead of draccus' bare
   "Couldn't instantiate class".
3. **Optimizer presets.** ``fastwam_fused_adamw`` (``FusedAdamWConfig``) and ``fastwam_adamw8bit``
   (``AdamW8bitConfig``, ``--policy.optimizer_type=adamw_8bit``) are registered with LeRobot's ``OptimizerConfig``,
   so ``lerobot-train`` can build them and resume checkpoints that name them. They live in ``optim.py``, which
   registers them when ``configuration_fastwam`` imports it (the config names its optimizer preset).
4. **Cached training decodes no frames.** LeRobot's dataset reader decodes every video key of every sample (the
   window's frames and the current one), although a policy training from the latent cache reads latents by
   index and discards them all. ``DatasetReader._get_query_timestamps`` asks for no frames when the dataset's
   metadata carries the mark a policy sets on finding its cache (``data/latent_cache.skip_frame_decoding``);
   unmarked datasets, and marked ones with ``--dataset.image_transforms`` (LeRobot transforms every camera of
   a sample), are read as before. The ``*_is_pad`` flags come from the table, not the video, and are kept.
5. **A fine-tuned checkpoint clamps to its own dataset's range.** ``DataProcessorPipeline.from_pretrained`` gives
   the post-processor's action guard the action range of its unnormaliser (``safety.clamp_to_unnormalizer_range``):
   the same for a checkpoint as saved, the new dataset's when ``lerobot-train --policy.path`` overrides the
   unnormaliser's statistics (another arm's joints, relative actions), which LeRobot does not know to do for the
   guard.
"""

from __future__ import annotations

import json
import logging

import draccus
import lerobot.policies.fastwam.configuration_fastwam  # noqa: F401  (the built-in registers first; see 1.)
from lerobot.configs import PreTrainedConfig

from .configuration_fastwam import FastWAMConfig
from .data.latent_cache import FRAMES_FROM_CACHE
from .safety import clamp_to_unnormalizer_range

logger = logging.getLogger(__name__)


def install() -> None:
    if _register_policy_type():
        logger.info(
            "lerobot-fastwam: policy type 'fastwam' now resolves to the lerobot_fastwam plugin "
            "(replacing LeRobot's built-in lerobot.policies.fastwam)."
        )
    _patch_config_loading()
    _patch_dataset_reader()
    _patch_processor_loading()


def _register_policy_type() -> bool:
    """Returns True the first time the plugin takes the type over."""
    registry = PreTrainedConfig._choice_registry
    replaced = registry.get("fastwam") is not FastWAMConfig
    registry["fastwam"] = FastWAMConfig
    return replaced


def _patch_config_loading() -> None:
    original = PreTrainedConfig.from_pretrained.__func__
    if getattr(original, "_fastwam_translates", False):
        return

    def from_pretrained(cls, pretrained_name_or_path, **kwargs):
        from .checkpoints.builtin_config import load_translated_builtin_config  # noqa: PLC0415

        try:
            with load_translated_builtin_config(pretrained_name_or_path, kwargs) as path:
                return original(cls, path, **kwargs)
        except (json.JSONDecodeError, draccus.utils.ParsingError) as err:
            # draccus reports "Couldn't instantiate class"; the reason (a refused value) is its cause.
            cause = f" ({type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ else ""
            raise ValueError(
                f"Cannot read the policy config.json of {pretrained_name_or_path}: {err}{cause}. Fix that value (in "
                "the file or the --policy.* overrides), or re-download / re-save the checkpoint if it is damaged."
            ) from err

    from_pretrained._fastwam_translates = True
    from_pretrained.__doc__ = original.__doc__
    PreTrainedConfig.from_pretrained = classmethod(from_pretrained)


def _patch_dataset_reader() -> None:
    from lerobot.datasets.dataset_reader import DatasetReader  # noqa: PLC0415

    original = DatasetReader._get_query_timestamps
    if getattr(original, "_fastwam_skips_cached_frames", False):
        return

    def _get_query_timestamps(self, current_ts, query_indices=None):
        if getattr(self._meta, FRAMES_FROM_CACHE, False) and self._image_transforms is None:
            return {}  # no video key, no decoding
        return original(self, current_ts, query_indices)

    _get_query_timestamps._fastwam_skips_cached_frames = True
    _get_query_timestamps.__doc__ = original.__doc__
    DatasetReader._get_query_timestamps = _get_query_timestamps


def _patch_processor_loading() -> None:
    from lerobot.processor import DataProcessorPipeline  # noqa: PLC0415

    original = DataProcessorPipeline.from_pretrained.__func__
    if getattr(original, "_fastwam_clamps_to_unnormalizer", False):
        return

    def from_pretrained(cls, *args, **kwargs):
        pipeline = original(cls, *args, **kwargs)
        clamp_to_unnormalizer_range(pipeline.steps)
        return pipeline

    from_pretrained._fastwam_clamps_to_unnormalizer = True
    from_pretrained.__doc__ = original.__doc__
    DataProcessorPipeline.from_pretrained = classmethod(from_pretrained)
