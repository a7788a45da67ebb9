"""Pre/post-processing pipelines of the Fast-WAM policy.

Pre: rename -> add batch dim -> device -> camera resize -> current state -> relative actions -> normalise
(state/action; images stay in [0, 1]).
Post: unnormalise -> action guard (refuse non-finite, clamp to the training range; ``safety.py``) -> absolute
actions -> CPU.
The relative/absolute steps are LeRobot's own, in pi0.5's order (raw -> relative -> normalise ... unnormalise ->
absolute) and always present, switched by ``use_relative_actions`` (``lerobot-train`` switches them on for
``--policy.path`` with ``--policy.use_relative_actions=true``). The guard clamps in the space the action statistics
describe: with relative actions, the offset from the state.
Statistics of the wrong shape for their feature are refused when the pipelines are built
(``checkpoints/consistency.py``; a checkpoint's are checked when its policy loads).
The step names LeRobot's scripts override (``rename_observations_processor``, ``device_processor``) are
LeRobot's own steps; our steps have names of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AbsoluteActionsProcessorStep,
    ObservationProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    RelativeActionsProcessorStep,
    make_default_policy_processor_steps,
    make_policy_processor_pipelines,
)
from lerobot.utils.constants import OBS_STATE

from .checkpoints.consistency import check_stats, dataset_source
from .configuration_fastwam import FastWAMConfig
from .data.camera_layout import fit_camera
from .safety import FastWAMActionGuardStep, action_range

logger = logging.getLogger(__name__)


@ProcessorStepRegistry.register(name="fastwam_plugin_camera_resize")
@dataclass
class FastWAMCameraResizeStep(ObservationProcessorStep):
    """Fit each camera to its tile of the trained layout (``camera_layout.fit_camera``): its crop box, then an
    aspect-preserving resize with centre crop or pad; saved with the checkpoint, so training and rollout see
    the same pixels.

    LeRobot's ``ImageCropResizeProcessorStep`` is not used: it resizes every camera to one size (tiles differ
    per camera in ``top_and_wrists``) and stretches; and the latent cache encodes dataset frames outside any
    pipeline, so the one function must serve both.

    Args:
        camera_sizes: camera key -> [height, width] of its tile.
        fit: "crop" or "pad" (``--policy.camera_fit``).
        crops: camera key -> crop box [top, left, height, width] (``--policy.camera_crops``).
        crop_sizes: camera key -> [height, width] of the images its crop box was set for.
        layout: read from processors saved before ``fit`` existed; unused.
    """

    camera_sizes: dict[str, list[int]] = field(default_factory=dict)
    fit: str = "crop"
    crops: dict[str, list[int]] = field(default_factory=dict)
    crop_sizes: dict[str, list[int]] = field(default_factory=dict)
    layout: str | None = None

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        for key, (height, width) in self.camera_sizes.items():
            image = observation.get(key)
            if isinstance(image, torch.Tensor) and (tuple(image.shape[-2:]) != (height, width) or key in self.crops):
                observation[key] = fit_camera(
                    image, key, height, width, self.fit, self.crops.get(key), self.crop_sizes.get(key)
                )
        return observation

    def get_config(self) -> dict[str, Any]:
        return {
            "camera_sizes": {k: list(v) for k, v in self.camera_sizes.items()},
            "fit": self.fit,
            "crops": {k: list(v) for k, v in self.crops.items()},
            "crop_sizes": {k: list(v) for k, v in self.crop_sizes.items()},
        }

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        observations = features.get(PipelineFeatureType.OBSERVATION, {})
        for key, (height, width) in self.camera_sizes.items():
            if key in observations:
                observations[key] = PolicyFeature(observations[key].type, (3, height, width))
        return features


@ProcessorStepRegistry.register(name="fastwam_plugin_current_state")
@dataclass
class FastWAMCurrentStateStep(ObservationProcessorStep):
    """Keep the current state of a training sample's ``[B, T, S]`` states (LeRobot loads the state at every video
    frame; the policy reads the first, the current one), so that LeRobot's relative-action step subtracts it from
    the chunk. A robot's ``[B, S]`` passes unchanged."""

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        state = observation.get(OBS_STATE)
        if isinstance(state, torch.Tensor) and state.ndim == 3:
            observation[OBS_STATE] = state[:, 0]
        return observation

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def make_fastwam_pre_post_processors(
    config: FastWAMConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]], PolicyProcessorPipeline[PolicyAction, PolicyAction]
]:
    # LeRobot's normaliser would broadcast statistics of a wrong length, or fail at the first step; non-finite ones
    # would be found only at the first step, blamed on the normalised input.
    if dataset_stats is not None:
        features = {**config.input_features, **config.output_features}
        source, fix = dataset_source()
        check_stats(dataset_stats, features, config.normalization_mapping, source, fix, nan_fix=fix)
    # Images are not normalised: the VAE boundary maps [0, 1] to [-1, 1] itself.
    steps = make_default_policy_processor_steps(config, dataset_stats)
    sizes = {key: list(size) for key, size in config.camera_tile_sizes.items()}
    crops = {key: list(config.camera_crops[key]) for key in sizes if key in (config.camera_crops or {})}
    resize = FastWAMCameraResizeStep(
        camera_sizes=sizes,
        fit=config.camera_fit,
        crops=crops,
        crop_sizes={key: list(config.camera_crop(key)[1]) for key in crops},
    )
    bounds = action_range(dataset_stats)
    guard = FastWAMActionGuardStep(
        margin=config.action_clamp_margin,
        action_min=None if bounds is None else bounds[0],
        action_max=None if bounds is None else bounds[1],
    )
    relative = RelativeActionsProcessorStep(
        enabled=config.use_relative_actions,
        exclude_joints=list(config.relative_exclude_joints),
        action_names=config.action_feature_names,
    )
    absolute = AbsoluteActionsProcessorStep(enabled=config.use_relative_actions, relative_step=relative)
    return make_policy_processor_pipelines(
        input_steps=[
            steps.rename_observations,
            steps.add_batch_dim,
            steps.to_device,
            resize,
            FastWAMCurrentStateStep(),
            relative,
            steps.normalize,
        ],
        output_steps=[steps.unnormalize, guard, absolute, steps.to_cpu],
    )
