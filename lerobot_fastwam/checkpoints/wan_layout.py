"""The Wan naming of the other Fast-WAM implementations' weights <-> the plugin's: every key mapping lives here.

Two layouts exist besides ours, both in the original Wan naming (``self_attn.q``, ``ffn.0``, ``modulation``):

- LeRobot's built-in ``fastwam`` (``config.json`` + ``model.safetensors``): keys ``model.mot.mixtures.<expert>.*``
  for the embeddings and heads, ``model.mot.layers.<i>.blocks.<expert>.*`` for the blocks (older exports:
  ``model.mot.mixtures.<expert>.blocks.<i>.*``), ``model.proprio_encoder.*``.
- The official code's ``.pt`` (``{"mot": ..., "proprio_encoder": ...}``): ``mixtures.<expert>.blocks.<i>.*`` etc.

The plugin's video expert is diffusers' ``WanTransformer3DModel`` (diffusers naming: ``attn1.to_q``,
``ffn.net.0.proj``, ``scale_shift_table``), and its action expert uses the same block names.
"""

from __future__ import annotations

import re

import torch

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
