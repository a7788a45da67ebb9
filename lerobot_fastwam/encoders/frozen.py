"""What both frozen encoders share: one lock for their calls, loading published weights with an error that
names the fix, and fixed-seed random weights for the offline presets.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import torch


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were requested but cannot be found (offline, or a wrong path)."""


# The frozen encoders are shared state: diffusers' Wan VAE keeps a causal feature cache on the module during
# each call, tokenizers and the prompt LRU's OrderedDict are not thread-safe. Their calls take this lock, so a
# policy's predict_action_chunk may be called from several threads (the DiT itself holds no per-call state).
FROZEN_ENCODER_LOCK = threading.RLock()


def load_or_explain(loader, model_id: str, subfolder: str, **kwargs):
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
def fixed_seed(seed: int = 0):
    """Random frozen encoders are a function of their config: same weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
