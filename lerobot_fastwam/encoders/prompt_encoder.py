"""Instruction -> umT5 context: Wan2.2's umT5-XXL encoder and tokenizer from a Diffusers repository
(``text_encoder/``, ``tokenizer/``), or a small random one with an in-memory tokenizer (tests, offline demos),
each prompt encoded once and then served from an LRU cache. Never stored in a policy checkpoint.
"""

from __future__ import annotations

import logging
import string
from collections import OrderedDict

import torch
from torch import nn
from transformers import AutoTokenizer, T5Tokenizer, UMT5Config, UMT5EncoderModel

from .frozen import FROZEN_ENCODER_LOCK, fixed_seed, load_or_explain

logger = logging.getLogger(__name__)


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
        tokenizer = load_or_explain(AutoTokenizer.from_pretrained, model_id, "tokenizer")
        encoder = load_or_explain(UMT5EncoderModel.from_pretrained, model_id, "text_encoder", torch_dtype=dtype)
        return cls(tokenizer, encoder, max_length, template, cache_size)

    @classmethod
    def random(cls, text_dim: int, num_layers: int, max_length: int, template: str, cache_size: int):
        tokenizer = in_memory_tokenizer()
        with fixed_seed():
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
