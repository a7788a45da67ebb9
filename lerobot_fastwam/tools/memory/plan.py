"""``lerobot-fastwam memory``: how much accelerator memory training and inference need, before renting a GPU.

Every number comes from the real network, never from a hand formula:

- **Weights, gradients, optimizer state** are counted on the network built on the meta device (no weight is
  allocated, so the 6 B paper model costs nothing), with the dtypes ``lerobot-train`` gives them under each
  recipe (``RECIPES``): trainable weights are fp32 masters (``FastWAMPolicy._training_dtype``), frozen ones
  live in the compute dtype, and the optimizer is the plugin's own preset (``config.get_optimizer_preset()``,
  fused AdamW: two fp32 states per trainable weight), built and stepped once so that its state exists.
- **Activations and the step's peak** are traced: one whole training step as LeRobot's trainer runs it
  (forward under autocast, backward, gradient clipping, optimizer step, ``zero_grad``) runs on fake tensors
  (``torch._subclasses.FakeTensorMode``: shapes and dtypes, no data, no arithmetic) while a dispatch mode
  (``LiveBytes``) adds up the storages alive after every operator. The whole 30-layer paper model is traced,
  about ten seconds per batch size on a CPU: at batch 1 and 2 (the activations' fixed part and their growth
  per sample), at the batch size asked, and at the few batch sizes the search for the largest that fits tries.

What a trace cannot see, and what the planner assumes:

- The fake tensors live on the CPU (a CUDA device cannot be faked without a GPU), so the trace runs CPU
  autocast where training runs CUDA autocast. Both run the linear layers and attention in bf16 and the model
  keeps its layer norms in fp32 itself; one known difference: CUDA autocast runs ``rms_norm`` (the attention's
  q/k norms) in fp32, which CPU autocast keeps in bf16, about 2% more activations per sample on CUDA
  (measured by emulating that one op). Kernel workspaces and the caching allocator's fragmentation are not
  counted; every CUDA allocation is rounded up to the allocator's 512-byte block, and the CUDA context is one
  named constant (``CUDA_CONTEXT_BYTES``).
- Training reads the latent cache (``lerobot-fastwam cache``): the frozen VAE and umT5 encoder are never built,
  and a batch brings latents and text embeddings (the batch's camera frames, about 11 MB per sample at the
  paper's 2 x 224x224 x 9 frames, are not counted).
- Inference holds the policy as ``from_pretrained`` does: the network, the VAE and the umT5 encoder in the
  compute dtype, no gradients, and one action chunk at batch 1 (encode the frame, encode a new prompt, sample).

``measure_training_step`` runs the same step for real (CPU: the allocator's events through ``torch.profiler``;
CUDA: the caching allocator's statistics); the tests hold the plan to it, and ``--measure`` prints both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from ...checkpoints.weights import materialize_random
from ...configuration_fastwam import PRESETS, FastWAMConfig, default_features
from ...network.model import FastWAM
from .trace import LiveBytes, autocast, faking, new_fake_mode, storage_bytes, to_fake

RECIPES = ("full", "frozen-video", "lora")


RECIPE_FLAGS = {  # how each recipe is asked of lerobot-train
    "full": "",
    "frozen-video": "--policy.freeze_video_expert=true",
    "lora": "--peft.method_type=LORA --peft.r=<rank>",
}


# The paper's LIBERO layout (reference section 4: two cameras side by side into 224x448) with LIBERO's 7-D actions
# and 8-D state, as benchmarks/bench_policy.py uses; the action and state widths barely change the memory.
DEFAULT_CAMERAS, DEFAULT_ACTION_DIM, DEFAULT_STATE_DIM = 2, 7, 8


GIB = 2**30


MAX_BATCH_SIZE = 4096  # where the search for the largest batch that fits stops


# PyTorch's CUDA caching allocator hands out blocks of at least 512 bytes (c10/cuda/CUDACachingAllocator.cpp).
CUDA_BLOCK_BYTES = 512


# The CUDA context, the cuBLAS/cuDNN handles and their workspaces take device memory that no tensor owns, so no
# trace sees it; about 0.5 GiB is what PyTorch's context takes on recent GPUs with lazy module loading. Added to
# CUDA plans only (not counted on the CPU, nor in the CPU checks).
CUDA_CONTEXT_BYTES = GIB // 2


# The frozen encoders of the paper model, built on the meta device from their published configs (the plugin
# loads them from the Hub, which a planner should not need): Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json
# (as in diffusers' scripts/convert_wan_to_diffusers.py, 0.70 B parameters) and text_encoder/config.json
# (google/umt5-xxl's encoder, 5.68 B parameters).
WAN22_VAE_CONFIG = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


UMT5_XXL_CONFIG = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
}


OPTIMIZER_NAMES = {"adamw": "the plugin's fused AdamW", "adamw_8bit": "bitsandbytes' 8-bit AdamW"}


def planning_config(
    preset: str,
    *,
    action_dim: int = DEFAULT_ACTION_DIM,
    state_dim: int | None = DEFAULT_STATE_DIM,
    cameras: int = DEFAULT_CAMERAS,
    **overrides,
) -> FastWAMConfig:
    """A config as ``lerobot-train --policy.preset=<preset>`` builds it for a dataset with ``cameras`` cameras
    tiled side by side, ``action_dim`` actions and a ``state_dim`` state; ``overrides`` are other fields."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    image_size = overrides.pop("image_size", None) or PRESETS[preset]["image_size"]
    inputs, outputs = default_features(action_dim, state_dim, image_size, cameras)
    # The trace runs on the CPU whatever the target device (see the module docstring).
    return FastWAMConfig(
        preset=preset, input_features=inputs, output_features=outputs, image_size=image_size, device="cpu", **overrides
    )


class _PolicyLayout(nn.Module):
    """The network under the attribute name the policy gives it (``model``), so that parameter names, and the
    LoRA target patterns written against them, are the policy's."""

    def __init__(self, network: FastWAM):
        super().__init__()
        self.model = network


def build_network(config: FastWAMConfig, recipe: str, lora_rank: int = 16) -> _PolicyLayout:
    """The network on the meta device, with ``requires_grad`` as ``lerobot-train`` sets it under ``recipe``.

    ``lora`` wraps it as LeRobot's ``wrap_with_peft`` does for ``--peft.method_type=LORA --peft.r=<rank>``: the
    config comes from LeRobot's own builder with the plugin's default targets
    (``FastWAMPolicy._get_default_peft_targets``), then every weight is frozen and peft adds the adapters.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {RECIPES}.")
    layout = _PolicyLayout(FastWAM(config, action_dim=config.action_dim, state_dim=config.state_dim))
    if recipe == "frozen-video":
        layout.model.video.requires_grad_(False)
    elif recipe == "lora":
        from lerobot.configs.default import PeftConfig  # noqa: PLC0415
        from peft import inject_adapter_in_model  # noqa: PLC0415

        from ...modeling_fastwam import FastWAMPolicy  # noqa: PLC0415

        # LeRobot's builder reads only class-level defaults, so it runs on an instance that was never built.
        stub = FastWAMPolicy.__new__(FastWAMPolicy)
        peft_config = stub._build_peft_config(dataclasses.asdict(PeftConfig(method_type="LORA", r=lora_rank)))
        layout.requires_grad_(False)
        inject_adapter_in_model(peft_config, layout)
    return layout


def _weight_dtype(config: FastWAMConfig) -> Callable[[torch.Tensor], torch.dtype]:
    """Training storage (``FastWAMPolicy._training_dtype``): fp32 masters for trainable weights, the compute dtype
    for frozen ones."""
    return lambda p: torch.float32 if p.requires_grad else config.torch_dtype


def _training_step(
    layout: _PolicyLayout,
    optimizer,
    config: FastWAMConfig,
    batch_size: int,
    device: str,
    after_forward: Callable[[], None],
) -> None:
    """One step as ``lerobot-train``'s ``update_policy`` runs it on a batch of cached latents: inputs on the
    device, forward under autocast, backward, gradient clipping, optimizer step, ``zero_grad`` (which frees the
    gradients). ``after_forward()`` is called once the forward's autocast has exited."""
    network = layout.model
    h, w = (size // 16 for size in config.image_size)  # the VAE's 16x16 pixels per latent
    frames = config.num_latent_frames
    latents = torch.randn(batch_size, config.latent_channels, frames, h, w, device=device)
    text = torch.randn(batch_size, config.text_max_length, config.text_dim, device=device)
    state = None if config.state_dim is None else torch.randn(batch_size, config.state_dim, device=device)
    actions = torch.randn(batch_size, config.chunk_size, config.action_dim, device=device)
    action_is_pad = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool, device=device)
    future_is_pad = torch.zeros(batch_size, frames - 1, dtype=torch.bool, device=device)
    with autocast(config, torch.device(device).type):
        context = network.build_context(text, state)
        loss = network.compute_loss(latents, context, actions, action_is_pad, future_is_pad).total
    after_forward()
    loss.backward()
    trainable = [p for p in layout.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, config.optimizer_grad_clip_norm)
    optimizer.step()
    optimizer.zero_grad()


class EightBitAdamWState:
    """bitsandbytes' ``AdamW8bit`` state as it allocates it, for the fake trace (its constructor computes its
    quantisation maps from values, which fake tensors do not have): per weight of at least ``MIN_8BIT_SIZE``
    elements two uint8 moments and two fp32 scales per ``BLOCK`` elements, smaller weights fp32 moments, and two
    256-entry maps shared by all. Its update is in place, so its step adds no memory.
    ``tests/tools/test_memory_planner.py`` checks this layout against the real optimizer's."""

    MIN_8BIT_SIZE = 4096
    BLOCK = 256

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        qmaps = (torch.empty(256), torch.empty(256))
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for p in params:
            if p.numel() >= self.MIN_8BIT_SIZE:
                scales = -(-p.numel() // self.BLOCK)
                moments = {f"state{i}": torch.empty(p.shape, dtype=torch.uint8) for i in (1, 2)}
                self.state[p] = moments | {f"absmax{i}": torch.empty(scales) for i in (1, 2)}
                self.state[p] |= {"qmap1": qmaps[0], "qmap2": qmaps[1]}
            else:
                self.state[p] = {f"state{i}": torch.empty(p.shape, dtype=torch.float32) for i in (1, 2)}

    def step(self) -> None:
        pass

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _optimizer_with_state(layout: _PolicyLayout, config: FastWAMConfig):
    """The plugin's optimizer over the trainable weights, stepped once on zero gradients so that its state
    exists, as from the second training step on (bitsandbytes' 8-bit AdamW: its layout, on fake weights)."""
    trainable = [p for p in layout.parameters() if p.requires_grad]
    if config.optimizer_type == "adamw_8bit" and is_fake(trainable[0]):
        return EightBitAdamWState(trainable)
    optimizer = config.get_optimizer_preset().build(trainable)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad()
    return optimizer


def _optimizer_state(optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


@dataclasses.dataclass(frozen=True)
class StepTrace:
    """One traced training step, in bytes above the state that lives between steps."""

    activations: int  # alive when the forward ends: tensors saved for backward, the inputs, the loss
    peak: int  # the most alive at once: activations, gradients as backward creates them, temporaries


class _StepTracer:
    """The fake network and optimizer of one recipe, traced at any batch size (each one once)."""

    def __init__(self, config: FastWAMConfig, recipe: str, lora_rank: int, block: int):
        self.config, self.block = config, block
        self.layout = build_network(config, recipe, lora_rank)
        self.mode = new_fake_mode()
        with faking(self.mode):
            to_fake(self.layout, self.mode, _weight_dtype(config))
            self.optimizer = _optimizer_with_state(self.layout, config)
        self.traces: dict[int, StepTrace] = {}

    def __call__(self, batch_size: int) -> StepTrace:
        if batch_size not in self.traces:
            tracker = LiveBytes(self.block)
            marks = []
            with faking(self.mode), tracker:
                after_forward = lambda: marks.append(tracker.live)  # noqa: E731
                _training_step(self.layout, self.optimizer, self.config, batch_size, "cpu", after_forward)
            self.traces[batch_size] = StepTrace(marks[0], tracker.peak)
        return self.traces[batch_size]


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Training memory of one recipe at ``batch_size``, in bytes. ``total`` is the peak of a step."""

    recipe: str
    device: str
    dtype: str
    optimizer_type: str
    batch_size: int
    parameters: int  # number of weights (LoRA adapters included)
    trainable: int  # number of trainable weights
    parameter_bytes: int
    buffer_bytes: int
    gradient_bytes: int  # every trainable weight's gradient, all alive when backward ends
    optimizer_bytes: int
    activations_fixed: int
    activations_per_sample: int
    step_peak: int  # traced at batch_size
    capacity: int | None  # the accelerator memory asked about
    max_batch_size: int | None  # the largest batch whose step fits ``capacity`` (0: not even 1)
    traces: dict[int, StepTrace]  # every traced step, by batch size

    @property
    def context_bytes(self) -> int:
        return CUDA_CONTEXT_BYTES if self.device == "cuda" else 0

    @property
    def resident_bytes(self) -> int:
        """Alive between steps: weights, buffers, optimizer state and the CUDA context."""
        return self.parameter_bytes + self.buffer_bytes + self.optimizer_bytes + self.context_bytes

    @property
    def activations(self) -> int:
        return self.activations_fixed + self.batch_size * self.activations_per_sample

    @property
    def total(self) -> int:
        return self.resident_bytes + self.step_peak


def _check_device(device: str) -> int:
    """The allocation block of ``device``."""
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}.")
    return CUDA_BLOCK_BYTES if device == "cuda" else 1


def _largest_fitting(fits: Callable[[int], bool], guess: int, limit: int) -> int:
    """The largest batch size in [1, limit] for which ``fits`` holds (it holds up to some size, then never),
    or 0: galloping from ``guess`` to bracket the boundary, then bisecting, so a good guess costs few calls."""
    if not fits(1):
        return 0
    low, high = 1, limit + 1  # fits(low); high is past the boundary (or the limit)
    guess, step = min(max(guess, 1), limit), 1
    if fits(guess):
        low = guess
        while low + step < high and fits(low + step):
            low, step = low + step, step * 2
        high = min(high, low + step)
    else:
        high = guess
        while high - step > low and not fits(high - step):
            high, step = high - step, step * 2
        low = max(low, high - step)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def plan_training(
    config: FastWAMConfig,
    recipe: str,
    *,
    batch_size: int = 1,
    capacity: int | None = None,
    device: str = "cuda",
    lora_rank: int = 16,
) -> TrainingPlan:
    """Plan a training step of ``config`` under ``recipe`` at ``batch_size`` on ``device`` ("cuda", or "cpu" to
    compare with a real CPU step). With ``capacity`` (bytes), also the largest batch size that fits it, up to
    ``MAX_BATCH_SIZE``. The step is traced at batch 1 and 2 (activations per sample), at ``batch_size``, and at
    the batch sizes the search tries."""
    block = _check_device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    tracer = _StepTracer(config, recipe, lora_rank, block)
    params = list(tracer.layout.parameters())
    trainable = [p for p in params if p.requires_grad]
    resident = storage_bytes([*params, *tracer.layout.buffers(), *_optimizer_state(tracer.optimizer)], block)
    resident += CUDA_CONTEXT_BYTES if device == "cuda" else 0
    one, two = tracer(1), tracer(2)
    per_sample = two.activations - one.activations
    largest = None
    if capacity is not None:
        # Guess where the peak crosses the capacity from its growth between batch 1 and 2 (at least the
        # activations of each added sample), then once more from its growth between batch 2 and that guess.
        room = capacity - resident
        guess = 1 + (room - one.peak) // max(two.peak - one.peak, per_sample, 1)
        if 2 < guess <= MAX_BATCH_SIZE:
            guess = 2 + (room - two.peak) * (guess - 2) // max(tracer(guess).peak - two.peak, 1)
        largest = _largest_fitting(lambda b: resident + tracer(b).peak <= capacity, guess, MAX_BATCH_SIZE)
    return TrainingPlan(
        recipe=recipe,
        device=device,
        dtype=config.dtype,
        optimizer_type=config.optimizer_type,
        batch_size=batch_size,
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        parameter_bytes=storage_bytes(params, block),
        buffer_bytes=storage_bytes(list(tracer.layout.buffers()), block),
        gradient_bytes=storage_bytes(trainable, block),  # a gradient has its weight's shape and dtype
        optimizer_bytes=storage_bytes(_optimizer_state(tracer.optimizer), block),
        activations_fixed=one.activations - per_sample,
        activations_per_sample=per_sample,
        step_peak=tracer(batch_size).peak,
        capacity=capacity,
        max_batch_size=largest,
        traces=dict(sorted(tracer.traces.items())),
    )


def inference_encoders(config: FastWAMConfig) -> tuple[nn.Module, nn.Module, torch.dtype]:
    """The frame codec (a ``LatentEncoder``) and the umT5 encoder the policy builds for inference,
    on the meta device, and the dtype the policy loads them in: the published Wan2.2 ones in the compute dtype,
    the small random ones of the test presets in fp32. The weight-free DCT codec is built for real (it holds
    only its small filter tables)."""
    from diffusers import AutoencoderKLWan  # noqa: PLC0415
    from transformers import UMT5Config, UMT5EncoderModel  # noqa: PLC0415

    from ...encoders.latent_encoder import LatentEncoder, build_latent_encoder  # noqa: PLC0415
    from ...encoders.prompt_encoder import build_prompt_encoder  # noqa: PLC0415

    dtype = config.torch_dtype if config.use_pretrained_wan else torch.float32
    codec = build_latent_encoder(config) if config.video_codec == "dct" else None
    with torch.device("meta"):
        if codec is None:
            codec = (
                LatentEncoder(AutoencoderKLWan(**WAN22_VAE_CONFIG))
                if config.use_pretrained_wan
                else build_latent_encoder(config)
            )
        if config.use_pretrained_wan:
            text = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG)).eval()
        else:
            text = build_prompt_encoder(config).encoder
    return codec, text, dtype


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    """Inference memory at batch 1, in bytes."""

    device: str
    dtype: str
    parameters: int
    parameter_bytes: int
    buffer_bytes: int
    codec_parameters: int
    codec_bytes: int
    text_parameters: int
    text_bytes: int
    activations: int  # the peak above the weights while one action chunk is predicted

    @property
    def context_bytes(self) -> int:
        return CUDA_CONTEXT_BYTES if self.device == "cuda" else 0

    @property
    def total(self) -> int:
        weights = self.parameter_bytes + self.buffer_bytes + self.codec_bytes + self.text_bytes
        return weights + self.activations + self.context_bytes


def plan_inference(config: FastWAMConfig, *, device: str = "cuda") -> InferencePlan:
    """Plan one ``predict_action_chunk`` at batch 1: the current frame through the codec, a new prompt through
    umT5 (inside autocast, as the policy runs it), then the variant's sampler (``FastWAM.sample``)."""
    block = _check_device(device)
    network = FastWAM(config, action_dim=config.action_dim, state_dim=config.state_dim)
    codec, text_encoder, encoder_dtype = inference_encoders(config)
    counts = [sum(p.numel() for p in m.parameters()) for m in (network, codec, text_encoder)]
    tracker = LiveBytes(block)
    with faking(new_fake_mode(symbolic_scalars=True)) as mode:
        to_fake(network, mode, lambda p: config.torch_dtype)
        to_fake(codec, mode, lambda p: encoder_dtype)
        to_fake(text_encoder, mode, lambda p: encoder_dtype)
        weights = [storage_bytes(list(m.parameters()), block) for m in (network, codec, text_encoder)]
        buffers = storage_bytes([*network.buffers(), *codec.buffers(), *text_encoder.buffers()], block)
        height, width = config.image_size
        with tracker, torch.no_grad():
            frame = torch.rand(1, 3, 1, height, width)  # the tiled cameras
            latents = codec(frame).float()
            with autocast(config, "cpu"):
                ids = torch.zeros(1, config.text_max_length, dtype=torch.long)
                mask = torch.ones_like(ids)
                text = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                state = None if config.state_dim is None else torch.randn(1, config.state_dim)
                context = network.build_context(text * mask.unsqueeze(-1).to(text.dtype), state)
                noise = torch.randn(1, config.chunk_size, network.padded_action_dim)
                future = None
                if network.samples_future:
                    future = torch.randn(1, config.latent_channels, config.num_latent_frames - 1, *latents.shape[3:])
                network.sample(latents, context, noise, config.num_inference_steps, future)
    return InferencePlan(
        device=device,
        dtype=config.dtype,
        parameters=counts[0],
        parameter_bytes=weights[0],
        buffer_bytes=buffers,
        codec_parameters=counts[1],
        codec_bytes=weights[1],
        text_parameters=counts[2],
        text_bytes=weights[2],
        activations=tracker.peak,
    )


@dataclasses.dataclass(frozen=True)
class MeasuredStep:
    """A real training step, in bytes: what the allocator held between steps, and above that at the end of the
    forward and at the step's peak."""

    resident: int
    activations: int
    step_peak: int


def _allocations(window) -> list[int]:
    """A stopped ``torch.profiler.profile``'s CPU allocations (positive sizes) and frees (negative), in order."""
    events = [e for e in window.profiler.kineto_results.events() if e.name() == "[memory]"]
    return [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())]


def measure_training_step(
    config: FastWAMConfig, recipe: str, batch_size: int, *, device: str = "cpu", lora_rank: int = 16
) -> MeasuredStep:
    """Build the network for real (random weights, stored as ``lerobot-train`` stores them), take one step to
    create the optimizer state, then measure a second step: on the CPU from the allocator's events
    (``torch.profiler``), on CUDA from the caching allocator's statistics."""
    _check_device(device)
    layout = build_network(config, recipe, lora_rank)
    materialize_random(layout, device, _weight_dtype(config))
    layout.to(device)  # the RoPE tables
    optimizer = _optimizer_with_state(layout, config)
    resident = storage_bytes([*layout.parameters(), *layout.buffers(), *_optimizer_state(optimizer)], 1)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        marks = []
        _training_step(
            layout, optimizer, config, batch_size, device, lambda: marks.append(torch.cuda.memory_allocated() - base)
        )
        torch.cuda.synchronize()
        return MeasuredStep(resident, marks[0], torch.cuda.max_memory_allocated() - base)

    # Two profiler windows, split where the forward ends: the first one's net allocation is the activations.
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    windows = [profile(activities=[ProfilerActivity.CPU], profile_memory=True)]

    def split() -> None:
        windows[0].stop()
        windows.append(profile(activities=[ProfilerActivity.CPU], profile_memory=True))
        windows[1].start()

    windows[0].start()
    _training_step(layout, optimizer, config, batch_size, device, split)
    windows[1].stop()
    forward, rest = (_allocations(window) for window in windows)
    live = peak = 0
    for nbytes in forward:
        live += nbytes
        peak = max(peak, live)
    activations = live
    for nbytes in rest:
        live += nbytes
        peak = max(peak, live)
    return MeasuredStep(resident, activations, peak)
