"""Reading checkpoints of the other Fast-WAM implementations: all key and config mappings live here.

Two layouts exist besides ours, both in the original Wan naming (``self_attn.q``, ``ffn.0``, ``modulation``):

- LeRobot's built-in ``fastwam`` (``config.json`` + ``model.safetensors``): keys ``model.mot.mixtures.<expert>.*``
  for the embeddings and heads, ``model.mot.layers.<i>.blocks.<expert>.*`` for the blocks (older exports:
  ``model.mot.mixtures.<expert>.blocks.<i>.*``), ``model.proprio_encoder.*``.
- The official code's ``.pt`` (``{"mot": ..., "proprio_encoder": ...}``): ``mixtures.<expert>.blocks.<i>.*`` etc.

The plugin's video expert is diffusers' ``WanTransformer3DModel`` (diffusers naming: ``attn1.to_q``,
``ffn.net.0.proj``, ``scale_shift_table``), and its action expert uses the same block names.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Wan names inside one expert -> diffusers names. Applied to the part after "<expert>.".
_EMBEDDING_NAMES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",  # video output head
    "action_encoder": "action_in",
    "head": "action_out",  # action output head (a plain Linear)
}
_BLOCK_NAMES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # Wan's cross-attention norm is diffusers' norm2
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_EXPERT_PREFIX = {"video": "model.mot.video.", "action": "model.mot.action."}

_BLOCK_KEY = re.compile(r"^(?:model\.)?mot\.layers\.(\d+)\.blocks\.(video|action)\.(.+)$")
_LEGACY_BLOCK_KEY = re.compile(r"^(?:model\.)?mot\.mixtures\.(video|action)\.blocks\.(\d+)\.(.+)$")
_EXPERT_KEY = re.compile(r"^(?:model\.)?mot\.mixtures\.(video|action)\.(.+)$")
_STATE_KEY = re.compile(r"^(?:model\.)?proprio_encoder\.(weight|bias)$")


def _rename(rest: str, table: dict[str, str]) -> str | None:
    """``rest`` is ``<module path>.<param>``; rename the module path by the longest matching entry."""
    module, _, param = rest.rpartition(".")
    if module in table:
        return f"{table[module]}.{param}"
    return None


def _block_param(rest: str) -> str | None:
    if rest == "modulation":
        return "scale_shift_table"
    return _rename(rest, _BLOCK_NAMES)


def _expert_param(expert: str, rest: str) -> str | None:
    if expert == "video" and rest == "head.modulation":
        return "scale_shift_table"
    return _rename(rest, _EMBEDDING_NAMES)


def wan_layout_to_plugin(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a built-in or official Fast-WAM state dict to the plugin's keys. Unknown keys are an error."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new = None
        if m := _BLOCK_KEY.match(key):
            index, expert, rest = m.groups()
            param = _block_param(rest)
            new = param and f"{_EXPERT_PREFIX[expert]}blocks.{index}.{param}"
        elif m := _LEGACY_BLOCK_KEY.match(key):
            expert, index, rest = m.groups()
            param = _block_param(rest)
            new = param and f"{_EXPERT_PREFIX[expert]}blocks.{index}.{param}"
        elif m := _EXPERT_KEY.match(key):
            expert, rest = m.groups()
            param = _expert_param(expert, rest)
            new = param and f"{_EXPERT_PREFIX[expert]}{param}"
        elif m := _STATE_KEY.match(key):
            new = f"model.state_encoder.{m.group(1)}"
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(
            f"Unrecognised Fast-WAM checkpoint keys (not in the built-in or official layout): {unknown[:20]}"
            + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        )
    return out


def is_wan_layout(keys: list[str]) -> bool:
    return any(_EXPERT_KEY.match(k) or _BLOCK_KEY.match(k) for k in keys)


# ----------------------------------------------------------------------------------------------------
# Configs of LeRobot's built-in fastwam -> FastWAMConfig fields

BUILTIN_ONLY_FIELDS = {
    "action_dim", "proprio_dim", "action_horizon", "action_video_freq_ratio", "context_len", "model_id",
    "tokenizer_model_id", "text_encoder_model_id", "base_model_id", "tokenizer_max_len", "load_text_encoder",
    "mot_checkpoint_mixed_attn", "torch_dtype", "inference_seed", "rand_device", "text_cfg_scale",
    "negative_prompt", "sigma_shift", "tiled", "fp32_attention", "use_gradient_checkpointing",
    "toggle_action_dimensions", "video_scheduler", "action_scheduler", "loss", "video_dit_config",
    "action_dit_config",
}


def is_builtin_config(raw: dict[str, Any]) -> bool:
    return "video_dit_config" in raw or "action_horizon" in raw or "action_video_freq_ratio" in raw


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"Cannot translate this LeRobot built-in fastwam config: {message}")


def translate_builtin_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Translate a built-in ``fastwam`` config dict to the plugin's fields.

    Every built-in field is either mapped, checked to hold the only value the plugin implements, or (for
    numerics-only options) mapped with a logged note; anything else raises.
    """
    out = {k: v for k, v in raw.items() if k not in BUILTIN_ONLY_FIELDS}
    video = dict(raw.get("video_dit_config") or {})
    action = dict(raw.get("action_dit_config") or {})
    _require(bool(video) and bool(action), "it has no video_dit_config/action_dit_config.")
    _require(
        list(video.get("patch_size", [1, 2, 2])) == [1, 2, 2] and video.get("in_dim", 48) == video.get("out_dim", 48),
        f"video patch {video.get('patch_size')} / channels {video.get('in_dim')}->{video.get('out_dim')} differ "
        "from Wan2.2-TI2V.",
    )
    _require(
        video.get("video_attention_mask_mode", "first_frame_causal") == "first_frame_causal"
        and not video.get("action_conditioned", False),
        "only the Fast-WAM variant (first_frame_causal video mask, no action conditioning) is supported.",
    )
    _require(video["hidden_dim"] == video["num_heads"] * video["attn_head_dim"], "video hidden != heads x head_dim.")
    for key in ("num_layers", "num_heads", "attn_head_dim", "text_dim", "freq_dim"):
        _require(video[key] == action[key], f"video and action experts differ in {key}.")
    ratio = int(raw.get("action_video_freq_ratio", 4))
    raw_frames = int(raw.get("num_video_frames", 33))
    schedulers = [raw.get("video_scheduler") or {}, raw.get("action_scheduler") or {}]
    shifts = {float(s.get(k, 5.0)) for s in schedulers for k in ("train_shift", "infer_shift")}
    if raw.get("sigma_shift") is not None:
        shifts.add(float(raw["sigma_shift"]))
    _require(len(shifts) == 1, f"the timestep shifts differ ({sorted(shifts)}); the plugin uses one shift.")
    steps = {int(s.get("num_train_timesteps", 1000)) for s in schedulers}
    _require(len(steps) == 1, "video and action num_train_timesteps differ.")
    _require(float(raw.get("text_cfg_scale", 1.0)) == 1.0, "classifier-free guidance (text_cfg_scale != 1) is not implemented.")
    _require(not raw.get("tiled", False), "tiled VAE encoding is not implemented.")
    loss = raw.get("loss") or {}
    out.update(
        chunk_size=int(raw.get("action_horizon", 32)),
        num_video_frames=(raw_frames - 1) // ratio + 1,
        video_frame_stride=ratio,
        preset="wan2.2-ti2v-5b",
        num_layers=int(video["num_layers"]),
        num_heads=int(video["num_heads"]),
        head_dim=int(video["attn_head_dim"]),
        video_ffn_dim=int(video["ffn_dim"]),
        action_hidden_dim=int(action["hidden_dim"]),
        action_ffn_dim=int(action["ffn_dim"]),
        text_dim=int(video["text_dim"]),
        freq_dim=int(video["freq_dim"]),
        latent_channels=int(video.get("in_dim", 48)),
        dtype=str(raw.get("torch_dtype", "bfloat16")),
        gradient_checkpointing=bool(raw.get("use_gradient_checkpointing", False)),
        use_pretrained_wan=True,
        pretrained_model_id=str(raw.get("text_encoder_model_id", "Wan-AI/Wan2.2-TI2V-5B-Diffusers")),
        text_max_length=int(raw.get("tokenizer_max_len", 128)),
        timestep_shift=shifts.pop(),
        num_train_timesteps=steps.pop(),
        video_loss_weight=float(loss.get("lambda_video", 1.0)),
        action_loss_weight=float(loss.get("lambda_action", 1.0)),
        inference_seed=raw.get("inference_seed", 42),
    )
    if raw.get("rand_device", "cpu") != "cpu":
        logger.warning("Built-in rand_device=%r: the plugin draws its seeded noise on the CPU.", raw["rand_device"])
    if raw.get("fp32_attention", True) and out["dtype"] != "float32":
        logger.info("Built-in fp32_attention: the plugin runs attention in the compute dtype (%s).", out["dtype"])
    if raw.get("toggle_action_dimensions"):
        logger.info(
            "Built-in toggle_action_dimensions=%s are applied by the checkpoint's saved postprocessor.",
            raw["toggle_action_dimensions"],
        )
    return out
