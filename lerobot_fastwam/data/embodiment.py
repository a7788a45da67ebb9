"""One checkpoint, another arm: pi0.5's relative actions and padded action/state sizes (``config.max_*_dim``).

The network pads and cuts (``network/model.py``); LeRobot's own steps make actions relative
(``processor_fastwam.py``). What is left depends on the training dataset, and is fixed here when a policy is built
for training on it (LeRobot's ``make_policy`` passes its metadata only then):

- relative actions are normalised with the statistics of relative actions. ``lerobot-train`` normalises with the
  dataset's ``meta/stats.json``, which holds those of the absolute actions unless the user recomputed them
  (``lerobot-edit-dataset --operation.type recompute_stats --operation.relative_action true``); so the policy
  replaces them in the dataset's metadata, which ``lerobot-train`` reads after building the policy.
- with ``max_state_dim`` the state size is the dataset's: ``--policy.path`` keeps the checkpoint's input features
  (the old arm's state), while ``make_policy`` takes the action feature from the dataset.
"""

from __future__ import annotations

import logging

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_STATE

logger = logging.getLogger(__name__)


def check_embodiment(config) -> None:
    """Refuse padded sizes below the robot's, and relative actions without a state to subtract."""
    action_dim = None if config.action_feature is None else config.action_dim
    for name, size, maximum in (
        ("action", action_dim, config.max_action_dim),
        ("state", config.state_dim, config.max_state_dim),
    ):
        if size is not None and maximum is not None and size > maximum:
            raise ValueError(
                f"The robot's {name} has {size} values, more than max_{name}_dim={maximum}. Set "
                f"--policy.max_{name}_dim to at least {size} for a new policy; a checkpoint built for {maximum} "
                f"cannot take more."
            )
    if config.use_relative_actions and action_dim is not None and (config.state_dim or 0) < action_dim:
        raise ValueError(
            f"use_relative_actions subtracts the state's first {action_dim} values from the action's, but the "
            f"state has {config.state_dim or 'no'} values. Train with absolute actions (--policy.use_relative_actions"
            "=false), or on a dataset whose `observation.state` starts with the joint positions the actions command."
        )


def follow_dataset_state(config, dataset_meta) -> None:
    """With ``max_state_dim``, take the state size of the training dataset (the network pads it)."""
    state = (getattr(dataset_meta, "features", None) or {}).get(OBS_STATE)
    if config.max_state_dim is not None and state is not None and OBS_STATE in config.input_features:
        config.input_features[OBS_STATE] = PolicyFeature(FeatureType.STATE, tuple(state["shape"]))


def use_relative_action_stats(config, dataset_meta) -> None:
    """With ``use_relative_actions``, replace the training dataset's action statistics (in its metadata, read by
    ``lerobot-train`` next) with those of the relative actions the policy learns: LeRobot's
    ``compute_relative_action_stats`` over every chunk of ``chunk_size`` actions minus the state at its start."""
    stats = getattr(dataset_meta, "stats", None)
    if not config.use_relative_actions or stats is None:
        return
    from lerobot.datasets import LeRobotDataset  # noqa: PLC0415  (slow import)
    from lerobot.datasets.compute_stats import compute_relative_action_stats  # noqa: PLC0415

    logger.info("Fast-WAM: computing the statistics of relative actions of %s.", dataset_meta.repo_id)
    dataset = LeRobotDataset(dataset_meta.repo_id, root=dataset_meta.root)
    exclude = list(config.relative_exclude_joints)
    stats[ACTION] = compute_relative_action_stats(dataset.hf_dataset, dataset_meta.features, config.chunk_size, exclude)
