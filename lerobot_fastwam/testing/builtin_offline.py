"""Build LeRobot's built-in ``lerobot.policies.fastwam`` policy offline, with random weights.

The built-in policy loads its frozen Wan2.2 VAE, umT5 text encoder and umT5 tokenizer from the Hugging Face
Hub through three module-level functions of ``lerobot.policies.fastwam.modeling_fastwam``
(``load_pretrained_wan_vae``, ``load_pretrained_wan_text_encoder``, ``build_wan_tokenizer``). With
``base_model_id=None`` nothing else is downloaded, so substituting small random components for those three
builds the whole policy without a network. The substitutes keep the built-in's own wrappers
(``WanVideoVAE38``, ``WanTextEncoder``, ``WanTokenizer``) so every call on the policy's path is the
built-in's code; only the wrapped models are small and random.

The random frozen components come from the plugin's own builders (``lerobot_fastwam.encoders``:
``random_wan_vae``, ``random_umt5_encoder``), so a benchmark compares like with like.

    from lerobot_fastwam.testing.builtin_offline import build_builtin_policy
    policy = build_builtin_policy(7, 8, (32, 64), 1, num_layers=2, num_heads=2, head_dim=12,
                                  video_ffn_dim=48, action_hidden_dim=16, action_ffn_dim=32,
                                  text_dim=32, freq_dim=16)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch
from lerobot.policies.fastwam import modeling_fastwam as builtin_modeling
from lerobot.policies.fastwam.configuration_fastwam import FastWAMConfig as BuiltinFastWAMConfig
from lerobot.policies.fastwam.modeling_fastwam import FastWAMPolicy as BuiltinFastWAMPolicy
from lerobot.policies.fastwam.wan.adapters import WanVideoVAE38
from lerobot.policies.fastwam.wan.components import WanTextEncoder, WanTokenizer

from ..configuration_fastwam import default_features
from ..encoders.latent_encoder import random_wan_vae
from ..encoders.prompt_encoder import in_memory_tokenizer, random_umt5_encoder

LATENT_CHANNELS = 48  # Wan2.2 VAE z_dim; fixed by the TI2V-5B DiT's patch embedding

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def offline_wan_tokenizer(seq_len: int) -> WanTokenizer:
    """The built-in's ``WanTokenizer`` wrapper around the plugin's in-memory character-level T5 tokenizer.

    ``WanTokenizer.__init__`` downloads ``google/umt5-xxl``; this sets the two attributes its ``__call__``
    reads instead, so the call contract (``(input_ids, attention_mask)`` with ``return_mask=True``,
    ``max_length`` padding) is the built-in's own code.
    """
    tokenizer = object.__new__(WanTokenizer)
    tokenizer.tokenizer = in_memory_tokenizer()
    tokenizer.seq_len = int(seq_len)
    return tokenizer


@contextlib.contextmanager
def offline_wan_components(text_dim: int, vae_base_dim: int = 4, text_encoder_layers: int = 1) -> Iterator[None]:
    """Patch the built-in's three Hub loaders with small random components while building a policy.

    The patch is undone on exit; it only affects policies constructed inside the ``with`` block.
    """
    vocab_size = len(in_memory_tokenizer())

    def load_vae(*, torch_dtype: torch.dtype, device: str) -> WanVideoVAE38:
        return WanVideoVAE38(dtype=torch_dtype, device=device, pretrained=random_wan_vae(vae_base_dim, LATENT_CHANNELS))

    def load_text_encoder(*, torch_dtype: torch.dtype, device: str, **_: object) -> WanTextEncoder:
        encoder = random_umt5_encoder(text_dim, text_encoder_layers, vocab_size)
        return WanTextEncoder(dtype=torch_dtype, device=device, pretrained=encoder)

    def build_tokenizer(*, tokenizer_max_len: int, **_: object) -> WanTokenizer:
        return offline_wan_tokenizer(tokenizer_max_len)

    with (
        mock.patch.object(builtin_modeling, "load_pretrained_wan_vae", load_vae),
        mock.patch.object(builtin_modeling, "load_pretrained_wan_text_encoder", load_text_encoder),
        mock.patch.object(builtin_modeling, "build_wan_tokenizer", build_tokenizer),
    ):
        yield


def builtin_features(action_dim: int, state_dim: int | None, image_size: tuple[int, int], cameras: int = 1):
    """Input/output features with the plugin's camera keys (``observation.images.cam<i>``).

    The built-in derives its camera keys from the dataset (``set_dataset_feature_metadata``: sorted
    ``observation.images.*`` keys, each ``(3, H, W / cameras)``); without a dataset its default is one
    ``observation.images.image`` camera. Giving ``input_features`` explicitly with the same keys and shapes as
    ``lerobot_fastwam.configuration_fastwam.default_features`` makes both policies read the same batch.
    """
    if image_size[1] % cameras:
        raise ValueError(f"image width {image_size[1]} is not divisible by {cameras} cameras.")
    return default_features(action_dim, state_dim, tuple(image_size), cameras)


def builtin_dit_configs(
    action_dim: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    video_ffn_dim: int,
    action_hidden_dim: int,
    action_ffn_dim: int,
    text_dim: int,
    freq_dim: int,
) -> tuple[dict, dict]:
    """The built-in's ``video_dit_config`` / ``action_dit_config`` for the plugin's architecture numbers.

    Starts from the built-in's 5B defaults (so every other key, e.g. ``video_attention_mask_mode`` and
    ``seperated_timestep``, keeps its shipped value) and overrides the sizes.
    """
    from lerobot.policies.fastwam.configuration_fastwam import (  # noqa: PLC0415
        default_action_dit_config,
        default_video_dit_config,
    )

    video = default_video_dit_config(action_dim)
    video.update(
        hidden_dim=num_heads * head_dim,
        ffn_dim=video_ffn_dim,
        num_heads=num_heads,
        attn_head_dim=head_dim,
        num_layers=num_layers,
        text_dim=text_dim,
        freq_dim=freq_dim,
        in_dim=LATENT_CHANNELS,
        out_dim=LATENT_CHANNELS,
    )
    action = default_action_dit_config(action_dim)
    action.update(
        hidden_dim=action_hidden_dim,
        ffn_dim=action_ffn_dim,
        num_heads=num_heads,
        attn_head_dim=head_dim,
        num_layers=num_layers,
        text_dim=text_dim,
        freq_dim=freq_dim,
    )
    return video, action


def build_builtin_policy(
    action_dim: int,
    state_dim: int | None,
    image_size: tuple[int, int],
    cameras: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    video_ffn_dim: int,
    action_hidden_dim: int,
    action_ffn_dim: int,
    text_dim: int,
    freq_dim: int,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    chunk_size: int = 32,
    model_video_frames: int = 9,
    video_frame_stride: int = 4,
    text_max_length: int = 16,
    vae_base_dim: int = 4,
    text_encoder_layers: int = 1,
    num_inference_steps: int = 10,
    seed: int | None = 0,
) -> BuiltinFastWAMPolicy:
    """The built-in LeRobot Fast-WAM policy with random weights, built without the Hub.

    Args:
        action_dim, state_dim: action and proprioception sizes (``state_dim=None``: no state token).
        image_size: ``(height, width)`` of the tiled camera image; each camera is
            ``(height, width / cameras)``.
        cameras: number of cameras, keyed ``observation.images.cam0..`` like the plugin's
            ``default_features``.
        num_layers, num_heads, head_dim, video_ffn_dim: video expert (hidden = num_heads * head_dim).
        action_hidden_dim, action_ffn_dim: action expert width and FFN (heads, head dim, layers shared).
        text_dim, freq_dim: text-context width and timestep-embedding frequency size of both experts.
        device, dtype: where and in which dtype (``torch_dtype``) the built-in places its modules.
        chunk_size: action horizon (built-in ``action_horizon``).
        model_video_frames, video_frame_stride: frames the model sees and their stride in dataset frames
            (built-in ``num_video_frames`` is the raw window ``(model_video_frames - 1) * stride + 1``).
        text_max_length: tokenizer length (built-in ``tokenizer_max_len``).
        vae_base_dim, text_encoder_layers: size of the random VAE and umT5 encoder.
        seed: ``torch.manual_seed`` before construction (``None``: leave the RNG alone).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    video_cfg, action_cfg = builtin_dit_configs(
        action_dim,
        num_layers,
        num_heads,
        head_dim,
        video_ffn_dim,
        action_hidden_dim,
        action_ffn_dim,
        text_dim,
        freq_dim,
    )
    inputs, outputs = builtin_features(action_dim, state_dim, tuple(image_size), cameras)
    config = BuiltinFastWAMConfig(
        action_dim=action_dim,
        proprio_dim=state_dim,
        action_horizon=chunk_size,
        n_action_steps=min(10, chunk_size),
        num_video_frames=(model_video_frames - 1) * video_frame_stride + 1,
        action_video_freq_ratio=video_frame_stride,
        image_size=tuple(image_size),
        context_len=text_max_length,
        tokenizer_max_len=text_max_length,
        base_model_id=None,  # no `lerobot/fastwam_base` download
        torch_dtype=dtype,
        num_inference_steps=num_inference_steps,
        video_dit_config=video_cfg,
        action_dit_config=action_cfg,
        input_features=inputs,
        output_features=outputs,
        device=device,
    )
    if seed is not None:
        torch.manual_seed(seed)
    with offline_wan_components(text_dim, vae_base_dim, text_encoder_layers):
        policy = BuiltinFastWAMPolicy(config)
    return policy.to(device)
