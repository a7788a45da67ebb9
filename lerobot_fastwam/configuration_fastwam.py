"""Configuration of the Fast-WAM policy.

Every architecture number defaults to the paper's model (Wan2.2-TI2V-5B video expert plus a 1 B action
expert). ``--policy.preset=tiny`` swaps in a model small enough for CPU tests and demos; fields a user sets
explicitly on the command line win over the preset.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature, PreTrainedConfig
from lerobot.optim import CosineDecayWithWarmupSchedulerConfig, OptimizerConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.utils.constants import ACTION, OBS_STATE

from .data.camera_layout import FITS, LAYOUTS, check_crop_box, tile_sizes
from .data.embodiment import check_embodiment
from .optim import AdamW8bitConfig, FusedAdamWConfig

logger = logging.getLogger(__name__)

WAN22_TI2V_5B_DIFFUSERS = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
FEW_STEPS = 4  # below this many steps, a plain flow-matching policy is warned about (num_inference_steps)

# Presets resolve every architecture field the user left unset (None). "wan2.2-ti2v-5b" is the paper's model
# and the default; the others override it.
_PAPER_MODEL: dict[str, object] = {
    "num_layers": 30,
    "num_heads": 24,
    "head_dim": 128,
    "video_ffn_dim": 14336,
    "action_hidden_dim": 1024,
    "action_ffn_dim": 4096,
    "text_dim": 4096,
    "freq_dim": 256,
    "image_size": (224, 448),
    "text_max_length": 128,
    "use_pretrained_wan": True,
    "random_vae_base_dim": 16,
    "random_text_encoder_layers": 2,
    "video_codec": "wan2.2_vae",
    "dtype": "bfloat16",
}
PRESETS: dict[str, dict[str, object]] = {
    "wan2.2-ti2v-5b": _PAPER_MODEL,
    "tiny": {
        **_PAPER_MODEL,
        "num_layers": 2,
        "num_heads": 2,
        "head_dim": 12,
        "video_ffn_dim": 48,
        "action_hidden_dim": 16,
        "action_ffn_dim": 32,
        "text_dim": 32,
        "freq_dim": 16,
        "image_size": (32, 64),
        "use_pretrained_wan": False,
        "random_vae_base_dim": 4,
        "random_text_encoder_layers": 1,
        "dtype": "float32",
    },
    "small": {
        **_PAPER_MODEL,
        "num_layers": 4,
        "num_heads": 4,
        "head_dim": 32,
        "video_ffn_dim": 512,
        "action_hidden_dim": 64,
        "action_ffn_dim": 256,
        "text_dim": 64,
        "freq_dim": 64,
        "image_size": (64, 128),
        "use_pretrained_wan": False,
        "random_vae_base_dim": 8,
        "random_text_encoder_layers": 2,
        "dtype": "float32",
    },
    # Learns from pixels on a CPU: the weight-free DCT codec keeps the image (16 tokens per 128x128 camera),
    # an action expert as wide as the video expert reads them. About 3 M trained parameters.
    "cpu": {
        **_PAPER_MODEL,
        "num_layers": 4,
        "num_heads": 4,
        "head_dim": 32,
        "video_ffn_dim": 512,
        "action_hidden_dim": 128,
        "action_ffn_dim": 512,
        "text_dim": 64,
        "freq_dim": 64,
        "image_size": (128, 128),
        "use_pretrained_wan": False,
        "random_vae_base_dim": 8,
        "random_text_encoder_layers": 1,
        "video_codec": "dct",
        "dtype": "float32",
    },
}
VIDEO_CODECS = ("wan2.2_vae", "dct")
OPTIMIZER_TYPES = ("adamw", "adamw_8bit")

# The paper's four models (reference section 1): each is one attention mask (``attention.MASKS``), one training
# noise and one sampler (``model.FastWAM``) of the same network. The co-trained ones learned the future video.
VARIANTS = ("fastwam", "joint", "idm", "no_cotrain")
CO_TRAINED_VARIANTS = ("fastwam", "joint", "idm")

# Allowed ranges of the numeric fields, checked in ``__post_init__``: (low, high), inclusive; "0<" means
# strictly positive; an int bound means an integer field. A value outside its range would otherwise fail late
# or, worse, run and return nonsense (``num_inference_steps=0`` returns the noise as actions,
# ``timestep_shift<0`` gives NaN actions).
_RANGES: dict[str, tuple[float | str, float | None]] = {
    "chunk_size": (1, None),
    "n_action_steps": (1, None),
    "num_video_frames": (1, None),
    "video_frame_stride": (1, None),
    "num_layers": (1, None),
    "num_heads": (1, None),
    "head_dim": (2, None),
    "video_ffn_dim": (1, None),
    "action_hidden_dim": (1, None),
    "action_ffn_dim": (1, None),
    "text_dim": (1, None),
    "freq_dim": (2, None),
    "latent_channels": (1, None),
    "text_max_length": (1, None),
    "text_cache_size": (1, None),
    "random_vae_base_dim": (1, None),
    "random_text_encoder_layers": (1, None),
    "timestep_shift": ("0<", None),
    "num_train_timesteps": (1, None),
    "video_loss_weight": (0.0, None),  # resolved from the variant first when unset
    "action_loss_weight": (0.0, None),
    "num_inference_steps": (1, None),
    "action_consistency_weight": (0.0, None),
    "action_clamp_margin": (0.0, None),
    "max_normalized_input": ("0<", None),
    "max_action_dim": (1, None),
    "max_state_dim": (1, None),
    "optimizer_lr": ("0<", None),
    "optimizer_weight_decay": (0.0, None),
    "optimizer_grad_clip_norm": ("0<", None),
    "scheduler_warmup_steps": (0, None),
    "scheduler_decay_steps": (1, None),
    "scheduler_decay_lr": (0.0, None),
}

_NONE_SWITCHES_OFF = ("action_clamp_margin", "max_normalized_input", "max_action_dim", "max_state_dim")  # None: off


def _check_range(name: str, value, low: float | str, high: float | None) -> None:
    """Refuse a numeric field outside ``[low, high]`` (``low="0<"``: strictly positive), naming the range."""
    if value is None and name in _NONE_SWITCHES_OFF:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if isinstance(low, int) and not isinstance(value, int):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    too_low = value <= 0 if low == "0<" else value < low
    if too_low or (high is not None and value > high):
        allowed = "> 0" if low == "0<" else f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"`{name}` must be {allowed}, got {value!r} (--policy.{name}).")


VAE_SPATIAL_COMPRESSION = 16  # Wan2.2 VAE: 16x16 pixels per latent
VAE_TEMPORAL_COMPRESSION = 4  # and 4 frames per latent frame after the first
PATCH_SIZE = (1, 2, 2)  # DiT patch on the latent grid: one token covers 32x32 pixels


@dataclass
class FastWAMConfig(PreTrainedConfig):
    """Fast-WAM policy configuration.

    Args:
        chunk_size: actions predicted per call (the paper's action chunk, 32).
        n_action_steps: actions executed from each chunk before predicting again.
        num_video_frames: frames the video expert is trained on (first + future), subsampled from the
            dataset every ``video_frame_stride`` frames. ``(num_video_frames - 1)`` must be a multiple of 4
            (the VAE's temporal compression): 9 frames -> 3 latent frames (1 clean + 2 future).
        image_size: (height, width) of the tiled camera image fed to the VAE.
        camera_keys: camera order for tiling; ``None`` uses the sorted dataset camera keys.
        camera_layout: "side_by_side" (LIBERO: each camera ``(H, W / N)``), "top_and_wrists" (RoboTwin: the
            first camera ``(2H/3, W)`` above two ``(H/3, W/2)``) or "grid" (two cameras per row; ALOHA's four in
            2 x 2); see ``camera_layout.py``.
        camera_fit: how a camera whose aspect ratio differs from its tile is fitted, never stretched: "crop"
            (resize to cover the tile, cut the overflow equally from both sides; a 640x480 camera in a square
            tile keeps its central 480x480) or "pad" (resize to fit inside, pad with black).
        camera_crops: per camera, a box ``[top, left, height, width]`` in the camera's pixels cut before fitting
            (e.g. to drop the robot base or the table edge), e.g. ``{"observation.images.front": [0, 80, 480,
            480]}``.
        preset: "wan2.2-ti2v-5b" (the paper's model), "cpu" (learns from pixels on a CPU, offline: the Meta-World
            demo), "small" or "tiny" (fast CPU tests and benchmarks, random frozen encoders). It fills every
            architecture field left unset; explicit values win.
        video_codec: the frozen frame encoder. "wan2.2_vae": the Wan2.2 VAE (from ``pretrained_model_id``, or
            small and random without pretrained weights); "dct": a weight-free codec with the VAE's shape that
            keeps the image (``dct_codec.py``; the ``cpu`` preset).
        latent_mean / latent_std: per-channel latent normalisation. ``None`` until known: the published Wan2.2
            VAE's own statistics, or, for any other codec, statistics of the training data, computed when
            training starts (or by ``lerobot-fastwam cache``) and saved here with the checkpoint.
        use_pretrained_wan: load the VAE, umT5 encoder, tokenizer and the video expert's initial weights from
            ``pretrained_model_id`` (a Wan2.2 Diffusers repo id or local dir). False builds small random frozen
            encoders (tests and demos), built from a fixed seed; frozen encoders are never stored in checkpoints.
        attention_backend: "sdpa" (default), "xformers" (when installed), or "auto".
        compile_action_step: compile the per-step action-expert pass with ``torch.compile``. Unset: on for CUDA,
            off elsewhere (on a CPU it takes about 0.7x the eager latency but 20-30 s to compile per process).
        cuda_graph: replay the action sampler's whole Euler loop as one CUDA graph (``action_graph.py``; one
            launch per chunk instead of hundreds). Unset: on for CUDA. Not used for RTC-guided chunks (the guidance
            differentiates through each step). A loaded policy compiles and captures at load time
            (``FastWAMPolicy.warm_up``), so the robot's first step is not the slow one.
        inference_seed: fixed-seed noise for the action sampler, as in the paper (``None``: fresh noise).
        variant: which of the paper's models: "fastwam" (actions read the clean first frame; the future video is
            only trained, never generated at test time), "joint" (actions read all video; video and actions are
            denoised together at test time), "idm" (actions read a conditioning copy of the video; the video is
            denoised first, then the actions over it), "no_cotrain" (Fast-WAM without the video loss:
            ``video_loss_weight`` 0). A checkpoint may run as another variant only from one co-trained variant to
            another (``check_variant_change``).
        video_loss_weight: weight of the video flow-matching loss; unset: 1, or 0 for "no_cotrain".
            ``video_loss_weight=0`` with the default variant is "no_cotrain" (the config records it so).
        save_predicted_video: keep each chunk's imagined video (``policy.last_predicted_latents``) for
            ``lerobot-eval``, which writes it next to its rollout videos. Costs nothing when off; when on,
            "fastwam" also denoises the future each chunk (Joint and IDM generate it anyway).
        num_inference_steps: Euler steps of the action sampler. A checkpoint samples with the steps it saved;
            ``--policy.num_inference_steps=N`` at evaluation overrides them. Plain flow matching
            (``action_consistency_weight`` 0) needs about 10: one step returns the mean of the demonstrated
            actions, which is wrong where demonstrations disagree. Trained for few steps, 1, 2, 4 or 8 keep them.
        action_consistency_weight: weight of the few-step objective (shortcut models): a quarter of each batch
            trains the action velocity of a whole 1-, 2-, 4- or 8-step sampler step against two half-steps of the
            network itself, so 1-2 steps sample as well as 10. The video stream and the mask are untouched.
            Only for the cached action samplers ("fastwam", "no_cotrain").
        step_size_conditioning: the action expert reads the sampler's step size (a small embedding whose output
            starts at zero). Unset: on when ``action_consistency_weight`` > 0. Recorded in the checkpoint.
        rtc_config: real-time chunking (LeRobot's ``RTCConfig``): ``lerobot-rollout --inference.type=rtc`` sets it;
            then ``predict_action_chunk(..., inference_delay=, prev_chunk_left_over=)`` guides each new chunk
            toward the unexecuted rest of the previous one. ``None``: RTC arguments are an error.
        use_relative_actions / relative_exclude_joints: pi0.5's relative actions (LeRobot's processor steps): the
            network learns ``action - state`` for every joint whose name contains none of the excluded names (a
            gripper's open/close command stays absolute), normalised with the relative actions' statistics.
        max_action_dim / max_state_dim: build the network for this many action / state values and zero-pad the
            robot's (pi0.5, SmolVLA), so that the checkpoint fine-tunes on an arm with another number of joints up
            to these sizes. ``None``: the dataset's sizes, no padding.
    """

    # Input / output structure
    n_obs_steps: int = 1
    chunk_size: int = 32
    n_action_steps: int = 10
    num_video_frames: int = 9
    video_frame_stride: int = 4
    image_size: tuple[int, int] | None = None
    camera_keys: list[str] | None = None
    camera_layout: str = "side_by_side"
    camera_fit: str = "crop"
    camera_crops: dict[str, list[int]] | None = None

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # Architecture. Fields left at None come from the preset (default: the paper's Wan2.2-TI2V-5B model).
    preset: str = "wan2.2-ti2v-5b"
    num_layers: int | None = None
    num_heads: int | None = None
    head_dim: int | None = None
    video_ffn_dim: int | None = None
    action_hidden_dim: int | None = None
    action_ffn_dim: int | None = None
    text_dim: int | None = None
    freq_dim: int | None = None
    latent_channels: int = 48
    dtype: str | None = None  # compute dtype; bf16/fp16 run as mixed precision with fp32 master weights
    attention_backend: str = "sdpa"
    gradient_checkpointing: bool = False
    freeze_video_expert: bool = False
    compile_action_step: bool | None = None  # torch.compile the cached action step; None: on CUDA only
    cuda_graph: bool | None = None  # the action Euler loop as one CUDA graph; None: on CUDA only
    use_latent_cache: bool = True  # train from `lerobot-fastwam cache` output when the dataset has a matching one

    # Frozen components
    use_pretrained_wan: bool | None = None  # False: small fixed-seed random VAE / text encoder (tests, demos)
    pretrained_model_id: str = WAN22_TI2V_5B_DIFFUSERS
    text_max_length: int | None = None
    prompt_template: str = "A video recorded from a robot's point of view executing the following instruction: {task}"
    text_cache_size: int = 512
    random_vae_base_dim: int | None = None
    random_text_encoder_layers: int | None = None
    video_codec: str | None = None
    latent_mean: list[float] | None = None
    latent_std: list[float] | None = None

    # Which of the paper's models (VARIANTS), and the imagined future video at evaluation
    variant: str = "fastwam"
    save_predicted_video: bool = False
    rtc_config: RTCConfig | None = None

    # Flow matching
    timestep_shift: float = 5.0
    num_train_timesteps: int = 1000
    timestep_loss_weighting: bool = True
    video_loss_weight: float | None = None  # None: 1, or 0 for variant "no_cotrain"
    action_loss_weight: float = 1.0
    num_inference_steps: int = 10
    inference_seed: int | None = 42
    # Few-step actions (flow_matching.SHORTCUT_STEP_SIZES): weight of the action self-consistency term, and
    # whether the action expert reads the sampler's step size (None: when the weight is positive).
    action_consistency_weight: float = 0.0
    step_size_conditioning: bool | None = None

    # Deployment safety: actions leaving the post-processor are clamped to the training range (the dataset's
    # action min/max saved with the checkpoint) widened by this fraction of the range on each side; None: off.
    action_clamp_margin: float | None = 0.05
    # The largest |value| a normalised state or RTC leftover may have at inference, beyond which it is refused (None:
    # no check). A normalised value is of order 1, but one that barely varied in training reaches hundreds from a
    # harmless change (Meta-World's gripper, std 8e-4: 104 when the arm touched a wall); 1e4 and more is a wrong
    # sensor, wrong units or wrong statistics.
    max_normalized_input: float | None = 1e4

    # Another arm (pi0.5's names; ``data/embodiment.py``). ``action_feature_names``: filled by LeRobot's make_policy.
    use_relative_actions: bool = False
    relative_exclude_joints: list[str] = field(default_factory=lambda: ["gripper"])
    action_feature_names: list[str] | None = None
    max_action_dim: int | None = None
    max_state_dim: int | None = None

    # Optimisation (paper: AdamW (0.9, 0.95), lr 1e-4, wd 0.01, warm-up over the first 5 percent of the steps,
    # cosine decay to 1 percent of the peak, gradient clip 1.0)
    optimizer_type: str = "adamw"  # "adamw_8bit": bitsandbytes' 8-bit AdamW states (2 instead of 8 bytes a weight)
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_weight_decay: float = 0.01
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 1000
    scheduler_decay_steps: int = 20000
    scheduler_decay_lr: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown Fast-WAM preset {self.preset!r}; choose one of {sorted(PRESETS)}.")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.image_size = tuple(int(v) for v in self.image_size)
        self.optimizer_betas = tuple(self.optimizer_betas)
        self._resolve_variant()
        if self.step_size_conditioning is None:
            self.step_size_conditioning = self.action_consistency_weight > 0
        for name, (low, high) in _RANGES.items():
            _check_range(name, getattr(self, name), low, high)
        self._check_variant()
        if self.n_obs_steps != 1:
            raise ValueError(
                f"n_obs_steps must be 1 (Fast-WAM conditions on the current frame only), got {self.n_obs_steps}."
            )
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps ({self.n_action_steps}) cannot exceed chunk_size ({self.chunk_size}).")
        if not all(0 <= beta < 1 for beta in self.optimizer_betas):
            raise ValueError(f"optimizer_betas must each be in [0, 1), got {self.optimizer_betas}.")
        if self.action_consistency_weight > 0 and not self.step_size_conditioning:
            raise ValueError(
                "action_consistency_weight > 0 trains step sizes the action expert must read: leave "
                "step_size_conditioning unset or set it to true."
            )
        if self.action_consistency_weight > 0 and self.variant not in ("fastwam", "no_cotrain"):
            raise ValueError(
                f"action_consistency_weight > 0 trains the cached action sampler of 'fastwam' and 'no_cotrain'; "
                f"variant {self.variant!r} samples its actions with the video. Set action_consistency_weight=0."
            )
        if self.num_inference_steps < FEW_STEPS and not self.step_size_conditioning:
            logger.warning(
                "Fast-WAM: num_inference_steps=%d on a plain flow-matching policy (action_consistency_weight=0): "
                "so few Euler steps return about the mean of the demonstrated actions, which fails where "
                "demonstrations disagree (expect a higher action loss than at 10 steps). Train with "
                "--policy.action_consistency_weight=1 for few-step sampling, or sample with 10 steps.",
                self.num_inference_steps,
            )
        if self.video_loss_weight == 0 and self.action_loss_weight == 0:
            raise ValueError("video_loss_weight and action_loss_weight are both 0: nothing would be trained.")
        if (self.num_video_frames - 1) % VAE_TEMPORAL_COMPRESSION != 0 or self.num_video_frames < 1:
            raise ValueError(
                f"num_video_frames must be 1 + 4k (the VAE compresses 4 frames per latent frame), "
                f"got {self.num_video_frames}. The paper uses 9."
            )
        pixels_per_token = VAE_SPATIAL_COMPRESSION * PATCH_SIZE[1]
        if min(self.image_size) <= 0 or self.image_size[0] % pixels_per_token or self.image_size[1] % pixels_per_token:
            raise ValueError(
                f"image_size {self.image_size} must be a positive multiple of {pixels_per_token} in both dimensions "
                f"(one DiT token covers {pixels_per_token}x{pixels_per_token} pixels)."
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}.")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}.")
        if self.optimizer_type not in OPTIMIZER_TYPES:
            raise ValueError(f"optimizer_type must be one of {OPTIMIZER_TYPES}, got {self.optimizer_type!r}.")
        if self.camera_fit not in FITS:
            raise ValueError(f"camera_fit must be one of {FITS}, got {self.camera_fit!r}.")
        for key, box in (self.camera_crops or {}).items():
            check_crop_box(key, box)
        if self.camera_layout not in LAYOUTS:
            raise ValueError(f"camera_layout must be one of {LAYOUTS}, got {self.camera_layout!r}.")
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {VIDEO_CODECS}, got {self.video_codec!r}.")
        if self.video_codec == "dct" and self.latent_channels != 48:
            raise ValueError(f"video_codec='dct' gives 48 latent channels; latent_channels is {self.latent_channels}.")
        if (self.latent_mean is None) != (self.latent_std is None):
            raise ValueError("Set both latent_mean and latent_std, or neither (they are computed from the data).")
        if self.latent_mean is not None:
            if len(self.latent_mean) != self.latent_channels or len(self.latent_std) != self.latent_channels:
                raise ValueError(
                    f"latent_mean/latent_std need {self.latent_channels} values each (one per latent channel), "
                    f"got {len(self.latent_mean)} and {len(self.latent_std)}."
                )
            if not all(math.isfinite(m) for m in self.latent_mean) or not all(
                math.isfinite(s) and s > 0 for s in self.latent_std
            ):
                raise ValueError("latent_mean must be finite and latent_std finite and positive.")
        if self.attention_backend not in ("sdpa", "xformers", "auto"):
            raise ValueError(f"attention_backend must be 'sdpa', 'xformers' or 'auto', got {self.attention_backend!r}.")
        check_embodiment(self)

    def _resolve_variant(self) -> None:
        """One rule for the video loss: ``no_cotrain`` is ``video_loss_weight`` 0, and ``video_loss_weight=0``
        (with the default variant, as before variants existed) is ``no_cotrain``."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r} (--policy.variant).")
        if self.video_loss_weight is None:
            self.video_loss_weight = 0.0 if self.variant == "no_cotrain" else 1.0
        elif self.variant == "fastwam" and self.video_loss_weight == 0:
            self.variant = "no_cotrain"

    def _check_variant(self) -> None:
        if self.variant == "no_cotrain" and self.video_loss_weight != 0:
            raise ValueError(
                f"variant='no_cotrain' trains without the video loss: video_loss_weight must be 0 or unset, got "
                f"{self.video_loss_weight}. For video co-training use variant 'fastwam', 'joint' or 'idm'."
            )
        if self.variant in ("joint", "idm") and self.video_loss_weight == 0:
            raise ValueError(
                f"variant={self.variant!r} conditions the actions on generated future video, which only the video "
                "loss teaches: it needs video_loss_weight > 0. A 'no_cotrain' checkpoint (video_loss_weight 0) "
                "cannot run as 'joint' or 'idm'; run it as saved."
            )
        if self.save_predicted_video and self.variant not in CO_TRAINED_VARIANTS:
            raise ValueError(
                f"save_predicted_video needs a co-trained variant {CO_TRAINED_VARIANTS}: a {self.variant!r} policy's "
                "video expert never learned the future."
            )

    # ----------------------------------------------------------------------------------------------
    # Derived structure
    @property
    def attention_mask(self) -> str:
        """The attention mask of the variant (``attention.MASKS``): no_cotrain keeps Fast-WAM's."""
        return "fastwam" if self.variant == "no_cotrain" else self.variant

    @property
    def torch_dtype(self) -> torch.dtype:
        """The compute dtype (``dtype``) as a torch dtype."""
        return getattr(torch, self.dtype)

    @property
    def action_dim(self) -> int:
        return int(self.action_feature.shape[0])

    @property
    def state_dim(self) -> int | None:
        feature = self.robot_state_feature
        return None if feature is None else int(feature.shape[0])

    @property
    def ordered_camera_keys(self) -> list[str]:
        return list(self.camera_keys) if self.camera_keys else sorted(self.image_features)

    @property
    def camera_tile_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of each camera inside the tiled image, in tiling order."""
        keys = self.ordered_camera_keys
        return dict(zip(keys, tile_sizes(self.camera_layout, self.image_size, len(keys)), strict=True))

    @property
    def num_latent_frames(self) -> int:
        return 1 + (self.num_video_frames - 1) // VAE_TEMPORAL_COMPRESSION

    # ----------------------------------------------------------------------------------------------
    # LeRobot policy-config contract
    @property
    def observation_delta_indices(self) -> list[int]:
        return [i * self.video_frame_stride for i in range(self.num_video_frames)]

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> OptimizerConfig:
        optimizer = AdamW8bitConfig if self.optimizer_type == "adamw_8bit" else FusedAdamWConfig
        return optimizer(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )

    def validate_features(self) -> None:
        """Check the features against the model's fixed layout; every error says how to fix it."""
        if not self.image_features:
            raise ValueError(
                "Fast-WAM needs at least one camera (an `observation.images.*` feature) in the dataset or env."
            )
        if self.action_feature is None:
            raise ValueError("Fast-WAM needs an `action` output feature.")
        check_embodiment(self)
        if self.camera_keys:
            missing = [key for key in self.camera_keys if key not in self.image_features]
            if missing:
                raise ValueError(
                    f"camera_keys {missing} are not among the input cameras {sorted(self.image_features)}. "
                    "Fix `--policy.camera_keys`, or map the camera names with `--rename_map`."
                )
        unknown = sorted(set(self.camera_crops or {}) - set(self.ordered_camera_keys))
        if unknown:
            raise ValueError(f"camera_crops names {unknown}, not among the cameras {self.ordered_camera_keys}.")
        for key, tile in self.camera_tile_sizes.items():
            shape = tuple(self.image_features[key].shape)
            if len(shape) != 3 or shape[0] != 3:
                raise ValueError(f"Camera `{key}` must have shape (3, H, W), got {shape}.")
            box, size = self.camera_crop(key)
            if box is not None:
                check_crop_box(key, box, *size)
                if size == tile:  # cached (raw) and pre-processed frames could not be told apart
                    raise ValueError(
                        f"Camera `{key}` is already {size[0]}x{size[1]}, its tile size, so a crop box cannot be "
                        "told from a cropped frame. Set another `--policy.image_size`, or crop in the robot's "
                        "camera config."
                    )

    def camera_crop(self, key: str) -> tuple[list[int] | None, tuple[int, int] | None]:
        """The crop box of a camera and the size of the images it is set for (its trained resolution)."""
        box = (self.camera_crops or {}).get(key)
        feature = self.image_features.get(key)
        return box, (tuple(feature.shape[-2:]) if box is not None and feature is not None else None)


def saved_variant(saved: dict) -> str:
    """The variant a saved ``config.json`` (as a dict) records; configs saved before ``variant`` existed are
    "no_cotrain" when their video loss weight is 0, else "fastwam"."""
    if saved.get("variant"):
        return str(saved["variant"])
    return "no_cotrain" if saved.get("video_loss_weight", 1.0) == 0 else "fastwam"


def check_variant_change(saved: str, requested: str, source: str) -> None:
    """Refuse to run a checkpoint trained as ``saved`` as another variant, except between co-trained variants.

    Fast-WAM, Joint and IDM train the same weights on the same two losses and differ in what the actions read, so
    a checkpoint of one may run as another at test time (this is how the paper compares inference cost; the
    actions are only those the checkpoint was trained for under its own variant). A ``no_cotrain`` checkpoint's
    video expert never learned the future that Joint and IDM condition on, and a co-trained checkpoint is not a
    ``no_cotrain`` one.
    """
    if saved == requested or (saved in CO_TRAINED_VARIANTS and requested in CO_TRAINED_VARIANTS):
        return
    if saved not in VARIANTS:
        raise ValueError(f"{source} records variant {saved!r}, which this version does not know ({VARIANTS}).")
    raise ValueError(
        f"{source} was trained as variant {saved!r} and cannot run as {requested!r}: only the co-trained variants "
        f"{CO_TRAINED_VARIANTS} may run as one another (a 'no_cotrain' video expert never learned the future). "
        f"Drop --policy.variant (or the config's variant) to run it as {saved!r}."
    )


def default_features(action_dim: int, state_dim: int | None, image_size: tuple[int, int], cameras: int = 1):
    """Input/output features for building a policy without a dataset (tests, benchmarks)."""
    height, width = image_size
    inputs = {
        f"observation.images.cam{i}": PolicyFeature(FeatureType.VISUAL, (3, height, width // cameras))
        for i in range(cameras)
    }
    if state_dim is not None:
        inputs[OBS_STATE] = PolicyFeature(FeatureType.STATE, (state_dim,))
    return inputs, {ACTION: PolicyFeature(FeatureType.ACTION, (action_dim,))}
