"""The optimizer presets the plugin registers with LeRobot's ``OptimizerConfig``, so that ``lerobot-train`` can
build them and resume checkpoints that name them: ``fastwam_fused_adamw`` (``FusedAdamWConfig``, the default)
and ``fastwam_adamw8bit`` (``AdamW8bitConfig``, ``--policy.optimizer_type=adamw_8bit``). Registration happens
when this module is imported, which ``configuration_fastwam`` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lerobot.policies.fastwam.configuration_fastwam  # noqa: F401  (the built-in registers first; see 1.)
import torch
from lerobot.optim import AdamWConfig, OptimizerConfig


@OptimizerConfig.register_subclass("fastwam_fused_adamw")
@dataclass
class FusedAdamWConfig(AdamWConfig):
    """LeRobot's AdamW with PyTorch's fused implementation: the same update, one kernel over all parameters
    instead of a loop over tensors (CUDA and CPU), falling back to the multi-tensor one elsewhere."""

    def build(self, params):
        kwargs = asdict(self)
        kwargs.pop("grad_clip_norm")
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            return torch.optim.AdamW(params, foreach=True, **kwargs)


@OptimizerConfig.register_subclass("fastwam_adamw8bit")
@dataclass
class AdamW8bitConfig(AdamWConfig):
    """AdamW with bitsandbytes' block-wise 8-bit moment estimates: 2 bytes of optimizer state per trained weight
    instead of 8, which is what lets the 1 B action expert train next to a frozen 5 B video expert on a 24 GB
    card (``lerobot-fastwam memory``). Needs ``pip install "lerobot_policy_fastwam[bnb]"``."""

    def build(self, params):
        try:
            import bitsandbytes  # noqa: PLC0415
        except ImportError as err:
            raise ImportError(
                'optimizer_type=adamw_8bit needs bitsandbytes: pip install "lerobot_policy_fastwam[bnb]" '
                "(or use the default optimizer_type=adamw)."
            ) from err

        class AdamW8bit(bitsandbytes.optim.AdamW8bit):
            """Its ``state_dict`` is one LeRobot can save with safetensors: tensors only (bitsandbytes keeps the
            step count as an int) and none sharing memory (its quantisation maps are shared between weights)."""

            def state_dict(self):
                saved = super().state_dict()
                seen: set[int] = set()

                def savable(value):
                    if isinstance(value, dict):
                        return {k: savable(v) for k, v in value.items()}
                    if isinstance(value, int | float):
                        return torch.tensor(value)
                    if torch.is_tensor(value) and value.data_ptr() in seen:
                        return value.clone()
                    if torch.is_tensor(value):
                        seen.add(value.data_ptr())
                    return value

                saved["state"] = savable(saved["state"])
                return saved

            def load_state_dict(self, state_dict):
                super().load_state_dict(state_dict)
                for state in self.state.values():
                    state["step"] = int(state["step"])

        kwargs = asdict(self)
        kwargs.pop("grad_clip_norm")
        return AdamW8bit(params, **kwargs)
