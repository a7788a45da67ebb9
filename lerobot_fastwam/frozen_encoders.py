"""The frozen encoders around the DiT: the Wan2.2 VAE for frames and the umT5 encoder for the instruction.

Both load from a Wan2.2 Diffusers repository (``vae/``, ``text_encoder/``, ``tokenizer/``). Without one
(``use_pretrained_wan=False``) they are small random models for tests and offline demos, drawn from a fixed
seed so that every process builds the same ones. Neither kind is ever stored in a policy checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import string
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from torch import nn
from transformers import AutoTokenizer, T5Tokenizer, UMT5Config, UMT5EncoderModel

from .camera_layout import current_frame
from .dct_codec import DCTVideoCodec

logger = logging.getLogger(__name__)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were requested but cannot be found (offline, or a wrong path)."""


# The frozen encoders are shared state: diffusers' Wan VAE keeps a causal feature cache on the module during
# each call, tokenizers and the prompt LRU's OrderedDict are not thread-safe. Their calls take this lock, so a
# policy's predict_action_chunk may be called from several threads (the DiT itself holds no per-call state).
FROZEN_ENCODER_LOCK = threading.RLock()


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
    """The config's frame codec: Wan2.2's VAE from ``pretrained_model_id``, the small random one, or the DCT codec."""
    if config.video_codec == "dct":
        return LatentEncoder.dct()
    if config.use_pretrained_wan:
        return LatentEncoder.pretrained(config.pretrained_model_id, config.torch_dtype)
    return LatentEncoder.random(config.random_vae_base_dim, config.latent_channels)


def build_prompt_encoder(config) -> PromptEncoder:
    """The config's umT5 prompt encoder: Wan2.2's from ``pretrained_model_id``, or the small random one."""
    if config.use_pretrained_wan:
        encoder = PromptEncoder.pretrained(
            config.pretrained_model_id,
            config.torch_dtype,
            config.text_max_length,
            config.prompt_template,
            config.text_cache_size,
        )
    else:
        encoder = PromptEncoder.random(
            config.text_dim,
            config.random_text_encoder_layers,
            config.text_max_length,
            config.prompt_template,
            config.text_cache_size,
        )
    if encoder.text_dim != config.text_dim:
        raise ValueError(
            f"The text encoder outputs {encoder.text_dim} channels but text_dim is {config.text_dim}; "
            f"set --policy.text_dim={encoder.text_dim}."
        )
    return encoder


class LatentEncoder(nn.Module):
    """Frames in [0, 1] <-> raw (unnormalised) latents of a frozen codec: the Wan2.2 VAE (posterior mode) or
    the DCT codec. ``published_stats`` are the codec's own per-channel (mean, std), when it has them (the
    pretrained Wan2.2 VAE); the policy normalises with those or with statistics of its training data."""

    def __init__(self, codec: nn.Module, published_stats: tuple[list[float], list[float]] | None = None):
        super().__init__()
        self.codec = codec.requires_grad_(False).eval()
        self.published_stats = published_stats

    @classmethod
    def pretrained(cls, model_id: str, dtype: torch.dtype) -> LatentEncoder:
        vae = _load_or_explain(AutoencoderKLWan.from_pretrained, model_id, "vae", torch_dtype=dtype)
        return cls(vae, (list(vae.config.latents_mean), list(vae.config.latents_std)))

    @classmethod
    def random(cls, base_dim: int, z_dim: int) -> LatentEncoder:
        """Wan2.2 VAE layout (16x spatial, 4x temporal, residual, patch 2) at a small width, fixed seed."""
        with _fixed_seed():
            vae = random_wan_vae(base_dim, z_dim)
        return cls(vae)  # random weights have no published statistics: the policy uses the data's

    @classmethod
    def dct(cls) -> LatentEncoder:
        return cls(DCTVideoCodec())

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.codec.parameters(), self.codec.buffers())).device

    @property
    def is_vae(self) -> bool:
        return isinstance(self.codec, AutoencoderKLWan)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [0, 1] -> raw latents ``[B, 48, 1 + (T - 1) // 4, H / 16, W / 16]`` (fp32)."""
        pixels = frames * 2.0 - 1.0
        if not self.is_vae:
            return self.codec.encode(pixels)
        weight = next(self.codec.parameters())
        with FROZEN_ENCODER_LOCK:  # the Wan VAE keeps its causal feature cache on the module during a call
            return self.codec.encode(pixels.to(weight.dtype)).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> frames ``[B, 3, T, H, W]`` in [0, 1] (to look at predicted futures)."""
        if self.is_vae:
            weight = next(self.codec.parameters())
            with FROZEN_ENCODER_LOCK:
                pixels = self.codec.decode(latents.to(weight.dtype)).sample.float()
        else:
            pixels = self.codec.decode(latents)
        return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0)


def random_wan_vae(base_dim: int, z_dim: int) -> AutoencoderKLWan:
    """The Wan2.2 VAE's layout (16x spatial, 4x temporal, residual, patch 2) at a small width, random weights
    from the global RNG (the plugin's offline encoder, and LeRobot's built-in built offline in ``testing``)."""
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,  # placeholders of the right length
    ).eval()


def random_umt5_encoder(text_dim: int, num_layers: int, vocab_size: int) -> UMT5EncoderModel:
    """A small umT5 encoder with random weights from the global RNG, in eval mode as ``from_pretrained`` returns
    one (LeRobot's built-in never switches its frozen encoders to eval itself: a train-mode stand-in would run
    dropout at inference)."""
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=text_dim,
        d_kv=max(text_dim // 4, 8),
        d_ff=2 * text_dim,
        num_layers=num_layers,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
    )
    return UMT5EncoderModel(config).eval()


@torch.no_grad()
def estimate_latent_stats(
    encoder: LatentEncoder, dataset, config, max_frames: int = 256, batch_size: int = 32
) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the latents of up to ``max_frames`` evenly spaced dataset frames.

    Single frames, i.e. the first latent frame of a clip: the DCT codec's later latent frames (means of 4
    frames) share its statistics; a random Wan VAE's need not, which only its small test models see.

    Frames are tiled as the policy tiles them (``camera_layout.current_frame`` with ``config``). Evenly spaced
    indices make the estimate a function of the dataset alone, so every process and ``lerobot-fastwam cache``
    find the same statistics.
    """
    count = min(max_frames, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size)
    with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global RNG: keep training's
        latents = torch.cat([encoder(current_frame(batch, config).to(encoder.device)).cpu() for batch in loader])
    channels = latents.transpose(0, 1).flatten(1)
    mean, std = channels.mean(dim=1), channels.std(dim=1).clamp(min=1e-6)
    return mean.tolist(), std.tolist()


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
        with _fixed_seed():
            encoder = random_umt5_encoder(text_dim, num_layers, len(tokenizer))
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

    @torch.no_grad()
    def forward(self, tasks: list[str]) -> torch.Tensor:
        """``[len(tasks), L, text_dim]``. The batch is assembled before the LRU evicts, so a batch with more
        distinct tasks than ``cache_size`` is still served whole; ``FROZEN_ENCODER_LOCK`` makes the cache and
        tokenizer safe to share between threads."""
        with FROZEN_ENCODER_LOCK:
            missing = list(dict.fromkeys(t for t in tasks if t not in self._cache))
            if missing:
                for task, emb in zip(missing, self._encode(missing), strict=True):
                    self._cache[task] = emb
            context = torch.stack([self._cache[t] for t in tasks])
            for task in tasks:
                self._cache.move_to_end(task)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return context

    def _encode(self, tasks: list[str]) -> torch.Tensor:
        prompts = [self.template.format(task=t) for t in tasks]
        for task, ids in zip(tasks, self.tokenizer(prompts).input_ids, strict=True):
            if len(ids) > self.max_length:
                logger.warning(
                    "Fast-WAM: the prompt for task %r has %d tokens and is cut to text_max_length=%d; "
                    "raise --policy.text_max_length to keep the whole instruction.",
                    task,
                    len(ids),
                    self.max_length,
                )
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = next(self.encoder.parameters()).device
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)
