"""Configs saved by LeRobot's built-in ``fastwam`` -> the plugin's ``FastWAMConfig`` fields.

``plugin.py`` routes LeRobot's ``PreTrainedConfig.from_pretrained`` through ``load_translated_builtin_config``,
so a built-in checkpoint loads unchanged; ``read_saved_config`` gives ``FastWAMPolicy.from_pretrained`` the saved
fields to compare with the requested ones. Every built-in field is mapped, checked, or refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


BUILTIN_ONLY_FIELDS = {
    "action_dim",
    "proprio_dim",
    "action_horizon",
    "action_video_freq_ratio",
    "context_len",
    "model_id",
    "tokenizer_model_id",
    "text_encoder_model_id",
    "base_model_id",
    "tokenizer_max_len",
    "load_text_encoder",
    "mot_checkpoint_mixed_attn",
    "torch_dtype",
    "inference_seed",
    "rand_device",
    "text_cfg_scale",
    "negative_prompt",
    "sigma_shift",
    "tiled",
    "fp32_attention",
    "use_gradient_checkpointing",
    "toggle_action_dimensions",
    "video_scheduler",
    "action_scheduler",
    "loss",
    "video_dit_config",
    "action_dit_config",
}


def is_builtin_config(raw: dict[str, Any]) -> bool:
    return "video_dit_config" in raw or "action_horizon" in raw or "action_video_freq_ratio" in raw


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"Cannot translate this LeRobot built-in fastwam config: {message}")


@contextlib.contextmanager
def load_translated_builtin_config(name_or_path, hub_kwargs: dict[str, Any]):
    """Yield a path whose config.json the plugin can parse: the original, or a translated temporary copy."""
    config_file = checkpoint_file(name_or_path, "config.json", hub_kwargs)
    fields, is_builtin = _plugin_fields(config_file) if config_file else ({}, False)
    if not is_builtin:
        yield name_or_path
        return
    translated = fields
    logger.info("Translated the LeRobot built-in fastwam config of %s to lerobot_fastwam.", name_or_path)
    tmp = tempfile.mkdtemp(prefix="fastwam_config_")
    try:
        (Path(tmp) / "config.json").write_text(json.dumps(translated))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_saved_config(name_or_path, hub_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's config.json as the plugin's fields (a built-in config translated); None when it has none
    that can be read (LeRobot's own loader reports that where it matters)."""
    config_file = checkpoint_file(name_or_path, "config.json", hub_kwargs)
    try:
        return _plugin_fields(config_file)[0] if config_file else None
    except (OSError, ValueError):
        return None


def _plugin_fields(config_file: str) -> tuple[dict[str, Any], bool]:
    """A config.json as the plugin's fields, and whether it was a built-in config (then translated)."""
    raw = json.loads(Path(config_file).read_text())
    if raw.get("type") == "fastwam" and is_builtin_config(raw):
        return {"type": "fastwam", **translate_builtin_config(raw)}, True
    return raw, False


def checkpoint_file(name_or_path, filename: str, hub_kwargs: dict[str, Any]) -> str | None:
    """The local path of a checkpoint's file (a directory's, or downloaded from its Hub repository); None when the
    checkpoint has none or it cannot be had."""
    path = Path(str(name_or_path))
    if path.is_dir():
        return str(path / filename) if (path / filename).exists() else None
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    keys = ("revision", "cache_dir", "force_download", "proxies", "token", "local_files_only")
    try:
        return hf_hub_download(str(name_or_path), filename, **{k: hub_kwargs[k] for k in keys if k in hub_kwargs})
    except Exception:  # LeRobot's own loader reports the failure with its message
        return None


def translate_builtin_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Translate a built-in ``fastwam`` config dict to the plugin's fields.

    Every built-in field is either mapped, checked to hold the only value the plugin implements, or (for
    numerics-only options) mapped with a logged note; anything else raises.
    """
    out = {k: v for k, v in raw.items() if k not in BUILTIN_ONLY_FIELDS and k != "type"}
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
    _require(
        float(raw.get("text_cfg_scale", 1.0)) == 1.0,
        "classifier-free guidance (text_cfg_scale != 1) is not implemented.",
    )
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
