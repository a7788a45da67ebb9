"""``FastWAMPolicy``: the LeRobot policy around the Fast-WAM network.

It turns LeRobot batches into the network's inputs (tiled camera frames -> VAE latents, task strings ->
cached umT5 context, state -> context token), checks them first so that bad input fails with a message that
names the fix, and owns checkpoint loading (strict, safetensors, without materialising weights twice).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from .attention import resolve_backend
from .camera_layout import tile
from .checkpoint_conversion import action_expert_from_video, is_wan_layout, wan_layout_to_plugin
from .configuration_fastwam import FastWAMConfig
from .frozen_encoders import (
    LatentEncoder,
    PromptEncoder,
    _load_or_explain,
    build_latent_encoder,
    build_prompt_encoder,
    estimate_latent_stats,
)
from .latent_cache import LatentCache
from .model import FastWAM, future_latent_padding
from .processor_fastwam import resize_camera
from .safety import NonFiniteActionError, check_finite, check_observation, diagnose_non_finite_actions

logger = logging.getLogger(__name__)

# Optional precomputed inputs a batch may carry instead of frames / task strings.
LATENTS_KEY = "fastwam.latents"  # [B, C, F, h, w] normalised latents (F = 1 at inference)
TEXT_CONTEXT_KEY = "fastwam.text_context"  # [B, L, text_dim] umT5 context (padding zeroed)

def _materialize_random(module: nn.Module, device: torch.device | str, dtype_of) -> None:
    """Allocate meta parameters on ``device`` (in ``dtype_of(param)``) with their modules' default init."""
    for sub in module.modules():
        metas = [name for name, p in sub._parameters.items() if p is not None and p.is_meta]
        if not metas:
            continue
        for name in metas:
            old = sub._parameters[name]
            new = torch.empty_like(old, device=device, dtype=dtype_of(old))
            sub._parameters[name] = nn.Parameter(new, old.requires_grad)
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        if "scale_shift_table" in metas:  # diffusers initialises adaLN tables as randn / sqrt(dim)
            table = sub.scale_shift_table
            with torch.no_grad():
                table.copy_(torch.randn_like(table) / table.shape[-1] ** 0.5)


class FastWAMPolicy(PreTrainedPolicy):
    config_class = FastWAMConfig
    name = "fastwam"
    _build_for_checkpoint = False  # set by from_pretrained: weights come from the checkpoint

    def __init__(self, config: FastWAMConfig, dataset_stats: dict | None = None, **kwargs: Any):
        super().__init__(config)
        config.validate_features()
        self.config = config
        device = config.device or "cpu"

        self.model = FastWAM(config, config.action_dim, config.state_dim)  # parameters on the meta device
        if config.freeze_video_expert:
            self.model.video.requires_grad_(False)
        if not self._build_for_checkpoint:
            self._initialize_weights(device)

        # The frozen VAE and umT5 encoder are never part of the checkpoint. They are built now, so that a robot
        # does not wait for them at its first step, unless training reads a latent cache of the dataset.
        self.register_state_dict_post_hook(_drop_frozen_encoder_keys)
        meta = kwargs.get("dataset_meta")
        self._latent_cache = (
            LatentCache.find(meta.root, config, meta)
            if config.use_latent_cache and meta is not None and getattr(meta, "root", None)
            else None
        )
        if self._latent_cache is None:
            self.latent_encoder, self.prompt_encoder  # noqa: B018 - build them
        self._resolve_latent_stats(meta)
        self.model.mot.backend = resolve_backend(config.attention_backend, device)
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
                "dataset) or set --policy.latent_mean/--policy.latent_std.", cfg.video_codec,
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
        return estimate_latent_stats(self.latent_encoder, dataset, lambda batch, n: self._frames(batch, n))

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

    def _promote_trainable_to_fp32(self) -> None:
        """Trainable weights become fp32 masters. A policy loaded in a lower compute dtype takes them from the
        checkpoint it was loaded from, which holds the fp32 masters it was trained with: resuming is exact,
        not a bf16 rounding of the masters."""
        saved = getattr(self, "_weights_file", None)
        lowered = {
            name: param for name, param in self.named_parameters()
            if param.requires_grad and param.dtype != torch.float32
        }
        if not lowered:
            return
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(safe_open(saved, framework="pt")) if saved else None
            stored = set(f.keys()) if f is not None else set()
            for name, param in lowered.items():
                exact = name in stored and f.get_slice(name).get_dtype() == "F32"
                param.data = f.get_tensor(name).to(param.device) if exact else param.data.float()

    def _initialize_weights(self, device: str) -> None:
        """Fresh policy (for training): video expert from the Wan2.2 repository when one is configured, the
        rest random; trainable weights in fp32."""
        cfg = self.config
        if cfg.use_pretrained_wan:
            from diffusers import WanTransformer3DModel  # noqa: PLC0415

            dtype = self._training_dtype(next(self.model.video.parameters()))
            video = _load_or_explain(
                WanTransformer3DModel.from_pretrained, cfg.pretrained_model_id, "transformer", torch_dtype=dtype
            )
            video_state = video.state_dict()
            self._assign(self.model.video, video_state, "Wan2.2 transformer/")
            # The action expert starts as a narrowed copy of the video expert (official recipe).
            action_shapes = {k: v.shape for k, v in self.model.action.state_dict().items()}
            action_dtype = self._training_dtype(next(self.model.action.parameters()))
            initial = action_expert_from_video(video_state, action_shapes)
            self.model.action.load_state_dict(
                {k: v.to(action_dtype) for k, v in initial.items()}, strict=False, assign=True
            )
        _materialize_random(self.model, device, self._training_dtype)

    @staticmethod
    def _assign(module: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
        expected = module.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        mismatched = sorted(
            f"{k}: checkpoint {tuple(state_dict[k].shape)} {state_dict[k].dtype} vs model "
            f"{tuple(expected[k].shape)} {expected[k].dtype}"
            for k in set(expected) & set(state_dict)
            if tuple(state_dict[k].shape) != tuple(expected[k].shape)
            or state_dict[k].is_floating_point() != expected[k].is_floating_point()
        )
        if missing or unexpected or mismatched:
            raise RuntimeError(
                f"Cannot load the Fast-WAM weights from {source}: the checkpoint does not match the model "
                f"built from its config.\n  missing: {_head(missing)}\n  unexpected: {_head(unexpected)}\n"
                f"  wrong shape or dtype: {_head(mismatched)}\nCheck that the config (layers, widths, action/state "
                "dimensions, cameras) is the one the checkpoint was trained with."
            )
        module.load_state_dict(state_dict, strict=False, assign=True)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> FastWAMPolicy:
        cls._build_for_checkpoint = True
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            cls._build_for_checkpoint = False

    @classmethod
    def _load_as_safetensor(cls, model: FastWAMPolicy, model_file: str, map_location: str, strict: bool):
        """Strict load: every missing, unexpected or mis-shaped tensor is an error that names it."""
        device = map_location if map_location and map_location != "mps" else "cpu"
        try:
            with safe_open(model_file, framework="pt", device=str(device)) as f:
                state_dict = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        except SafetensorError as err:
            size = Path(model_file).stat().st_size
            raise ValueError(
                f"{model_file} ({size} bytes) is not a readable safetensors file ({err}): it is empty, truncated "
                "(an interrupted download or save) or not a Fast-WAM checkpoint. Re-download or re-save it."
            ) from err
        if is_wan_layout(list(state_dict)):  # saved by LeRobot's built-in fastwam
            state_dict = wan_layout_to_plugin(state_dict)
        # A loaded policy runs inference in the compute dtype; get_optim_params restores fp32 masters when
        # it is fine-tuned. Frozen encoders keep the dtype they were built with. CPU tensors from safe_open
        # are views of the memory-mapped file: each is copied (or converted) once, so the parameters own their
        # memory and the file may be overwritten later, and the peak stays at one copy of the weights.
        compute = model.config.torch_dtype
        for key, value in list(state_dict.items()):
            target = compute if key.startswith("model.") else value.dtype
            if value.is_floating_point() and (value.dtype != target or value.device.type == "cpu"):
                state_dict[key] = value.to(target, copy=True)
        non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if non_finite:
            raise ValueError(
                f"{model_file} holds NaN or Inf in {_head(sorted(non_finite))}: the checkpoint is corrupt or was "
                "saved after training diverged. Load an earlier checkpoint."
            )
        cls._assign(model, state_dict, model_file)
        model._weights_file = model_file  # fp32 masters for training (_promote_trainable_to_fp32)
        return model

    def get_optim_params(self) -> list[nn.Parameter]:
        """Called by LeRobot's trainer when it builds the optimizer: from here on trainable weights are fp32
        masters (mixed precision), also for a policy that was loaded in bf16 for inference."""
        self._promote_trainable_to_fp32()
        return [p for p in self.model.parameters() if p.requires_grad]

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

    # ------------------------------------------------------------------------------------------------
    # Batch -> network inputs
    def _autocast(self):
        cfg_dtype = self.config.torch_dtype
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type, dtype=cfg_dtype, enabled=cfg_dtype != torch.float32)

    def _frames(self, batch: dict[str, Any], num_frames: int | None) -> Tensor:
        return tiled_frames(batch, self.config, num_frames)

    def _latents(self, batch: dict[str, Any], num_frames: int | None) -> Tensor:
        if LATENTS_KEY in batch:
            latents = batch[LATENTS_KEY].float()
            return latents if num_frames is not None else latents[:, :, :1]
        if self._latent_cache is not None and num_frames is not None and "index" in batch:
            device = batch["index"].device
            return self.normalize_latents(self._latent_cache.latents(batch["index"]).to(device, non_blocking=True))
        return self.normalize_latents(self.latent_encoder(self._frames(batch, num_frames)))

    def _text_context(self, batch: dict[str, Any], batch_size: int) -> Tensor:
        if TEXT_CONTEXT_KEY in batch:
            return batch[TEXT_CONTEXT_KEY]
        task = batch.get("task")
        if task is None:
            raise ValueError(
                "Fast-WAM is language-conditioned and the batch has no `task`. Give the instruction as the "
                "dataset task, `--task`/`--dataset.single_task` in lerobot-rollout, or precompute "
                f"`{TEXT_CONTEXT_KEY}`."
            )
        tasks = [task] * batch_size if isinstance(task, str) else list(task)
        if self._latent_cache is not None and self.training:
            device = next(self.model.parameters()).device
            return self._latent_cache.text_context(tasks).to(device, non_blocking=True)
        return self.prompt_encoder(tasks)

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
        check_finite(state, OBS_STATE)
        return state

    def _context(self, batch: dict[str, Any], batch_size: int) -> Tensor:
        return self.model.build_context(self._text_context(batch, batch_size), self._state(batch))

    def _check_observation(self, batch: dict[str, Any]) -> int:
        return check_observation(batch, self.config.ordered_camera_keys, self.config.state_dim is not None)

    # ------------------------------------------------------------------------------------------------
    # Training
    def forward(self, batch: dict[str, Any], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        actions = batch[ACTION]
        if actions.ndim != 3 or actions.shape[-1] != cfg.action_dim:
            raise ValueError(
                f"`action` must be [batch, {cfg.chunk_size}, {cfg.action_dim}], got {tuple(actions.shape)}."
            )
        check_finite(actions, ACTION)
        self._check_observation(batch)
        latents = self._latents(batch, cfg.num_video_frames)
        frame_pad = batch.get(f"{cfg.ordered_camera_keys[0]}_is_pad")
        future_pad = None if frame_pad is None else future_latent_padding(frame_pad[:, : cfg.num_video_frames])
        with self._autocast():
            context = self._context(batch, actions.shape[0])
            terms = self.model.compute_loss(latents, context, actions, batch.get("action_is_pad"), future_pad)
        per_sample = cfg.video_loss_weight * terms.video + cfg.action_loss_weight * terms.action
        info = {
            "loss_video": float(terms.video.detach().mean()),
            "loss_action": float(terms.action.detach().mean()),
        }
        if reduction == "none":
            return per_sample, info
        return per_sample.mean(), info

    # ------------------------------------------------------------------------------------------------
    # Inference
    def _initial_noise(self, batch_size: int, device: torch.device, shape: tuple[int, ...] | None = None) -> Tensor:
        """Noise for the action chunk (or another ``shape`` per sample, e.g. the future latents)."""
        shape = shape or (self.config.chunk_size, self.config.action_dim)
        if self.config.inference_seed is None:
            return torch.randn(batch_size, *shape, device=device)
        # Fixed-seed noise (the paper's sampler): every sample of the batch starts from the same draw, so an
        # observation gives the same chunk wherever it sits in a batch.
        generator = torch.Generator("cpu").manual_seed(self.config.inference_seed)
        return torch.randn(1, *shape, generator=generator).to(device).expand(batch_size, *shape)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """``[B, chunk_size, action_dim]`` normalised actions; never NaN or Inf (``NonFiniteActionError``).

        Thread-safe: it reads the weights and the prompt cache only (the cache's updates are locked).
        """
        if self.training:
            self.eval()
        self._check_observation(batch)
        latents = self._latents(batch, None)
        batch_size = latents.shape[0]
        with self._autocast():
            context = self._context(batch, batch_size)
            noise = self._initial_noise(batch_size, latents.device)
            actions = self.model.sample_actions(latents, context, noise, self.config.num_inference_steps).float()
        if not torch.isfinite(actions).all():
            raise NonFiniteActionError(
                "Fast-WAM predicted a non-finite action chunk; it is not sent to the robot. Cause: "
                + diagnose_non_finite_actions(self.model, self._state(batch))
            )
        return actions

    @torch.no_grad()
    def predict_future_frames(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """What the world model imagines from the current observation: ``(frames, latents)``.

        ``frames`` ``[B, 3, num_video_frames, H, W]`` in [0, 1] (the current frame, then the decoded future),
        ``latents`` the normalised future latents ``[B, C, F - 1, h, w]``. Fixed-seed noise as for actions.
        """
        if self.training:
            self.eval()
        cfg = self.config
        first = self._latents(batch, None)
        batch_size, _, _, h, w = first.shape
        noise = self._initial_noise(batch_size, first.device, (cfg.latent_channels, cfg.num_latent_frames - 1, h, w))
        with self._autocast():
            context = self._context(batch, batch_size)
            future = self.model.sample_future_latents(first, context, noise, cfg.num_inference_steps)
        frames = self.latent_encoder.decode(self.denormalize_latents(torch.cat([first, future], dim=2)))
        return frames, future

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
        batch_size = self._check_observation(batch)
        if self._action_queue:
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
                    self._action_queue[0].shape[0], batch_size,
                )
                self._action_queue.clear()
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, **kwargs)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
            self._queue_owner = threading.get_ident()
        return self._action_queue.popleft()


def tiled_frames(batch: dict[str, Any], config: FastWAMConfig, num_frames: int | None) -> Tensor:
    """Tile the cameras (``camera_layout``) -> ``[B, 3, T, H, W]`` in [0, 1]. ``num_frames=None``: current frame."""
    cfg = config
    keys = cfg.ordered_camera_keys
    absent = [k for k in keys if k not in batch]
    if absent:
        present = sorted(k for k in batch if k.startswith("observation.images.") and not k.endswith("_is_pad"))
        raise ValueError(
            f"Fast-WAM expects cameras {keys} but the batch lacks {absent} (it has {present}). "
            "Map camera names with `--rename_map='{\"observation.images.yours\": \"observation.images.ours\"}'`."
        )
    tiles = []
    for key, (tile_h, tile_w) in cfg.camera_tile_sizes.items():
        image = batch[key]
        if num_frames is None:
            if image.ndim == 5:  # [B, T, 3, H, W]: keep the current (first) frame
                image = image[:, 0]
            image = image.unsqueeze(1)
        elif image.ndim != 5 or image.shape[1] < num_frames:
            got = image.shape[1] if image.ndim == 5 else 1
            raise ValueError(
                f"Training needs {num_frames} frames of `{key}` per sample (the current frame and the "
                f"future ones, every {cfg.video_frame_stride} dataset frames), got {got}. Load the dataset "
                "with the policy's `observation_delta_indices` (lerobot-train does this)."
            )
        else:
            image = image[:, :num_frames]
        if image.shape[2] != 3:
            raise ValueError(f"Camera `{key}` must have 3 channels, got shape {tuple(image.shape[2:])}.")
        if tuple(image.shape[-2:]) != (tile_h, tile_w):  # pipelines without our resize step (built-in's)
            image = resize_camera(image, key, tile_h, tile_w, cfg.camera_layout)
        check_finite(image, key)
        low, high = torch.aminmax(image.detach())
        if high.item() > 1.0 + 1e-3 or low.item() < -1e-3:
            raise ValueError(
                f"Camera `{key}` has values in [{low.item():.3g}, {high.item():.3g}]; Fast-WAM expects "
                "float images in [0, 1] (LeRobot's convention). Divide uint8 images by 255."
            )
        tiles.append(image)
    return tile(cfg.camera_layout, tiles).transpose(1, 2)


def _head(names: list[str], limit: int = 12) -> str:
    return str(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _drop_frozen_encoder_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith((f"{prefix}latent_encoder.", f"{prefix}prompt_encoder."))]:
        del state_dict[key]
