"""Running the MoT layer inside its blocks' module calls, so that wrappers and hooks on a block see it used.

A MoT layer interleaves two blocks (both experts' Q/K/V, one shared attention, then each expert's own output
projection, cross-attention and FFN), so neither block's ``forward`` can run it. ``mot.MixtureOfTransformers``
still enters each block through ``block(...)``: it passes ``RunInside(fn)`` and the block's ``forward`` runs
``fn`` instead of its own maths. This is what lets each video block and each action block be its own FSDP unit:
FSDP gathers a unit's sharded weights in its pre-forward (FSDP1: the wrapper's ``forward``; FSDP2: a forward
pre-hook) and reduce-scatters its gradients after its backward, and both only happen through a module call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn


class RunInside(NamedTuple):
    """A block's first argument: run ``fn(*rest)`` as the block's forward (see the module docstring)."""

    fn: Callable[..., Any]


class RunsInside:
    """Mixin for a block class (first base): ``block(RunInside(fn), *args)`` returns ``fn(*args)``; any other call
    is the block's own ``forward``."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], RunInside):
            return args[0].fn(*args[1:], **kwargs)
        return super().forward(*args, **kwargs)


class VideoTransformerBlock(RunsInside, WanTransformerBlock):
    """diffusers' ``WanTransformerBlock`` (same parameters, same ``forward``) that can run a MoT layer inside its
    module call. ``video_expert.build_video_expert`` gives every block of the video expert this class."""


def call_inside(block: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run inside ``block``'s module call (``block`` may be wrapped, e.g. an FSDP1 unit)."""
    return block(RunInside(fn), *args)
