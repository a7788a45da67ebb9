"""The frozen encoders around the DiT: the Wan2.2 VAE for frames and the umT5 encoder for the instruction.

Both load from a Wan2.2 Diffusers repository (``vae/``, ``text_encoder/``, ``tokenizer/``). Without one
(``use_pretrained_wan=False``) they are small random models for tests and offline demos, drawn from a fixed
seed so that every process builds the same ones. Neither kind is ever stored in a policy checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import string
from collections import OrderedDict
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from torch import nn
from transformers import AutoTokenizer, T5Tokenizer, UMT5Config, UMT5EncoderModel

logger = logging.getLogger(__name__)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were requested but cannot be found (offline, or a wrong path)."""


def _load_or_explain(loader, model_id: str, subfolder: str, **kwargs):
    try:
        return loader(model_id, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as exc:
        local = Path(model_id).expanduser()
        if local.exists():
            where = f"the local directory {local} has no usable `{subfolder}/`"
        elif model_id.startswith(("/", ".", "~")):
            where = f"the local directory {local} does not exist"
        else:
            where = f"`{model_id}` is not in the local Hugging Face cache and the Hub cannot be reached"
        raise MissingWeightsError(
            f"Cannot load the Wan2.2 {subfolder} weights: {where} ({type(exc).__name__}: {exc}). "
            f"Download them once with `huggingface-cli download {model_id}` (online), or point "
            "`--policy.pretrained_model_id` at a local copy of the Wan2.2-TI2V-5B-Diffusers repository. "
            "For an offline test model without pretrained weights use `--policy.preset=tiny`."
        ) from exc


@contextlib.contextmanager
def _fixed_seed(seed: int = 0):
    """Random frozen encoders are a function of their config: same weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_latent_encoder(config) -> LatentEncoder:
    """The config's VAE: Wan2.2's from ``pretrained_model_id``, or the small random one."""
    if config.use_pretrained_wan:
        return LatentEncoder.pretrained(config.pretrained_model_id, config.torch_dtype)
    return LatentEncoder.random(config.random_vae_base_dim, config.latent_channels)


def build_prompt_encoder(config) -> PromptEncoder:
    """The config's umT5 prompt encoder: Wan2.2's from ``pretrained_model_id``, or the small random one."""
    if config.use_pretrained_wan:
        encoder = PromptEncoder.pretrained(
            config.pretrained_model_id, config.torch_dtype, config.text_max_length, config.prompt_template,
            config.text_cache_size,
        )
    else:
        encoder = PromptEncoder.random(
            config.text_dim, config.random_text_encoder_layers, config.text_max_length, config.prompt_template,
            config.text_cache_size,
        )
    if encoder.text_dim != config.text_dim:
        raise ValueError(
            f"The text encoder outputs {encoder.text_dim} channels but text_dim is {config.text_dim}; "
            f"set --policy.text_dim={encoder.text_dim}."
        )
    return encoder


class LatentEncoder(nn.Module):
    """Frames in [0, 1] -> normalised Wan2.2 latents (posterior mode, per-channel mean/std)."""

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        z = vae.config.z_dim
        self.register_buffer("mean", torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1), persistent=False)

    @classmethod
    def pretrained(cls, model_id: str, dtype: torch.dtype) -> LatentEncoder:
        return cls(_load_or_explain(AutoencoderKLWan.from_pretrained, model_id, "vae", torch_dtype=dtype))

    @classmethod
    def random(cls, base_dim: int, z_dim: int) -> LatentEncoder:
        """Wan2.2 VAE layout (16x spatial, 4x temporal, residual, patch 2) at a small width, fixed seed."""
        with _fixed_seed():
            vae = AutoencoderKLWan(
                base_dim=base_dim, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                temperal_downsample=[False, True, True], is_residual=True, patch_size=2,
                in_channels=12, out_channels=12, scale_factor_temporal=4, scale_factor_spatial=16,
                latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
            )
        return cls(vae)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [0, 1] -> ``[B, z, 1 + (T - 1) // 4, H / 16, W / 16]`` (fp32)."""
        weight = next(self.vae.parameters())
        mu = self.vae.encode((frames * 2.0 - 1.0).to(weight.dtype)).latent_dist.mode().float()
        return (mu - self.mean) / self.std


def in_memory_tokenizer() -> T5Tokenizer:
    """A character-level T5 tokenizer built in memory, for random text encoders (no download)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("\u2581" + c, -1.5) for c in string.ascii_letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


class PromptEncoder(nn.Module):
    """Instruction -> umT5 context ``[L, text_dim]``, cached per prompt string.

    The encoder is frozen, so a prompt's embedding never changes: each distinct task string is encoded once
    and then served from an LRU cache (on the model's device) for every later training step and action chunk.
    Padding positions are zeroed, as in Wan, and the context keeps its fixed length.
    """

    def __init__(self, tokenizer, encoder: UMT5EncoderModel, max_length: int, template: str, cache_size: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder.requires_grad_(False).eval()
        self.max_length = max_length
        self.template = template
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def pretrained(cls, model_id: str, dtype: torch.dtype, max_length: int, template: str, cache_size: int):
        tokenizer = _load_or_explain(AutoTokenizer.from_pretrained, model_id, "tokenizer")
        encoder = _load_or_explain(UMT5EncoderModel.from_pretrained, model_id, "text_encoder", torch_dtype=dtype)
        return cls(tokenizer, encoder, max_length, template, cache_size)

    @classmethod
    def random(cls, text_dim: int, num_layers: int, max_length: int, template: str, cache_size: int):
        tokenizer = in_memory_tokenizer()
        config = UMT5Config(
            vocab_size=len(tokenizer), d_model=text_dim, d_kv=max(text_dim // 4, 8), d_ff=2 * text_dim,
            num_layers=num_layers, num_heads=4, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        )
        with _fixed_seed():
            encoder = UMT5EncoderModel(config)
        return cls(tokenizer, encoder, max_length, template, cache_size)

    @property
    def text_dim(self) -> int:
        return int(self.encoder.config.d_model)

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # cached embeddings live on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def forward(self, tasks: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in tasks if t not in self._cache))
        if missing:
            for task, emb in zip(missing, self._encode(missing), strict=True):
                self._cache[task] = emb
        for task in tasks:
            self._cache.move_to_end(task)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in tasks])

    def _encode(self, tasks: list[str]) -> torch.Tensor:
        prompts = [self.template.format(task=t) for t in tasks]
        for task, ids in zip(tasks, self.tokenizer(prompts).input_ids, strict=True):
            if len(ids) > self.max_length:
                logger.warning(
                    "Fast-WAM: the prompt for task %r has %d tokens and is cut to text_max_length=%d; "
                    "raise --policy.text_max_length to keep the whole instruction.", task, len(ids), self.max_length,
                )
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = next(self.encoder.parameters()).device
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)
