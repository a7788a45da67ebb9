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

import contextlib
import json
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NoReturn

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
    """``rest`` is ``<module path>.<param>``; rename the module path by its entry in ``table`` (None: unknown)."""
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
    config_file = _config_file(name_or_path, hub_kwargs)
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
    config_file = _config_file(name_or_path, hub_kwargs)
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


def _config_file(name_or_path, hub_kwargs: dict[str, Any]) -> str | None:
    path = Path(str(name_or_path))
    if path.is_dir():
        return str(path / "config.json") if (path / "config.json").exists() else None
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    keys = ("revision", "cache_dir", "force_download", "proxies", "token", "local_files_only")
    try:
        return hf_hub_download(str(name_or_path), "config.json", **{k: hub_kwargs[k] for k in keys if k in hub_kwargs})
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


# ----------------------------------------------------------------------------------------------------
# Action-expert initialisation from the Wan2.2 video expert (the official recipe)

ACTION_ONLY_PREFIXES = ("action_in.", "action_out.")


def resize_linear(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize every mismatched dimension by 1D linear interpolation (align_corners=True), one after another."""
    out = tensor.float()
    for dim, size in enumerate(shape):
        if out.shape[dim] == size:
            continue
        moved = out.movedim(dim, -1)
        lead = moved.shape[:-1]
        resized = torch.nn.functional.interpolate(
            moved.reshape(-1, 1, moved.shape[-1]), size=size, mode="linear", align_corners=True
        )
        out = resized.reshape(*lead, size).movedim(-1, dim)
    return out


def action_expert_from_video(
    video_state: dict[str, torch.Tensor], action_shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Initial action-expert weights from the video expert's: each tensor is the video tensor linearly
    interpolated to the action shape; where the input (last) dimension shrinks it is multiplied by
    ``sqrt(d_video / d_action)`` to keep activations at scale. The action input/output layers are skipped."""
    out = {}
    for key, shape in action_shapes.items():
        if key.startswith(ACTION_ONLY_PREFIXES):
            continue
        if key not in video_state:
            raise ValueError(f"The video expert has no `{key}` to initialise the action expert from.")
        src = video_state[key]
        value = resize_linear(src, tuple(shape))
        if src.ndim >= 2 and src.shape[-1] != shape[-1]:
            value = value * (src.shape[-1] / shape[-1]) ** 0.5
        out[key] = value.to(src.dtype)
    return out


# ----------------------------------------------------------------------------------------------------
# Official `.pt` checkpoints + dataset_stats.json -> plugin checkpoint directory. Every input is checked here,
# before anything is written; a refused input raises ConversionError, whose message names the problem and its fix.


class ConversionError(ValueError):
    """An input ``lerobot-fastwam convert`` refuses; the message names the problem and the fix."""


OFFICIAL_NORM_MODES = {"min/max": "MIN_MAX", "z-score": "MEAN_STD"}
_NORM_STATS = {"min/max": ("min", "max"), "z-score": ("mean", "std")}  # the stats each normalisation reads
OFFICIAL_LAYOUT = (
    "An official Fast-WAM checkpoint is a torch.save dict {'mot': state dict of both experts (mixtures.video.* and "
    "mixtures.action.*, with blocks.<i>.* per layer), 'proprio_encoder': state dict of the state Linear (models "
    "with a state input)}."
)
# The tensors whose shapes give the architecture (architecture_from_weights).
_ARCHITECTURE_KEYS = tuple(
    f"mot.mixtures.{key}"
    for key in (
        "video.patch_embedding.weight",
        "video.text_embedding.0.weight",
        "video.time_embedding.0.weight",
        "video.blocks.0.ffn.0.weight",
        "action.action_encoder.weight",
        "action.blocks.0.ffn.0.weight",
    )
)
# Attention heads of the released Wan video widths, all with 128-wide heads (Wan2.1-1.3B, Wan2.2-TI2V-5B, 14B).
WAN_HEADS = {1536: 12, 3072: 24, 5120: 40}


def read_official_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The official payload (``{"mot": ..., "proprio_encoder": ...}``) as one flat state dict in Wan naming.

    Read with ``weights_only=True``: tensors and plain containers only, no code from the file is run.
    """
    file = Path(path)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "does not exist"
        raise ConversionError(f"Checkpoint {path} {what}: pass the official .pt file (e.g. libero_uncond_2cam224.pt).")
    is_zip = zipfile.is_zipfile(file)  # torch.save's format; mmap reads only that one
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as err:  # torch reports a bad file as RuntimeError, OSError, UnpicklingError, EOFError...
        with file.open("rb") as f:
            truncated = not is_zip and f.read(4) == b"PK\x03\x04"  # a zip whose end (its directory) is missing
        detail = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:160]
        reason = (
            f"it is truncated ({file.stat().st_size} bytes, the end of the archive is missing): download it again "
            "and compare its size with the published one"
            if truncated
            else f"it is not a readable torch checkpoint of tensors ({type(err).__name__}: {detail}): pass the "
            "official .pt file"
        )
        raise ConversionError(f"Cannot read checkpoint {path}: {reason}.") from err
    mot = payload.get("mot") if isinstance(payload, dict) else None
    proprio = (payload.get("proprio_encoder") or {}) if isinstance(payload, dict) else None
    if not (isinstance(mot, dict) and isinstance(proprio, dict)) or not all(
        torch.is_tensor(v) for v in (*mot.values(), *proprio.values())
    ):
        found = f"entries {sorted(map(str, payload))}" if isinstance(payload, dict) else type(payload).__name__
        raise ConversionError(f"{path} is not an official Fast-WAM checkpoint (it holds {found}). {OFFICIAL_LAYOUT}")
    state = {f"mot.{k}": v for k, v in mot.items()}
    state.update({f"proprio_encoder.{k}": v for k, v in proprio.items()})
    return state


def check_checkpoint_keys(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...] | None], exhaustive: bool = True
) -> None:
    """Refuse a checkpoint (official names) that lacks a tensor of ``expected``, holds one of another shape (an
    expected shape of None: any) or, if ``exhaustive``, holds one the model does not have."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected] if exhaustive else []
    wrong = [
        f"{k} {tuple(state[k].shape)} (model: {shape})"
        for k, shape in expected.items()
        if k in state and shape is not None and tuple(state[k].shape) != shape
    ]
    problems = [
        f"{len(keys)} {label}: {name_list(keys)}"
        for label, keys in (("missing", missing), ("not in the model", unexpected), ("of the wrong shape", wrong))
        if keys
    ]
    if problems:
        raise ConversionError(
            f"The checkpoint does not hold the tensors of a Fast-WAM model ({'; '.join(problems)}). {OFFICIAL_LAYOUT} "
            "Pass the complete official file of a Fast-WAM model (not a Wan2.2 or LeRobot checkpoint)."
        )


def name_list(names: list[str], n: int = 8) -> str:
    """The first ``n`` names, for error messages: ``a, b, c and 5 more``; ``none`` for an empty list."""
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def official_key(plugin_key: str) -> str:
    """The official (Wan) name of a plugin state-dict key: the inverse of ``wan_layout_to_plugin``."""
    if plugin_key.startswith("model.state_encoder."):
        return "proprio_encoder." + plugin_key.removeprefix("model.state_encoder.")
    expert, _, rest = plugin_key.removeprefix("model.mot.").partition(".")
    block = re.match(r"blocks\.\d+\.", rest)
    prefix, rest = (block.group(0), rest[block.end() :]) if block else ("", rest)
    if rest == "scale_shift_table":
        return f"mot.mixtures.{expert}.{prefix}{'modulation' if block else 'head.modulation'}"
    table = _INVERSE_BLOCK_NAMES if block else _INVERSE_EMBEDDING_NAMES
    module, _, param = rest.rpartition(".")
    return f"mot.mixtures.{expert}.{prefix}{table.get(module, module)}.{param}"


_INVERSE_BLOCK_NAMES = {v: k for k, v in _BLOCK_NAMES.items()}
_INVERSE_EMBEDDING_NAMES = {v: k for k, v in _EMBEDDING_NAMES.items()}


def official_shapes(config, action_dim: int, state_dim: int | None) -> dict[str, tuple[int, ...]]:
    """Every tensor (official name -> shape) of the model ``config`` describes, from a meta-device build."""
    from .model import FastWAM  # noqa: PLC0415  (diffusers: imported only when converting)

    model = FastWAM(config, action_dim=action_dim, state_dim=state_dim)
    return {official_key(f"model.{k}"): tuple(v.shape) for k, v in model.state_dict().items()}


def architecture_from_weights(state: dict[str, torch.Tensor], num_heads: int | None) -> dict[str, int | None]:
    """Every size of the model that the weights determine. The head count they do not: it is given, or (None)
    the head count of the released Wan model of that width."""
    check_checkpoint_keys(state, dict.fromkeys(_ARCHITECTURE_KEYS), exhaustive=False)

    def shape(name: str) -> torch.Size:
        return state[f"mot.mixtures.{name}"].shape

    hidden = shape("video.patch_embedding.weight")[0]
    known = WAN_HEADS.get(hidden)
    if num_heads is None and known is None:
        raise ConversionError(
            f"The checkpoint's video width {hidden} is not a released Wan width ({sorted(WAN_HEADS)}), so the head "
            f"count is unknown: pass --num-heads (it must divide {hidden} into an even head size)."
        )
    num_heads = known if num_heads is None else num_heads
    if num_heads < 1 or hidden % num_heads or (hidden // num_heads) % 2 or known not in (None, num_heads):
        fix = (
            f"Wan width {hidden} has {known} heads of 128: pass --num-heads {known} or leave it out"
            if known
            else f"pass a --num-heads that divides {hidden} into an even head size"
        )
        raise ConversionError(f"--num-heads {num_heads} does not fit the checkpoint's video width {hidden}; {fix}.")
    layers = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("mot.mixtures.video.blocks."))
    state_weight = state.get("proprio_encoder.weight")
    return {
        "num_layers": layers,
        "num_heads": num_heads,
        "head_dim": hidden // num_heads,
        "video_ffn_dim": shape("video.blocks.0.ffn.0.weight")[0],
        "action_hidden_dim": shape("action.action_encoder.weight")[0],
        "action_ffn_dim": shape("action.blocks.0.ffn.0.weight")[0],
        "text_dim": shape("video.text_embedding.0.weight")[1],
        "freq_dim": shape("video.time_embedding.0.weight")[1],
        "latent_channels": shape("video.patch_embedding.weight")[1],
        "action_dim": shape("action.action_encoder.weight")[1],
        "state_dim": None if state_weight is None else state_weight.shape[1],
    }


def load_official_stats(
    path: str, mode: str, action_dim: int, state_dim: int | None
) -> dict[str, dict[str, torch.Tensor]]:
    """Official ``dataset_stats.json`` (per-field ``global_*`` stats, fields concatenated in file order) ->
    LeRobot normaliser stats (those ``mode`` reads) for ``action`` and, if the model has one, ``observation.state``."""
    if mode not in OFFICIAL_NORM_MODES:
        raise ConversionError(f"Unsupported official normalisation {mode!r}; use one of {sorted(OFFICIAL_NORM_MODES)}.")
    try:
        stats = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(
            f"Cannot read the dataset stats {path} ({type(err).__name__}: {err}): pass the dataset_stats.json that "
            "came with the checkpoint."
        ) from err
    dims = {"action": action_dim, "state": state_dim}
    check_official_stats(stats, mode, dims)
    out = {}
    for group, feature in (("action", "action"), ("state", "observation.state")):
        if dims[group] is not None:
            fields = stats[group].values()
            out[feature] = {
                s: torch.cat([torch.as_tensor(f[f"global_{s}"], dtype=torch.float32).flatten() for f in fields])
                for s in _NORM_STATS[mode]
            }
    return out


def check_official_stats(stats: Any, mode: str, dims: dict[str, int | None]) -> None:
    """Refuse stats that would normalise wrongly: a group the model has (``dims``, None: absent) missing, a stat
    ``mode`` reads missing, not numeric, NaN/infinite, of the wrong total length, min > max, or std <= 0 (z-score)."""

    def refuse(problem: str, fix: str = "pass the dataset_stats.json that came with this checkpoint") -> NoReturn:
        raise ConversionError(f"Dataset stats: {problem}; {fix}.")

    needed = _NORM_STATS[mode]
    layout = "{'<group>': {'<field>': {" + ", ".join(f"'global_{s}': [...]" for s in needed) + "}}}"
    if not isinstance(stats, dict):
        refuse(f"the file holds a {type(stats).__name__}, not {layout}")
    for group, dim in dims.items():
        if dim is None:
            continue
        fields = stats.get(group)
        if not fields or not isinstance(fields, dict) or not all(isinstance(f, dict) for f in fields.values()):
            refuse(f"no usable `{group}` entry, but the model has {dim} {group} values (expected {layout})")
        total = 0
        for name, field in fields.items():
            values = {}
            for stat in needed:
                key = f"{group}.{name}.global_{stat}"
                if f"global_{stat}" not in field:
                    refuse(f"`{key}` is missing (--norm {mode} reads global_{' and global_'.join(needed)})")
                try:
                    values[stat] = torch.as_tensor(field[f"global_{stat}"], dtype=torch.float64).flatten()
                except (TypeError, ValueError, RuntimeError):
                    refuse(f"`{key}` is not a list of numbers")
                bad = (~values[stat].isfinite()).nonzero().flatten().tolist()
                if bad:
                    refuse(f"`{key}[{bad[0]}]` is {values[stat][bad[0]].item()}", "recompute the stats (finite values)")
            first, second = (values[s] for s in needed)
            if len(first) != len(second):
                refuse(f"`{group}.{name}` has {len(first)} global_{needed[0]} but {len(second)} global_{needed[1]}")
            bad = (first > second if mode == "min/max" else second <= 0).nonzero().flatten().tolist()
            if bad:
                i = bad[0]
                refuse(
                    f"`{group}.{name}.global_min[{i}]` = {first[i].item():g} > global_max[{i}] = {second[i].item():g}"
                    if mode == "min/max"
                    else f"`{group}.{name}.global_std[{i}]` = {second[i].item():g}, z-score needs std > 0",
                    "recompute the stats" + (", or convert with --norm min/max" if mode == "z-score" else ""),
                )
            total += len(first)
        if total != dim:
            refuse(
                f"`{group}` has {total} values over its fields {list(fields)}, the checkpoint's model {dim}",
                "pass the dataset_stats.json of this checkpoint (its fields are concatenated in file order)",
            )
