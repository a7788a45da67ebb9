"""The official code's checkpoints (``.pt`` + ``dataset_stats.json``), read and checked for ``lerobot-fastwam
convert``. Every input is checked here, before anything is written; a refused input raises ``ConversionError``,
whose message names the problem and its fix.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import torch

from .wan_layout import official_key
from .weights import name_list


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


def official_shapes(config, action_dim: int, state_dim: int | None) -> dict[str, tuple[int, ...]]:
    """Every tensor (official name -> shape) of the model ``config`` describes, from a meta-device build."""
    from ..network.model import FastWAM  # noqa: PLC0415  (diffusers: imported only when converting)

    model = FastWAM(config, action_dim=action_dim, state_dim=state_dim)
    return {official_key(f"model.{k}"): tuple(v.shape) for k, v in model.state_dict().items()}


def read_run_config(checkpoint: str) -> tuple[Path, dict[str, Any]] | None:
    """The config of the official training run that wrote ``checkpoint``: (its path, its ``model`` section), or None.

    The weights do not record the head count (Wan's q/k norms span all heads), only this config does. The official
    training writes it as ``<run>/config.yaml`` (Hydra also as ``<run>/.hydra/config.yaml``) and its checkpoints as
    ``<run>/checkpoints/weights/step_<N>.pt``, so it is looked for in the checkpoint's folder and two above."""
    import yaml  # noqa: PLC0415

    for folder in Path(checkpoint).resolve().parents[:3]:
        for path in (folder / "config.yaml", folder / ".hydra" / "config.yaml"):
            try:
                raw = yaml.safe_load(path.read_text()) if path.is_file() else None
            except (OSError, yaml.YAMLError):
                continue
            model = raw.get("model", raw) if isinstance(raw, dict) else None
            if isinstance(model, dict) and isinstance(model.get("video_dit_config"), dict):
                return path, model
    return None


def _heads_of_run(run: tuple[Path, dict[str, Any]], hidden: int, sizes: dict[str, int | None]) -> int:
    """The head count a run's config gives, after checking that it describes these weights (video width
    ``hidden``, the other ``sizes`` of ``architecture_from_weights``)."""
    path, model = run
    video, action = model["video_dit_config"], model.get("action_dit_config") or {}
    expected = {
        ("video_dit_config", "hidden_dim"): hidden,
        ("video_dit_config", "ffn_dim"): sizes["video_ffn_dim"],
        ("video_dit_config", "num_layers"): sizes["num_layers"],
        ("video_dit_config", "text_dim"): sizes["text_dim"],
        ("video_dit_config", "freq_dim"): sizes["freq_dim"],
        ("video_dit_config", "in_dim"): sizes["latent_channels"],
        ("action_dit_config", "hidden_dim"): sizes["action_hidden_dim"],
        ("action_dit_config", "ffn_dim"): sizes["action_ffn_dim"],
    }
    sections = {"video_dit_config": video, "action_dit_config": action}
    differ = [
        f"{section}.{key} {sections[section][key]} (weights: {value})"
        for (section, key), value in expected.items()
        if key in sections[section] and sections[section][key] != value
    ]
    heads, head_dim = video.get("num_heads"), video.get("attn_head_dim")
    if not isinstance(heads, int) or heads < 1 or hidden % heads or head_dim not in (None, hidden // heads):
        differ.append(f"video_dit_config.num_heads {heads}, attn_head_dim {head_dim} (weights: width {hidden})")
    if differ:
        raise ConversionError(
            f"{path}, the training run's config found next to the checkpoint, does not describe its weights: "
            f"{', '.join(differ)}. Convert the checkpoint of the run this config belongs to, or move the config away."
        )
    return heads


def architecture_from_weights(
    state: dict[str, torch.Tensor], num_heads: int | None, run: tuple[Path, dict[str, Any]] | None = None
) -> dict[str, int | None]:
    """Every size of the model that the weights determine. The head count they do not: it is that of the training
    run's config (``read_run_config``) when there is one, else the one given, else (None) that of the released Wan
    model of that width. A given head count that contradicts the run's config or the released model is refused."""
    check_checkpoint_keys(state, dict.fromkeys(_ARCHITECTURE_KEYS), exhaustive=False)

    def shape(name: str) -> torch.Size:
        return state[f"mot.mixtures.{name}"].shape

    hidden = shape("video.patch_embedding.weight")[0]
    state_weight = state.get("proprio_encoder.weight")
    sizes = {
        "num_layers": 1 + max(int(k.split(".")[4]) for k in state if k.startswith("mot.mixtures.video.blocks.")),
        "video_ffn_dim": shape("video.blocks.0.ffn.0.weight")[0],
        "action_hidden_dim": shape("action.action_encoder.weight")[0],
        "action_ffn_dim": shape("action.blocks.0.ffn.0.weight")[0],
        "text_dim": shape("video.text_embedding.0.weight")[1],
        "freq_dim": shape("video.time_embedding.0.weight")[1],
        "latent_channels": shape("video.patch_embedding.weight")[1],
        "action_dim": shape("action.action_encoder.weight")[1],
        "state_dim": None if state_weight is None else state_weight.shape[1],
    }
    if run is not None:
        known = _heads_of_run(run, hidden, sizes)
        said = f"{run[0]}, the config of its training run, gives {known} heads of {hidden // known}"
    else:
        known = WAN_HEADS.get(hidden)
        said = f"Wan width {hidden} has {known} heads of 128"
    if num_heads is None and known is None:
        raise ConversionError(
            f"The checkpoint's video width {hidden} is not a released Wan width ({sorted(WAN_HEADS)}), and no config "
            "of its training run (config.yaml) is next to it, so the head count is unknown: pass --num-heads (it "
            f"must divide {hidden} into an even head size)."
        )
    num_heads = known if num_heads is None else num_heads
    if num_heads < 1 or hidden % num_heads or (hidden // num_heads) % 2 or known not in (None, num_heads):
        fix = (
            f"{said}: pass --num-heads {known} or leave it out"
            if known
            else f"pass a --num-heads that divides {hidden} into an even head size"
        )
        raise ConversionError(f"--num-heads {num_heads} does not fit the checkpoint's video width {hidden}; {fix}.")
    return {**sizes, "num_heads": num_heads, "head_dim": hidden // num_heads}


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
