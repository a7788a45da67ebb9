"""The Fast-WAM section that opens a checkpoint's model card (``FastWAMPolicy.generate_model_card``).

Without the plugin, LeRobot's built-in ``fastwam`` policy reads the checkpoint's config and refuses the plugin's
fields, so the card says first what the checkpoint needs, then how it was trained and how to run it."""

from __future__ import annotations

from importlib.metadata import version

from ..configuration_fastwam import FastWAMConfig


def fastwam_card_section(config: FastWAMConfig, dataset_repo_id: str, steps: int | None) -> str:
    c = config
    path = c.repo_id or "<this checkpoint>"
    cameras = ", ".join(f"`{k}`" for k in c.ordered_camera_keys)
    plugin = version("lerobot_policy_fastwam")
    return (
        "## Fast-WAM (lerobot-fastwam plugin)\n\n"
        f"This checkpoint needs the Fast-WAM plugin next to LeRobot, version {plugin} (it wrote this checkpoint). "
        "The plugin is not on PyPI yet: install it from a checkout of its repository at that version:\n\n"
        f"```bash\npip install /path/to/lerobot-fastwam  # lerobot_policy_fastwam {plugin}\n```\n\n"
        "Without it, LeRobot's built-in `fastwam` policy reads this config and refuses its fields.\n\n"
        f"- Trained on `{dataset_repo_id}`" + (f" for {steps} steps" if steps else "") + f", variant "
        f"`{c.variant}` (video loss weight {c.video_loss_weight:g}), preset `{c.preset}`, "
        f"{c.num_layers} layers, compute dtype {c.dtype}.\n"
        f"- Cameras {cameras} tiled `{c.camera_layout}` into {c.image_size[0]}x{c.image_size[1]} "
        f"(`camera_fit={c.camera_fit}`); chunk {c.chunk_size}, {c.n_action_steps} actions run per chunk.\n"
        f"- Evaluate: `lerobot-eval --policy.path={path} --env.type=<env> --eval.batch_size=1`\n"
        f'- On a robot: `lerobot-rollout --policy.path={path} --robot.type=<robot> --task="..." '
        "--inference.type=rtc`\n\n"
    )
