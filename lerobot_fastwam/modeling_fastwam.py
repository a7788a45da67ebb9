"""``FastWAMPolicy``: the LeRobot policy around the Fast-WAM network.

It turns LeRobot batches into the network's inputs (tiled camera frames -> VAE latents, task strings ->
cached umT5 context, state -> context token), after checking them (``safety.py``) so that bad input fails
with a message that names the fix; it trains (``forward``) and acts (``predict_action_chunk``,
``select_action``). Weights come and go through ``checkpoints/weights.py``, cameras through ``data/camera_layout.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor, nn

from . import safety
from .checkpoints.builtin_config import read_saved_config
from .checkpoints.consistency import check_cameras, check_loaded_stats
from .checkpoints.model_card import fastwam_card_section
from .checkpoints.weights import (
    action_expert_from_video,
    assign_weights,
    drop_frozen_encoder_keys,
    materialize_random,
    read_weights,
    restore_fp32_masters,
    save_weights,
)
from .configuration_fastwam import FastWAMConfig, check_variant_change, saved_variant
from .data.camera_layout import current_frame, training_clip
from .data.embodiment import follow_dataset_state, use_relative_action_stats
from .data.latent_cache import LatentCache, skip_frame_decoding
from .data.latent_stats import estimate_latent_stats
from .data.predicted_video import labelled_chunks
from .encoders.frozen import load_or_explain
from .encoders.latent_encoder import LatentEncoder, build_latent_encoder
from .encoders.prompt_encoder import PromptEncoder, build_prompt_encoder
from .network.model import FastWAM, VelocityGuidance, future_latent_padding
from .rtc import rtc_guidance

logger = logging.getLogger(__name__)

# Optional precomputed inputs a batch may carry instead of frames / task strings.
LATENTS_KEY = "fastwam.latents"  # [B, C, F, h, w] normalised latents (F = 1 at inference)
TEXT_CONTEXT_KEY = "fastwam.text_context"  # [B, L, text_dim] umT5 context (padding zeroed)


class FastWAMPolicy(PreTrainedPolicy):
    config_class = FastWAMConfig
    name = "fastwam"
    _build_for_checkpoint = False  # set by from_pretrained: weights come from the checkpoint
    _rank_rng_split = False  # set by the first forward (_split_rank_rng)

    def __init__(self, config: FastWAMConfig, dataset_stats: dict | None = None, **kwargs: Any):
        super().__init__(config)
        config.validate_features()
        self.config = config
        device = config.device or "cpu"

        self.model = FastWAM(config, action_dim=config.action_dim, state_dim=config.state_dim)  # on the meta device
        if config.freeze_video_expert:
            self.model.video.requires_grad_(False)
        if not self._build_for_checkpoint:
            self._initialize_weights(device)

        # The frozen VAE and umT5 encoder are never part of the checkpoint. They are built now, so that a robot
        # does not wait for them at its first step, unless training reads a latent cache of the dataset.
        self.register_state_dict_post_hook(drop_frozen_encoder_keys)
        meta = kwargs.get("dataset_meta")
        use_relative_action_stats(config, meta)
        self._latent_cache = (
            LatentCache.find(meta.root, config, meta)
            if config.use_latent_cache and meta is not None and getattr(meta, "root", None)
            else None
        )
        if self._latent_cache is None:
            self.latent_encoder, self.prompt_encoder  # noqa: B018 - build them
        else:
            skip_frame_decoding(meta)
        self._resolve_latent_stats(meta)
        self.rtc_processor = RTCProcessor(config.rtc_config) if config.rtc_config is not None else None
        self.reset()

    def _resolve_latent_stats(self, dataset_meta) -> None:
        """Fix the per-channel latent normalisation (``config.latent_mean/std``, saved with the checkpoint).

        A checkpoint brings its own. Otherwise the codec's published statistics (the pretrained Wan2.2 VAE) are
        used, and any other codec gets statistics of the training data: from the latent cache, or estimated
        from the dataset's frames with the same estimator the cache uses.
        """
        cfg = self.config
        if cfg.latent_mean is None:
            stats = self._latent_cache.latent_stats if self._latent_cache is not None else None
            if stats is None:
                stats = self.latent_encoder.published_stats
            if stats is None and dataset_meta is not None and getattr(dataset_meta, "root", None):
                stats = self._estimate_latent_stats(dataset_meta)
            if stats is not None:
                cfg.latent_mean, cfg.latent_std = [float(v) for v in stats[0]], [float(v) for v in stats[1]]
        if cfg.latent_mean is None:
            logger.warning(
                "Fast-WAM: no latent statistics for video_codec=%r (no published ones, no training data); "
                "latents are used unnormalised. Train through lerobot-train (the statistics come from the "
                "dataset) or set --policy.latent_mean/--policy.latent_std.",
                cfg.video_codec,
            )
        channels = cfg.latent_channels
        mean = cfg.latent_mean if cfg.latent_mean is not None else [0.0] * channels
        std = cfg.latent_std if cfg.latent_std is not None else [1.0] * channels
        self.register_buffer("latent_mean", torch.tensor(mean).view(1, channels, 1, 1, 1), persistent=False)
        self.register_buffer("latent_std", torch.tensor(std).view(1, channels, 1, 1, 1), persistent=False)

    def _estimate_latent_stats(self, dataset_meta) -> tuple[list[float], list[float]]:
        from lerobot.datasets import LeRobotDataset  # noqa: PLC0415

        logger.info("Fast-WAM: estimating the latent statistics of %s from its frames.", dataset_meta.root)
        dataset = LeRobotDataset(dataset_meta.repo_id, root=dataset_meta.root)
        return estimate_latent_stats(self.latent_encoder, dataset, self.config)

    def normalize_latents(self, latents: Tensor) -> Tensor:
        return (latents.float() - self.latent_mean) / self.latent_std

    def denormalize_latents(self, latents: Tensor) -> Tensor:
        return latents.float() * self.latent_std + self.latent_mean

    @property
    def latent_encoder(self) -> LatentEncoder:
        return self._frozen("latent_encoder", build_latent_encoder)

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self._frozen("prompt_encoder", build_prompt_encoder)

    def _frozen(self, name: str, build) -> nn.Module:
        if name not in self._modules:
            param = next(self.model.parameters())  # still on the meta device while a checkpoint is pending
            device = self.config.device or "cpu" if param.is_meta else param.device
            self._modules[name] = build(self.config).to(device)  # add_module would probe this property again
        return self._modules[name]

    # ------------------------------------------------------------------------------------------------
    # Construction and checkpoints
    def _training_dtype(self, param: Tensor) -> torch.dtype:
        """In a policy built for training, trainable weights are fp32 master copies; frozen ones (a frozen
        video expert) live in the compute dtype."""
        return torch.float32 if param.requires_grad else self.config.torch_dtype

    def _initialize_weights(self, device: str) -> None:
        """Fresh policy (for training): video expert from the Wan2.2 repository when one is configured, the
        rest random; trainable weights in fp32."""
        cfg = self.config
        if cfg.use_pretrained_wan:
            from diffusers import WanTransformer3DModel  # noqa: PLC0415

            dtype = self._training_dtype(next(self.model.video.parameters()))
            video = load_or_explain(
                WanTransformer3DModel.from_pretrained, cfg.pretrained_model_id, "transformer", torch_dtype=dtype
            )
            video_state = video.state_dict()
            assign_weights(self.model.video, video_state, "Wan2.2 transformer/")
            # The action expert starts as a narrowed copy of the video expert (official recipe).
            action_shapes = {k: v.shape for k, v in self.model.action.state_dict().items()}
            action_dtype = self._training_dtype(next(self.model.action.parameters()))
            initial = action_expert_from_video(video_state, action_shapes)
            self.model.action.load_state_dict(
                {k: v.to(action_dtype) for k, v in initial.items()}, strict=False, assign=True
            )
        materialize_random(self.model, device, self._training_dtype)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> FastWAMPolicy:
        """LeRobot's loader, after checking that the requested ``config`` (LeRobot's scripts pass the saved config
        with the command line's ``--policy.*`` overrides applied) runs the checkpoint as a variant it may run
        as (``configuration_fastwam.check_variant_change``), on its own cameras, with statistics that fit its
        features (``checkpoints.consistency``), before anything is built (with no ``config``: the statistics after)."""
        config = kwargs.get("config")
        path = args[0] if args else kwargs.get("pretrained_name_or_path")
        saved = read_saved_config(path, kwargs) if config is not None and path is not None else None
        if saved is not None:
            check_variant_change(saved_variant(saved), config.variant, f"The checkpoint {path}")
            check_cameras(saved, config, f"The checkpoint {path}")
        if config is not None:
            follow_dataset_state(config, kwargs.get("dataset_meta"))
            check_loaded_stats(path, config, kwargs)
        cls._build_for_checkpoint = True
        try:
            policy = super().from_pretrained(*args, **kwargs)
        finally:
            cls._build_for_checkpoint = False
        if config is None:
            check_loaded_stats(path, policy.config, kwargs)
        policy.warm_up()
        return policy

    @torch.no_grad()
    def warm_up(self) -> None:
        """Compile and capture the action loop now (``FastWAM.action_loop_speedups``: on CUDA unless switched off)
        with a blank observation at batch size 1, so that a robot's first step does not wait for it; with RTC
        switched on, the guided path too. Then check the accelerated chunk against the eager one: a failure or a
        mismatch logs a warning and leaves this policy eager. Does nothing when the loop runs eager anyway."""
        device = self.latent_mean.device
        no_action_loop = self.model.mot.mask == "joint"  # Joint denoises video and actions together
        if no_action_loop or not any(self.model.action_loop_speedups(device)):
            return
        cfg = self.config
        batch = {key: torch.zeros(1, 3, h, w, device=device) for key, (h, w) in cfg.camera_tile_sizes.items()}
        if cfg.state_dim is not None:
            batch[OBS_STATE] = torch.zeros(1, cfg.state_dim, device=device)
        batch["task"] = [""]
        start = time.perf_counter()
        try:
            latents = self._current_latents(batch)
            generator = torch.Generator(device).manual_seed(0)
            noise = torch.randn(1, cfg.chunk_size, self.model.padded_action_dim, device=device, generator=generator)
            future = torch.randn(latents.shape[:2] + (cfg.num_latent_frames - 1,) + latents.shape[3:], device=device)
            future = future if self.model.samples_future else None
            with self._autocast():
                context = self._context(batch, 1)
                chunks = []
                for eager in (False, True):
                    self.model.eager_action_loop = eager
                    chunks.append(self.model.sample(latents, context, noise, cfg.num_inference_steps, future)[0])
                self.model.eager_action_loop = False
                if self.rtc_processor is not None and cfg.rtc_config.enabled:
                    guidance = self._rtc_guidance(1, chunks[1][0], None, 1)
                    self.model.sample(latents, context, noise, cfg.num_inference_steps, future, guidance)
        except Exception as exc:  # a missing compiler toolchain, an unsupported op: run eager rather than fail
            self.model.eager_action_loop = True
            logger.warning(
                "Fast-WAM: compiling the action loop failed (%s: %s); it runs eager.", type(exc).__name__, exc
            )
            return
        accelerated, eager = (chunk.float() for chunk in chunks)
        error = float((accelerated - eager).abs().max() / eager.abs().max().clamp_min(1e-6))
        tolerance = 1e-3 if cfg.torch_dtype == torch.float32 else 5e-2
        if not error <= tolerance:
            self.model.eager_action_loop = True
            logger.warning(
                "Fast-WAM: the compiled action loop differs from the eager one by %.2g (relative, tolerance %.0g); "
                "it runs eager. Please report this with your torch version and device.",
                error,
                tolerance,
            )
            return
        logger.info("Fast-WAM: action loop compiled and warmed up in %.1f s.", time.perf_counter() - start)

    @classmethod
    def _load_as_safetensor(cls, model: FastWAMPolicy, model_file: str, map_location: str, strict: bool):
        """Strict load (``checkpoints.weights``). A loaded policy runs inference in the compute dtype; frozen encoders
        keep the dtype they were built with; ``get_optim_params`` restores the fp32 masters from this file."""
        device = map_location if map_location and map_location != "mps" else "cpu"
        assign_weights(model, read_weights(model_file, device, model.config.torch_dtype), model_file)
        model._weights_file = model_file
        return model

    def _save_pretrained(self, save_directory, state_dict: dict[str, Tensor] | None = None) -> None:
        """LeRobot's layout, with a checksum in ``model.safetensors`` that loading verifies (``state_dict``: the
        caller's, gathered under FSDP)."""
        self.config._save_pretrained(save_directory)
        save_weights(self.state_dict() if state_dict is None else state_dict, save_directory / "model.safetensors")

    def get_optim_params(self) -> list[nn.Parameter]:
        """Called by LeRobot's trainer when it builds the optimizer: from here on trainable weights are fp32
        masters (mixed precision), also for a policy that was loaded in bf16 for inference."""
        restore_fp32_masters(self, getattr(self, "_weights_file", None))
        return [p for p in self.model.parameters() if p.requires_grad]

    def generate_model_card(self, dataset_repo_id: str, model_type: str, license, tags, cfg=None, dataset_meta=None):
        """LeRobot's card (written when ``lerobot-train`` pushes a checkpoint), opened by what this checkpoint
        needs (``checkpoints.model_card``)."""
        card = super().generate_model_card(
            dataset_repo_id, model_type, license, tags, cfg=cfg, dataset_meta=dataset_meta
        )
        section = fastwam_card_section(self.config, dataset_repo_id, getattr(cfg, "steps", None))
        card.text = section + card.text
        return card

    def _get_default_peft_targets(self) -> dict[str, Any]:
        """Defaults for ``lerobot-train --policy.path=... --peft.method_type=LORA``: LoRA on every linear layer
        of both experts' blocks (self-attention, cross-attention, FFN); the small robot-specific projections
        (state token, action in/out: input width ~7, below any useful rank) are trained in full."""
        block_linears = r"attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2)"
        return {
            "target_modules": rf"model\.mot\.(video|action)\.blocks\.\d+\.({block_linears})",
            "modules_to_save": ["model.state_encoder", "model.mot.action.action_in", "model.mot.action.action_out"],
        }

    def reset(self) -> None:
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        self._queue_owner: int | None = None  # the thread whose control loop filled the queue
        # With save_predicted_video: the latest chunk's video latents (normalised, CPU), [B, C, F, h, w], the
        # current frame then the imagined future. lerobot-eval takes them after each select_action (and sets
        # this back to None), concatenates a rollout's along dim 2 and calls decode_predicted_latents.
        self.last_predicted_latents: Tensor | None = None

    # ------------------------------------------------------------------------------------------------
    # Batch -> network inputs
    def _autocast(self):
        cfg_dtype = self.config.torch_dtype
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type, dtype=cfg_dtype, enabled=cfg_dtype != torch.float32)

    def _current_latents(self, batch: dict[str, Any]) -> Tensor:
        """Normalised latents of the current frame ``[B, C, 1, h, w]`` (inference)."""
        if LATENTS_KEY in batch:
            latents = batch[LATENTS_KEY].float()[:, :, :1]
            safety.check_finite(latents, LATENTS_KEY, safety.PRECOMPUTED_FIX)
            return latents
        latents = self.normalize_latents(self.latent_encoder(current_frame(batch, self.config)))
        safety.check_finite(latents, "first-frame latents", safety.VAE_FIX)  # from finite frames: the VAE made these
        return latents

    def _training_latents(self, batch: dict[str, Any]) -> Tensor:
        """Normalised latents of the training clip ``[B, C, F, h, w]``: precomputed, from the cache, or encoded."""
        if LATENTS_KEY in batch:
            return batch[LATENTS_KEY].float()
        if self._latent_cache is not None and "index" in batch:
            device = batch["index"].device
            return self.normalize_latents(self._latent_cache.latents(batch["index"]).to(device, non_blocking=True))
        clip = training_clip(batch, self.config, self.config.num_video_frames)
        return self.normalize_latents(self.latent_encoder(clip))

    def _prompts(self, batch: dict[str, Any], batch_size: int) -> tuple[str, ...] | None:
        """Each row's task string, or None when the batch brings its text context precomputed."""
        if TEXT_CONTEXT_KEY in batch:
            return None
        task = batch.get("task")
        if task is None:
            raise ValueError(
                "Fast-WAM is language-conditioned and the batch has no `task`. Give the instruction as the "
                "dataset task, `--task`/`--dataset.single_task` in lerobot-rollout, or precompute "
                f"`{TEXT_CONTEXT_KEY}`."
            )
        return (task,) * batch_size if isinstance(task, str) else tuple(task)

    def _text_context(self, batch: dict[str, Any], batch_size: int) -> Tensor:
        tasks = self._prompts(batch, batch_size)
        if tasks is None:
            text, fix = batch[TEXT_CONTEXT_KEY], safety.PRECOMPUTED_FIX
        elif self._latent_cache is not None and self.training:
            device = next(self.model.parameters()).device
            text = self._latent_cache.text_context(list(tasks)).to(device, non_blocking=True)
            fix = safety.LATENT_CACHE_FIX
        else:
            text, fix = self.prompt_encoder(list(tasks)), safety.UMT5_FIX
        safety.check_finite(text, "text context", fix)
        return text

    def _state(self, batch: dict[str, Any]) -> Tensor | None:
        dim = self.config.state_dim
        if dim is None:
            return None
        if OBS_STATE not in batch:
            raise ValueError(
                f"The policy was trained with `{OBS_STATE}` ({dim} values) but the batch has none. Provide the "
                "robot state, or train a policy on a dataset without state."
            )
        state = batch[OBS_STATE]
        if state.ndim == 3:  # [B, T, S] from observation_delta_indices: the current state is the first
            state = state[:, 0]
        if state.shape[-1] != dim:
            raise ValueError(
                f"`{OBS_STATE}` has {state.shape[-1]} values, the policy expects {dim}. Check the robot "
                "or dataset matches the one the policy was trained on."
            )
        safety.check_finite(state, OBS_STATE)
        if not self.training:  # a training batch is the dataset's own: its range is the training range
            safety.check_magnitude(state, OBS_STATE, self.config.max_normalized_input)
        return state

    def _context(self, batch: dict[str, Any], batch_size: int) -> Tensor:
        return self.model.build_context(self._text_context(batch, batch_size), self._state(batch))

    def _check_observation(self, batch: dict[str, Any]) -> int:
        return safety.check_observation(batch, self.config.ordered_camera_keys, self.config.state_dim is not None)

    # ------------------------------------------------------------------------------------------------
    # Training
    def _split_rank_rng(self) -> None:
        """Give each process of a multi-process run (DDP, FSDP) its own random stream, once, at the first forward.

        LeRobot seeds every rank alike, so each rank would draw the same noise levels and noises for its share of
        the global batch: N processes x B samples would see only B distinct draws per step. The shared stream is
        drawn once (the same draw on every rank) and each rank reseeds with it plus its rank; a single process is
        left untouched.
        """
        self._rank_rng_split = True
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            torch.manual_seed(int(torch.randint(0, 2**62, ())) + dist.get_rank())

    def forward(self, batch: dict[str, Any], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        if not self._rank_rng_split:
            self._split_rank_rng()
        cfg = self.config
        actions = batch[ACTION]
        if actions.ndim != 3 or actions.shape[-1] != cfg.action_dim:
            raise ValueError(
                f"`action` must be [batch, {cfg.chunk_size}, {cfg.action_dim}], got {tuple(actions.shape)}."
            )
        where = batch.get("index")
        safety.check_finite(
            actions,
            ACTION,
            "The dataset's recorded actions are not finite"
            + (f" (frame indices {where.flatten()[:8].tolist()})" if isinstance(where, Tensor) else "")
            + ": drop those episodes (lerobot-edit-dataset --operation.type=delete_episodes) or fix the recording.",
        )
        self._check_observation(batch)
        latents = self._training_latents(batch)
        frame_pad = batch.get(f"{cfg.ordered_camera_keys[0]}_is_pad")
        future_pad = None if frame_pad is None else future_latent_padding(frame_pad[:, : cfg.num_video_frames])
        with self._autocast():
            context = self._context(batch, actions.shape[0])
            loss = self.model.compute_loss(
                latents, context, actions, batch.get("action_is_pad"), future_pad, reduction=reduction
            )
        logged = {"loss_video": float(loss.video.mean()), "loss_action": float(loss.action.mean())}
        if loss.consistency is not None:
            logged["loss_consistency"] = float(loss.consistency.mean())
        return loss.total, logged

    # ------------------------------------------------------------------------------------------------
    # Inference
    def _initial_noise(self, batch_size: int, device: torch.device, shape: tuple[int, ...] | None = None) -> Tensor:
        """Noise for the action chunk (or another ``shape`` per sample, e.g. the future latents)."""
        shape = shape or (self.config.chunk_size, self.model.padded_action_dim)
        if self.config.inference_seed is None:
            return torch.randn(batch_size, *shape, device=device)
        # Fixed-seed noise (the paper's sampler): every sample of the batch starts from the same draw, so an
        # observation gives the same chunk wherever it sits in a batch.
        generator = torch.Generator("cpu").manual_seed(self.config.inference_seed)
        return torch.randn(1, *shape, generator=generator).to(device).expand(batch_size, *shape)

    def _future_noise(self, first: Tensor) -> Tensor:
        """Noise for the future latent frames ``[B, C, F - 1, h, w]`` after the first frame ``first``."""
        batch_size, channels, _, h, w = first.shape
        return self._initial_noise(batch_size, first.device, (channels, self.config.num_latent_frames - 1, h, w))

    def supports_rtc(self) -> bool:
        """Real-time chunking (LeRobot's ``lerobot.policies.rtc``) guides the action sampler's Euler steps."""
        return True

    def init_rtc_processor(self) -> None:
        """Build the RTC guidance from ``config.rtc_config`` (``lerobot-rollout --inference.type=rtc`` sets it
        and calls this)."""
        cfg = self.config.rtc_config
        self.rtc_processor = RTCProcessor(cfg) if cfg is not None else None
        if cfg is not None:
            self.warm_up()  # RTC's guided steps differentiate through the action expert: compiled separately

    def _rtc_guidance(
        self, inference_delay, prev_chunk_left_over, execution_horizon, batch_size: int
    ) -> VelocityGuidance | None:
        """The guidance for one chunk, or None (no RTC arguments, or the first chunk: nothing to continue)."""
        requested = inference_delay is not None or prev_chunk_left_over is not None or execution_horizon is not None
        enabled = self.rtc_processor is not None and self.config.rtc_config.enabled
        if requested and not enabled:
            raise ValueError(
                "predict_action_chunk got real-time-chunking arguments (inference_delay / prev_chunk_left_over / "
                "execution_horizon) but RTC is not configured, so they would be ignored. Run lerobot-rollout "
                "with --inference.type=rtc, or set policy.config.rtc_config = RTCConfig() and call "
                "policy.init_rtc_processor()."
            )
        if not enabled or prev_chunk_left_over is None:
            return None
        cfg = self.config
        safety.check_rtc_arguments(
            prev_chunk_left_over, inference_delay, execution_horizon, batch_size, cfg.chunk_size, cfg.action_dim,
            cfg.max_normalized_input,
        )  # fmt: skip
        return rtc_guidance(self.rtc_processor, prev_chunk_left_over, inference_delay or 0, execution_horizon)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Any],
        *,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
        execution_horizon: int | None = None,
    ) -> Tensor:
        """``[B, chunk_size, action_dim]`` normalised actions; never NaN or Inf (``safety.NonFiniteActionError``).

        The variant's sampler (``FastWAM.sample``). With ``save_predicted_video`` it also keeps the chunk's
        video in ``last_predicted_latents`` (Fast-WAM then imagines the future too; Joint and IDM generate it
        anyway). Thread-safe without ``save_predicted_video``: the network only reads its weights and the frozen
        encoders run under one lock (``FROZEN_ENCODER_LOCK``).

        Real-time chunking (``config.rtc_config``): ``inference_delay`` actions of the previous chunk run while
        this one is computed and ``prev_chunk_left_over`` (``[T, A]`` or ``[B, T, A]``, normalised as this chunk)
        is its unexecuted rest; each Euler step is guided toward it (LeRobot's ``RTCProcessor``).
        """
        if self.training:
            self.eval()
        self._check_observation(batch)
        latents = self._current_latents(batch)
        batch_size = latents.shape[0]  # also with precomputed latents and one task string for the whole batch
        guidance = self._rtc_guidance(inference_delay, prev_chunk_left_over, execution_horizon, batch_size)
        keep_video = self.config.save_predicted_video
        with self._autocast():
            context = self._context(batch, batch_size)
            noise = self._initial_noise(batch_size, latents.device)
            future_noise = self._future_noise(latents) if keep_video or self.model.samples_future else None
            steps = self.config.num_inference_steps
            prompts = self._prompts(batch, batch_size)
            actions, future = self.model.sample(latents, context, noise, steps, future_noise, guidance, prompts)
            actions = actions.float()
        if keep_video:
            self.last_predicted_latents = torch.cat([latents.float(), future.float()], dim=2).cpu()
        if not torch.isfinite(actions).all():
            raise safety.NonFiniteActionError(
                "Fast-WAM predicted a non-finite action chunk; it is not sent to the robot. Cause: "
                + safety.diagnose_non_finite_actions(self.model, self._state(batch))
            )
        return actions

    @torch.no_grad()
    def predict_future_frames(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """What the world model imagines from the current observation: ``(frames, latents)``.

        ``frames`` ``[B, 3, num_video_frames, H, W]`` in [0, 1] (the current frame, then the decoded future),
        ``latents`` the normalised future latents ``[B, C, F - 1, h, w]``. Fixed-seed noise as for actions. The
        video expert alone (``FastWAM.sample_future_latents``): for every variant the future its sampler
        generates, as video never attends to actions (IDM's first stage; the Joint sampler's video).
        """
        if self.training:
            self.eval()
        cfg = self.config
        if cfg.variant == "no_cotrain":
            logger.warning("Fast-WAM: a 'no_cotrain' policy's video expert never learned the future it imagines.")
        first = self._current_latents(batch)
        with self._autocast():
            context = self._context(batch, first.shape[0])
            future = self.model.sample_future_latents(
                first, context, self._future_noise(first), cfg.num_inference_steps
            )
        frames = self.latent_encoder.decode(self.denormalize_latents(torch.cat([first, future], dim=2)))
        return frames, future

    @torch.no_grad()
    def decode_predicted_latents(self, latents: Tensor) -> Tensor:
        """LeRobot's predicted-video hook (``lerobot-eval`` with ``save_predicted_video``): a rollout's
        ``last_predicted_latents`` concatenated along dim 2 -> ``[T, H', W', 3]`` uint8 frames on the CPU.

        Each chunk's ``num_latent_frames`` latents are decoded on their own (the current frame, then its imagined
        future: ``num_video_frames`` frames at the tiled ``image_size``), then laid out to be watched, labelled
        (``data.predicted_video``). The first environment of the batch: LeRobot writes one video per batch.
        """
        cfg = self.config
        per_chunk = cfg.num_latent_frames
        if latents.ndim != 5 or latents.shape[2] % per_chunk:
            raise ValueError(
                f"Expected [B, C, k * {per_chunk}, h, w] latents (k chunks of the current frame and its imagined "
                f"future), got {tuple(latents.shape)}."
            )
        chunks = latents[:1].to(self.latent_mean.device).split(per_chunk, dim=2)
        frames = torch.cat([self.latent_encoder.decode(self.denormalize_latents(c)) for c in chunks], dim=2)
        return labelled_chunks(frames[0], cfg.num_video_frames, cfg.video_frame_stride, cfg.n_action_steps)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """The next action of the queued chunk (a new chunk every ``n_action_steps`` calls).

        The queue belongs to one control loop: a call with another batch size than the queued chunk's starts a
        new chunk (the queued actions were for other environments), and a call from another thread while
        actions are queued is an error (two robots would share one queue). ``predict_action_chunk`` has no
        queue and may be called from any thread.
        """
        if self.training:
            self.eval()
        if self._action_queue:  # (with an empty queue, predict_action_chunk checks the batch)
            batch_size = self._check_observation(batch)
            if self._queue_owner != threading.get_ident():
                raise RuntimeError(
                    "select_action was called from a second thread while the first thread's action chunk is "
                    "queued: the queue belongs to one control loop. Use one policy per robot loop, or call "
                    "predict_action_chunk (no queue) from several threads."
                )
            if self._action_queue[0].shape[0] != batch_size:
                logger.warning(
                    "Fast-WAM: the batch size changed from %d to %d with actions queued; they are dropped and a "
                    "new chunk is predicted (call policy.reset() at the start of each episode).",
                    self._action_queue[0].shape[0],
                    batch_size,
                )
                self._action_queue.clear()
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, **kwargs)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
            self._queue_owner = threading.get_ident()
        return self._action_queue.popleft()
