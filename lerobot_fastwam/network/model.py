"""The Fast-WAM network: both experts, the state token, the co-training loss and the samplers.

Inputs here are already latents and text contexts; ``modeling_fastwam.FastWAMPolicy`` turns LeRobot batches
(camera frames, task strings, states) into them.

The paper's four models (``config.variant``) are one network; each differs from Fast-WAM by its attention mask
(``attention.py``, chosen here from ``config.attention_mask``), its training noise (``compute_loss``: IDM's
conditioning copy) and its sampler (``sample``):

- ``fastwam`` / ``no_cotrain``: prefill the clean first frame once, then denoise the actions (``sample_actions``);
- ``joint``: denoise the future video and the actions together (``sample_joint``);
- ``idm``: denoise the future video first (``sample_future_latents``), then the actions over it
  (``sample_actions`` with ``future``).

Few-step actions (``action_consistency_weight > 0``): the action expert also learns the velocity of a whole step
of a given size, trained to agree with two half-steps of itself (``compute_loss``, ``_consistency_target``), so
``sample_actions`` can take 1, 2, 4 or 8 steps (``flow_matching.shortcut_step_size``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from lerobot.policies.common.vla_utils import pad_vector
from torch import nn

from ..configuration_fastwam import FastWAMConfig
from .action_expert import ActionExpert
from .action_graph import StaticLoop
from .attention import resolve_backend
from .flow_matching import (
    CONSISTENCY_FRACTION,
    SHORTCUT_STEP_SIZES,
    TimestepLossWeight,
    add_noise,
    inference_noise_levels,
    sample_noise_levels,
    sample_shortcut_steps,
    shift_warp,
    shortcut_step_size,
    velocity_target,
)
from .mot import ContextKV, ExpertStream, MixtureOfTransformers, VideoCache
from .video_expert import VideoEmbedding, build_video_expert, embed_video, unembed_video

LOSS_REDUCTIONS = ("mean", "none")


@dataclass
class CoTrainingLoss:
    """``FastWAM.compute_loss``'s result: the loss to optimise and its two terms for logging."""

    total: torch.Tensor  # video_loss_weight * video + action_loss_weight * action: [] ("mean") or [B] ("none")
    video: torch.Tensor  # [B] video flow-matching loss per sample (timestep-weighted), detached
    action: torch.Tensor  # [B] action loss per sample as optimised (flow matching, timestep-weighted; the
    # self-consistency subset: its weighted consistency error), detached
    consistency: torch.Tensor | None = None  # [n] unweighted self-consistency error of the subset, detached


# (x_t, velocity_fn, noise_level, next_noise_level) -> the velocity to step with: a hook on the action sampler's
# Euler steps, which step from noise_level to next_noise_level.
VelocityGuidance = Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], float, float], torch.Tensor]

IDM_CONDITION_NOISE_PROB = 0.5  # official code (FastWAMIDM.video_cond_noise_prob); reference section 3


class FastWAM(nn.Module):
    """Both experts, the state token, the co-training loss and the samplers of ``config.variant``.

    The attention backend is resolved here from ``config.attention_backend`` for ``config.device`` (CPU when
    unset).

    ``action_dim`` / ``state_dim`` are the robot's. With ``config.max_action_dim`` / ``max_state_dim`` (pi0.5's
    padding) the network is built for those sizes instead: states and actions are zero-padded to them, the action
    loss scores the robot's dims only and the sampled chunk is cut back to them, so the weights fit any arm up to
    those sizes.
    """

    def __init__(self, config: FastWAMConfig, *, action_dim: int, state_dim: int | None):
        super().__init__()
        self.config = config
        self.action_dim = action_dim
        # Parameters are created on the meta device: the owner either loads a checkpoint into them or
        # materialises a random initialisation, so no weight is ever allocated twice. (RoPE tables, computed
        # rather than learned, are built on the CPU by the experts themselves.)
        with torch.device("meta"):
            video = build_video_expert(
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                head_dim=config.head_dim,
                ffn_dim=config.video_ffn_dim,
                in_channels=config.latent_channels,
                text_dim=config.text_dim,
                freq_dim=config.freq_dim,
            )
            action = ActionExpert(
                action_dim=config.max_action_dim or action_dim,
                hidden_dim=config.action_hidden_dim,
                ffn_dim=config.action_ffn_dim,
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                head_dim=config.head_dim,
                text_dim=config.text_dim,
                freq_dim=config.freq_dim,
                max_actions=max(config.chunk_size, 1024),
                step_size_conditioning=config.step_size_conditioning,
                num_train_timesteps=config.num_train_timesteps,
            )
            # Proprioception enters as one extra context token that both experts cross-attend to.
            state_in = config.max_state_dim or state_dim
            self.state_encoder = None if state_dim is None else nn.Linear(state_in, config.text_dim)
        self.mot = MixtureOfTransformers(
            video=video,
            action=action,
            attention_backend=resolve_backend(config.attention_backend, config.device or "cpu"),
            mask=config.attention_mask,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self._compiled_action_layers = None  # torch.compile(self.mot.action_layers), built on first use
        self._action_loop_graphs = StaticLoop()
        self._graphed_weights: tuple = ()  # which weight tensors the graphs read (see sample_actions)
        self.eager_action_loop = False  # True: neither compile nor CUDA graph (the warm-up's reference run)
        self._prompt_kv: tuple[tuple, ContextKV] | None = None  # (key, keys/values) of the last prompts' text
        self.loss_weight = TimestepLossWeight(config.num_train_timesteps, config.timestep_shift)

    @property
    def video(self):
        return self.mot.video

    @property
    def action(self) -> ActionExpert:
        return self.mot.action

    @property
    def padded_action_dim(self) -> int:
        """The action size the network is built for (of the samplers' noise): ``max_action_dim`` or the robot's."""
        return self.action.action_in.in_features

    def build_context(self, text_context: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Text context ``[B, L, text_dim]`` plus the state token -> ``[B, L (+1), text_dim]``."""
        if self.state_encoder is None:
            return text_context
        weight = self.state_encoder.weight
        token = self.state_encoder(pad_vector(state, weight.shape[1]).to(weight.dtype)).unsqueeze(1)
        return torch.cat([text_context.to(token.dtype), token], dim=1)

    def _video_stream(self, latents, frame_timesteps, context) -> tuple[ExpertStream, VideoEmbedding]:
        emb = embed_video(self.video, latents, frame_timesteps, context)
        return ExpertStream(emb.tokens, emb.modulation, emb.rope, emb.context), emb

    def _action_stream(self, noisy_actions, timesteps, context, step_sizes=None) -> ExpertStream:
        weight = self.action.action_in.weight
        return ExpertStream(
            self.action.action_in(noisy_actions.to(weight.dtype)),
            self.action.embed_timestep(timesteps, step_sizes),
            self.action.rope(noisy_actions.shape[1]),
            self.action.embed_context(context.to(weight.dtype)),
        )

    @property
    def samples_future(self) -> bool:
        """Whether this variant's sampler produces the future video anyway (Joint, IDM)."""
        return self.mot.mask in ("joint", "idm")

    def velocity(
        self,
        latents: torch.Tensor,
        frame_timesteps: torch.Tensor,
        context: torch.Tensor,
        noisy_actions: torch.Tensor,
        action_timesteps: torch.Tensor,
        condition: tuple[torch.Tensor, torch.Tensor] | None = None,
        action_step_sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint masked forward over all latent frames and the action chunk -> (video, action) velocities.

        ``condition``: IDM only (and required there), the conditioning copy of the video that the actions read,
        as (latents ``[B, C, F, h, w]``, per-frame timesteps ``[B, F]``). It runs through the video expert behind
        the noisy video, with the same positions; its output is not scored. ``action_step_sizes`` ``[B]``: the
        step size each action velocity is for (step-size conditioning only; ``None``: 0, the instantaneous one).
        """
        if (condition is not None) != (self.mot.mask == "idm"):
            raise ValueError(f"The conditioning video is IDM's and only IDM's input (this model: {self.mot.mask!r}).")
        video, emb = self._video_stream(latents, frame_timesteps, context)
        if condition is not None:
            cond, _ = self._video_stream(*condition, context)
            video = ExpertStream(
                torch.cat([video.tokens, cond.tokens], dim=1),
                torch.cat([video.modulation, cond.modulation], dim=1),  # one group per latent frame of each copy
                torch.cat([video.rope, cond.rope], dim=1),  # the same positions: the same video
                video.context,
            )
        action = self._action_stream(noisy_actions, action_timesteps, context, action_step_sizes)
        tokens_per_frame = emb.tokens.shape[1] // latents.shape[2]
        xv, xa = self.mot.joint(video, action, first_frame_len=tokens_per_frame)
        xv = xv[:, : emb.tokens.shape[1]]  # the noisy video's tokens (IDM: not the conditioning copy's)
        return unembed_video(self.video, xv, emb), self.action.action_out(xa)

    def compute_loss(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor | None = None,
        future_frame_is_pad: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> CoTrainingLoss:
        """The flow-matching co-training loss, ``video_loss_weight * video + action_loss_weight * action``.

        Each term is a per-sample mean squared velocity error over the unpadded future latent frames (video) or
        action steps (action), times Wan's timestep weight when ``timestep_loss_weighting`` is on. The noise
        levels and noises are drawn in this order: action level, action noise, video level, video noise; the
        action draws come first so that a run without video co-training (``video_loss_weight=0``, which draws
        a smaller video noise) gets the same action loss for the same seed. IDM then draws its conditioning
        copy (``_conditioning_video``); the other variants draw nothing more.

        With ``action_consistency_weight > 0`` the first quarter of the batch (``CONSISTENCY_FRACTION``) is
        trained on self-consistency instead of flow matching: each sample gets a step size ``d`` and a start on
        the ``1 / d``-step sampler's grid (``sample_shortcut_steps``, drawn last), and the action velocity
        conditioned on ``d`` is scored against where two ``d / 2`` steps of the network itself, without
        gradient, land (``_consistency_target``), times ``action_consistency_weight``. With weight 0 nothing of
        this runs and the loss is what it was.

        Args:
            latents: clean video latents ``[B, C, F, h, w]``; frame 0 stays clean (t=0) and is not scored.
            context: text (+ state) context ``[B, L, text_dim]``.
            actions: normalised target actions ``[B, H, A]`` (the robot's ``A``; zero-padded here to
                ``max_action_dim``, whose extra dims are not scored, as in pi0.5 and SmolVLA).
            action_is_pad: ``[B, H]``, True for steps past the episode end (not scored).
            future_frame_is_pad: ``[B, F - 1]``, True for future latent frames that are only padding.
            reduction: ``"mean"`` (``total`` is the batch mean) or ``"none"`` (``total`` per sample, ``[B]``).
        """
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}.")
        cfg = self.config
        if cfg.video_loss_weight == 0:
            # "Without video co-training" (``no_cotrain``): the future frames cannot reach the actions (the
            # mask), and nothing scores them, so only the clean first frame is run.
            latents, future_frame_is_pad = latents[:, :, :1], None
        batch, frames = latents.shape[0], latents.shape[2]
        actions = pad_vector(actions, self.padded_action_dim)
        s_action = sample_noise_levels(batch, cfg.timestep_shift, latents.device)
        noise_action = torch.randn_like(actions)
        s_video = sample_noise_levels(batch, cfg.timestep_shift, latents.device)
        noise_video = torch.randn_like(latents)
        noisy_video = add_noise(latents, noise_video, s_video)
        noisy_video[:, :, 0] = latents[:, :, 0]
        frame_t = self._frame_timesteps(s_video, batch, frames)
        condition = self._conditioning_video(latents) if self.mot.mask == "idm" else None
        target = velocity_target(actions, noise_action).float()
        step_sizes, consistent = None, 0
        if cfg.action_consistency_weight > 0:
            consistent = max(1, round(batch * CONSISTENCY_FRACTION))
            step, start = sample_shortcut_steps(consistent, latents.device)
            s_action = torch.cat([shift_warp(start, cfg.timestep_shift), s_action[consistent:]])
            step_sizes = torch.cat([step, step.new_zeros(batch - consistent)])
            noisy = add_noise(actions[:consistent], noise_action[:consistent], s_action[:consistent])
            shortcut = self._consistency_target(latents[:consistent, :, :1], context[:consistent], noisy, start, step)
            target = torch.cat([shortcut, target[consistent:]])
        action_t = s_action * cfg.num_train_timesteps
        pred_video, pred_action = self.velocity(
            noisy_video, frame_t, context, add_noise(actions, noise_action, s_action), action_t, condition, step_sizes
        )

        video_err = (pred_video.float() - velocity_target(latents, noise_video)).pow(2).mean(dim=(1, 3, 4))[:, 1:]
        action_err = (pred_action.float() - target)[..., : self.action_dim].pow(2).mean(dim=2)
        video_loss = _masked_mean(video_err, future_frame_is_pad) if frames > 1 else video_err.new_zeros(batch)
        action_loss = _masked_mean(action_err, action_is_pad)
        consistency = action_loss[:consistent].detach() if consistent else None
        if cfg.timestep_loss_weighting:
            video_loss = video_loss * self.loss_weight(frame_t[:, -1])
        action_weight = self.loss_weight(action_t) if cfg.timestep_loss_weighting else None
        if consistent:  # the self-consistency subset is weighted by its own weight, not by its timestep
            flow_weight = action_loss.new_ones(batch) if action_weight is None else action_weight
            shortcut_weight = action_loss.new_full((consistent,), cfg.action_consistency_weight)
            action_weight = torch.cat([shortcut_weight, flow_weight[consistent:]])
        if action_weight is not None:
            action_loss = action_loss * action_weight
        total = cfg.video_loss_weight * video_loss + cfg.action_loss_weight * action_loss
        return CoTrainingLoss(
            total=total.mean() if reduction == "mean" else total,
            video=video_loss.detach(),
            action=action_loss.detach(),
            consistency=consistency,
        )

    @torch.no_grad()
    def _consistency_target(
        self,
        first_frame_latents: torch.Tensor,
        context: torch.Tensor,
        noisy_actions: torch.Tensor,
        start: torch.Tensor,
        step: torch.Tensor,
    ) -> torch.Tensor:
        """The self-consistency target of one sampler step of size ``step`` from grid point ``start`` (both
        ``[n]``, fractions of the uniform grid): the velocity that lands where two steps of size ``step / 2`` of
        the network itself land, without gradient, through the cached action path the sampler runs (the
        actions read only the clean first frame). Below the smallest trained size, a half-step takes the
        instantaneous velocity (step size 0)."""
        cfg = self.config
        half = step / 2
        half = torch.where(half >= min(SHORTCUT_STEP_SIZES), half, torch.zeros_like(half))
        levels = [shift_warp(start - k * step / 2, cfg.timestep_shift).view(-1, 1, 1) for k in range(3)]
        cache, rope = self._action_cache(first_frame_latents, context, noisy_actions.shape[1])
        x = noisy_actions.float()
        for k in range(2):
            inputs = self.action.embed_timestep(levels[k].flatten() * cfg.num_train_timesteps, half)
            modulations = self.mot.action_modulations(inputs[None])[0]
            x = x + (levels[k + 1] - levels[k]) * self.action_velocity(x, modulations, rope, cache).float()
        return (x - noisy_actions.float()) / (levels[2] - levels[0])

    def _action_cache(
        self, latents: torch.Tensor, context: torch.Tensor, horizon: int, prompts: tuple[str, ...] | None = None
    ) -> tuple[VideoCache, torch.Tensor]:
        """The cached video that the action steps of a chunk read (``MixtureOfTransformers.prefill_video`` over
        the clean ``latents`` at t=0), and the action RoPE table. ``prompts``: the task string of each row when
        ``context``'s text came from the prompt encoder; the text's keys/values are then reused across chunks
        (``_prompt_context_kv``) and only the state token's are computed."""
        batch, frames = latents.shape[0], latents.shape[2]
        text_len = context.shape[1] - (self.state_encoder is not None)
        fresh = context if prompts is None else context[:, text_len:]
        video, emb = self._video_stream(latents, latents.new_zeros(batch, frames), fresh)
        kv = self.mot.context_kv(emb.context, self.action.embed_context(fresh.to(self.action.action_in.weight.dtype)))
        if prompts is not None:
            kv = self._prompt_context_kv(prompts, context[:, :text_len]).cat(kv)
        cache = self.mot.prefill_video(video, emb.tokens.shape[1] // frames, kv, num_actions=horizon)
        return cache, self.action.rope(horizon)

    def _prompt_context_kv(self, prompts: tuple[str, ...], text: torch.Tensor) -> ContextKV:
        """Both experts' cross-attention keys/values over the text context ``[B, L, text_dim]`` of ``prompts``.

        A robot runs one instruction for many chunks, and these were 11% of a one-step chunk at the paper's
        widths (batch 4, CPU). They are computed once per distinct prompt and kept for the last chunk's prompts
        (one prompt: about 190 MB at the paper's 30 layers in fp32), and computed anew when the prompts, the
        dtype or autocast, or any weight (``_version``: optimiser steps and loads count) changes.
        """
        unique = list(dict.fromkeys(prompts))
        key = (
            tuple(unique),
            text.dtype,
            text.device,
            torch.is_autocast_enabled(text.device.type),
            tuple((p.data_ptr(), p._version) for p in self.parameters()),
        )
        kept = self._prompt_kv  # read once: another thread may replace it
        if kept is None or kept[0] != key:
            rows = text[[prompts.index(p) for p in unique]]
            video_text = self.video.condition_embedder.text_embedder(rows.to(self.video.patch_embedding.weight.dtype))
            action_text = self.action.embed_context(rows.to(self.action.action_in.weight.dtype))
            kept = self._prompt_kv = (key, self.mot.context_kv(video_text, action_text))
        if len(unique) == 1:
            return kept[1].rows(None, len(prompts))
        return kept[1].rows(torch.tensor([unique.index(p) for p in prompts], device=text.device), len(prompts))

    def _frame_timesteps(self, levels: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Per-frame timesteps ``[B, frames]``: every frame at its sample's noise level (``levels`` ``[B]`` or one
        for all), the first frame clean (t=0), as the video expert reads them."""
        t = (levels * self.config.num_train_timesteps).reshape(-1, 1).expand(batch, frames).clone()
        t[:, 0] = 0.0
        return t

    def _conditioning_video(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IDM's conditioning copy of the training clip and its per-frame timesteps: as in the official code
        (``FastWAMIDM.training_loss``), each sample's copy is the clean clip, or with probability
        ``IDM_CONDITION_NOISE_PROB`` the clip noised at a level of its own; its first frame stays clean (t=0)."""
        cfg = self.config
        batch, frames = latents.shape[0], latents.shape[2]
        noised = torch.rand(batch, device=latents.device) < IDM_CONDITION_NOISE_PROB
        s_cond = sample_noise_levels(batch, cfg.timestep_shift, latents.device) * noised  # 0: clean
        cond = add_noise(latents, torch.randn_like(latents), s_cond)
        cond[:, :, 0] = latents[:, :, 0]
        return cond, self._frame_timesteps(s_cond, batch, frames)

    @torch.no_grad()
    def sample(
        self,
        first_frame_latents: torch.Tensor,
        context: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        future_noise: torch.Tensor | None = None,
        guidance: VelocityGuidance | None = None,
        prompts: tuple[str, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This variant's sampler -> (actions ``[B, H, A]``, future latents ``[B, C, F - 1, h, w]`` or None).

        ``fastwam`` / ``no_cotrain``: the cached action sampler; the future is imagined only when ``future_noise``
        is given (the actions never read it). ``joint``: video and actions denoised together. ``idm``: the video
        first, then the actions over it. Joint and IDM need ``future_noise``. ``prompts``: see ``sample_actions``.
        ``noise``: ``[B, H, padded_action_dim]``; the actions come back with the robot's ``A`` dims.
        """
        mask = self.mot.mask
        if mask != "fastwam" and future_noise is None:
            raise ValueError(f"The {mask!r} sampler denoises the future video: it needs future_noise.")
        if mask == "joint":
            if guidance is not None:
                raise ValueError(
                    "Action guidance (RTC) steers the action sampler of fastwam, no_cotrain and idm; the joint "
                    "sampler denoises video and actions together. Run this checkpoint as fastwam for RTC."
                )
            actions, future = self.sample_joint(first_frame_latents, context, noise, future_noise, num_steps)
        else:
            future = None
            if future_noise is not None:
                future = self.sample_future_latents(first_frame_latents, context, future_noise, num_steps)
            condition = future if mask == "idm" else None
            actions = self.sample_actions(first_frame_latents, context, noise, num_steps, condition, guidance, prompts)
        return actions[..., : self.action_dim], future  # the padded dims (max_action_dim) are no joint of this arm

    @torch.no_grad()
    def sample_actions(
        self,
        first_frame_latents: torch.Tensor,
        context: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        future: torch.Tensor | None = None,
        guidance: VelocityGuidance | None = None,
        prompts: tuple[str, ...] | None = None,
    ) -> torch.Tensor:
        """Cached inference: prefill the clean video the actions read once, then Euler-integrate the actions.

        Fast-WAM: the video is the first frame ``[B, C, 1, h, w]`` alone. IDM: the first frame and ``future``, the
        generated future latents ``[B, C, F - 1, h, w]``, all at t=0 (the official ``FastWAMIDM.infer_joint``).
        Everything that is constant within the chunk is computed once before the loop: the video's per-layer
        keys/values, the action expert's cross-attention keys/values, RoPE tables and the adaLN modulation of
        every step. ``guidance(x_t, velocity_fn, noise_level, next_noise_level)`` may replace each step's velocity
        (real-time chunking: ``modeling_fastwam`` passes LeRobot's ``RTCProcessor.denoise_step``). ``prompts``:
        each row's task string when the text context came from the prompt encoder; the text's keys/values are
        then kept from chunk to chunk (``_prompt_context_kv``).
        """
        if (future is not None) != (self.mot.mask == "idm"):
            raise ValueError(f"Only IDM's actions read a generated future (this model: {self.mot.mask!r}).")
        cfg = self.config
        batch, horizon = noise.shape[0], noise.shape[1]
        latents = first_frame_latents
        if future is not None:
            latents = torch.cat([first_frame_latents.float(), future.float()], dim=2)
        cache, rope = self._action_cache(latents, context, horizon, prompts)

        levels = inference_noise_levels(num_steps, cfg.timestep_shift)  # on the CPU: no sync inside a graph
        step_timesteps = (levels[:-1] * cfg.num_train_timesteps).to(noise.device).repeat_interleave(batch)
        step_size = None
        if self.action.step_size_embedder is not None:  # few-step sampling: each step's own size
            step_size = torch.tensor(shortcut_step_size(num_steps), device=noise.device)
        step_inputs = self.action.embed_timestep(step_timesteps, step_size).unflatten(0, (num_steps, batch))
        modulations = self.mot.action_modulations(step_inputs)
        levels = levels.tolist()

        x = noise.float()
        if guidance is None and self.action_loop_speedups(x.device)[1]:
            # The same loop, replayed as one CUDA graph (``action_graph``); its tensors travel as one flat list.
            # A graph reads the weights at the addresses it was captured with: weights replaced since (fp32
            # masters restored, LoRA adapters added, another dtype) mean new graphs.
            weights = tuple((p.data_ptr(), p.dtype) for p in self.action.parameters())
            if weights != self._graphed_weights:
                self._action_loop_graphs = StaticLoop(capture=self._action_loop_graphs.capture)
                self._graphed_weights = weights
            layers = len(cache.keys)

            def graphed_loop(t: list[torch.Tensor]) -> torch.Tensor:
                context_kv = list(zip(t[3 + 2 * layers :: 2], t[4 + 2 * layers :: 2], strict=True))
                graph_cache = VideoCache(cache.video_len, t[3 : 3 + layers], t[3 + layers : 3 + 2 * layers], context_kv)
                return self._euler_loop(t[0], t[1], t[2], graph_cache, levels, None)

            flat = [x, modulations, rope, *cache.keys, *cache.values, *(kv for pair in cache.context_kv for kv in pair)]
            return self._action_loop_graphs(graphed_loop, flat, key=(cache.video_len, tuple(levels)))
        return self._euler_loop(x, modulations, rope, cache, levels, guidance)

    def _euler_loop(
        self,
        x: torch.Tensor,
        modulations: torch.Tensor,
        rope: torch.Tensor,
        cache: VideoCache,
        levels: list[float],
        guidance: VelocityGuidance | None,
    ) -> torch.Tensor:
        """Euler-integrate the actions from noise ``x`` (level ``levels[0]``) to ``levels[-1]``."""
        for step in range(len(levels) - 1):

            def velocity(x_t: torch.Tensor, step: int = step) -> torch.Tensor:
                return self.action_velocity(x_t, modulations[step], rope, cache).float()

            v = velocity(x) if guidance is None else guidance(x, velocity, levels[step], levels[step + 1])
            x = x + (levels[step + 1] - levels[step]) * v
        return x

    def action_velocity(
        self, noisy_actions: torch.Tensor, modulations: torch.Tensor, rope: torch.Tensor, cache: VideoCache
    ) -> torch.Tensor:
        """The action expert's velocity ``[B, H, A]`` for one denoising step of ``sample_actions`` (its input
        projection, its layers over the cached video, compiled when ``action_loop_speedups`` says so, its output
        projection). ``modulations``: the step's slice of ``MixtureOfTransformers.action_modulations``."""
        tokens = self.action.action_in(noisy_actions.to(self.action.action_in.weight.dtype))
        action_layers = self.mot.action_layers
        if self.action_loop_speedups(tokens.device)[0]:
            if self._compiled_action_layers is None:
                self._compiled_action_layers = torch.compile(self.mot.action_layers)
            action_layers = self._compiled_action_layers
        return self.action.action_out(action_layers(tokens, modulations, rope, cache))

    def action_loop_speedups(self, device: torch.device) -> tuple[bool, bool]:
        """``(compile, cuda_graph)`` for the action loop on ``device``: ``config.compile_action_step`` and
        ``config.cuda_graph``, where unset on for CUDA only (on a CPU compiling costs 20-30 s per process for
        about 30% off each chunk; ``docs/benchmarks.md``). Both off while ``eager_action_loop`` is set."""
        on_cuda = device.type == "cuda"
        compile_step, graph = self.config.compile_action_step, self.config.cuda_graph
        if graph and not on_cuda:
            raise ValueError(f"cuda_graph=True needs a CUDA device; this policy runs on {device}. Unset it.")
        if self.eager_action_loop:
            return False, False
        return (on_cuda if compile_step is None else compile_step), (on_cuda if graph is None else graph)

    @torch.no_grad()
    def sample_joint(
        self,
        first_frame_latents: torch.Tensor,
        context: torch.Tensor,
        noise: torch.Tensor,
        future_noise: torch.Tensor,
        num_steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast-WAM-Joint: Euler-integrate the future latent frames and the actions together, both at the same
        noise level each step, every step one joint forward in which the actions read the noisy future.

        As in the official code (``FastWAMJoint.infer_joint``), every step runs the whole sequence, the clean first
        frame included (under this mask its keys/values do not change; nothing is cached).
        Returns (actions ``[B, H, A]``, future latents ``[B, C, F - 1, h, w]``).
        """
        cfg = self.config
        batch, frames = noise.shape[0], future_noise.shape[2] + 1
        levels = inference_noise_levels(num_steps, cfg.timestep_shift).to(noise.device)
        first = first_frame_latents.float()
        x_video, x_action = future_noise.float(), noise.float()
        for step in range(num_steps):
            frame_t = self._frame_timesteps(levels[step], batch, frames)
            video_velocity, action_velocity = self.velocity(
                torch.cat([first, x_video], dim=2),
                frame_t,
                context,
                x_action,
                (levels[step] * cfg.num_train_timesteps).expand(batch),
            )
            delta = levels[step + 1] - levels[step]
            x_video = x_video + delta * video_velocity[:, :, 1:].float()
            x_action = x_action + delta * action_velocity.float()
        return x_action, x_video

    @torch.no_grad()
    def sample_future_latents(
        self, first_frame_latents: torch.Tensor, context: torch.Tensor, noise: torch.Tensor, num_steps: int
    ) -> torch.Tensor:
        """Imagine the future: Euler-integrate the future latent frames ``noise`` ``[B, C, F - 1, h, w]`` given
        the clean first frame (t=0), with the video expert alone (video never attends to actions).

        IDM's first stage. Video never reads actions under any mask, so this is also the future the Joint
        sampler produces. Not on Fast-WAM's action path: its actions never read these frames; it shows what the
        world model learned (``FastWAMPolicy.predict_future_frames``, ``save_predicted_video``).
        """
        cfg = self.config
        batch, frames = noise.shape[0], noise.shape[2] + 1
        levels = inference_noise_levels(num_steps, cfg.timestep_shift).to(noise.device)
        x = noise.float()
        for step in range(num_steps):
            frame_t = self._frame_timesteps(levels[step], batch, frames)
            latents = torch.cat([first_frame_latents.float(), x], dim=2)
            video, emb = self._video_stream(latents, frame_t, context)
            tokens, _ = self.mot.joint(video, None, first_frame_len=emb.tokens.shape[1] // frames)
            velocity = unembed_video(self.video, tokens, emb)[:, :, 1:]
            x = x + (levels[step + 1] - levels[step]) * velocity.float()
        return x


def _masked_mean(values: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of ``[B, N]`` values, skipping padded entries (all-padded rows give 0)."""
    if is_pad is None:
        return values.mean(dim=1)
    valid = (~is_pad).to(values.dtype)
    return (values * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)


def future_latent_padding(frame_is_pad: torch.Tensor) -> torch.Tensor:
    """Model-frame padding ``[B, T]`` -> future latent-frame padding ``[B, (T - 1) / 4]``.

    Latent frame j >= 1 encodes frames 4(j-1)+1 .. 4j; it is padding when all of them are.
    """
    tail = frame_is_pad[:, 1:]
    return tail.unflatten(1, (-1, 4)).all(dim=2)
