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
  (``_LiveBytes``) adds up the storages alive after every operator. The whole 30-layer paper model is traced,
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

import argparse
import contextlib
import dataclasses
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from . import mot
from .checkpoint_io import materialize_random
from .configuration_fastwam import OPTIMIZER_TYPES, PRESETS, VARIANTS, FastWAMConfig, default_features
from .model import FastWAM

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

        from .modeling_fastwam import FastWAMPolicy  # noqa: PLC0415

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


def _storage_bytes(tensors, block: int) -> int:
    """Bytes of the distinct storages under ``tensors``, each rounded up to ``block``."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[id(storage)] = -(-storage.nbytes() // block) * block
    return sum(seen.values())


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages that operators created inside this mode and that are still alive (``live``), and
    the most at once (``peak``): an allocator without caching, that rounds each allocation up to ``block``.

    An operator allocates the storages of its outputs that none of its inputs has (a view or an in-place
    result allocates nothing). A storage counts until its last tensor dies (a weak reference), so the peak is
    always right after some operator."""

    def __init__(self, block: int):
        super().__init__()
        self.block = block
        self.live = self.peak = 0
        self._storages = WeakIdKeyDictionary()

    def _release(self, nbytes: int, _ref) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if id(storage) in inputs or storage in self._storages or not storage.nbytes():
                continue
            nbytes = -(-storage.nbytes() // self.block) * self.block
            self._storages[storage] = weakref.ref(storage, lambda ref, n=nbytes: self._release(n, ref))
            self.live += nbytes
        self.peak = max(self.peak, self.live)
        return out


def _new_fake_mode(symbolic_scalars: bool = False):
    """Fake tensors on the CPU. ``symbolic_scalars``: a tensor read as a Python number (the sampler's noise
    levels) becomes a symbol instead of an error."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415
    from torch.fx.experimental.symbolic_shapes import ShapeEnv  # noqa: PLC0415

    shape_env = ShapeEnv() if symbolic_scalars else None
    return FakeTensorMode(allow_non_fake_inputs=True, shape_env=shape_env, static_shapes=True)


@contextlib.contextmanager
def _faking(mode):
    """Enter the fake ``mode``. ``mot._plus_one`` caches a tensor per device: a fake one must not outlive the
    trace, nor a real one enter it, so its cache is emptied on both sides."""
    mot._plus_one.cache_clear()
    try:
        with mode:
            yield mode
    finally:
        mot._plus_one.cache_clear()


def _to_fake(module: nn.Module, mode, dtype_of: Callable[[torch.Tensor], torch.dtype]) -> None:
    """Replace every parameter by a fake one in ``dtype_of(param)`` (keeping ``requires_grad``; a parameter
    shared by several modules, as umT5's tied embedding, stays one), every buffer by its fake twin. Must run
    inside ``mode``."""
    fakes: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                if id(param) not in fakes:
                    fake = torch.empty(param.shape, dtype=dtype_of(param))
                    fakes[id(param)] = nn.Parameter(fake, requires_grad=param.requires_grad)
                sub._parameters[name] = fakes[id(param)]
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                fake = torch.empty(buffer.shape, dtype=buffer.dtype) if buffer.is_meta else mode.from_tensor(buffer)
                sub._buffers[name] = fake


def _autocast(config: FastWAMConfig, device_type: str):
    """The trainer's and the policy's mixed precision: autocast to the compute dtype unless that is fp32."""
    dtype = config.torch_dtype
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)


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
    with _autocast(config, torch.device(device).type):
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
    256-entry maps shared by all. Its update is in place, so its step adds no memory. ``tests/test_memory_planner.py``
    checks this layout against the real optimizer's."""

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
        self.mode = _new_fake_mode()
        with _faking(self.mode):
            _to_fake(self.layout, self.mode, _weight_dtype(config))
            self.optimizer = _optimizer_with_state(self.layout, config)
        self.traces: dict[int, StepTrace] = {}

    def __call__(self, batch_size: int) -> StepTrace:
        if batch_size not in self.traces:
            tracker = _LiveBytes(self.block)
            marks = []
            with _faking(self.mode), tracker:
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
    resident = _storage_bytes([*params, *tracer.layout.buffers(), *_optimizer_state(tracer.optimizer)], block)
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
        parameter_bytes=_storage_bytes(params, block),
        buffer_bytes=_storage_bytes(list(tracer.layout.buffers()), block),
        gradient_bytes=_storage_bytes(trainable, block),  # a gradient has its weight's shape and dtype
        optimizer_bytes=_storage_bytes(_optimizer_state(tracer.optimizer), block),
        activations_fixed=one.activations - per_sample,
        activations_per_sample=per_sample,
        step_peak=tracer(batch_size).peak,
        capacity=capacity,
        max_batch_size=largest,
        traces=dict(sorted(tracer.traces.items())),
    )


# ----------------------------------------------------------------------------------------------------------
# Inference


def inference_encoders(config: FastWAMConfig) -> tuple[nn.Module, nn.Module, torch.dtype]:
    """The frame codec (a ``frozen_encoders.LatentEncoder``) and the umT5 encoder the policy builds for inference,
    on the meta device, and the dtype the policy loads them in: the published Wan2.2 ones in the compute dtype,
    the small random ones of the test presets in fp32. The weight-free DCT codec is built for real (it holds
    only its small filter tables)."""
    from diffusers import AutoencoderKLWan  # noqa: PLC0415
    from transformers import UMT5Config, UMT5EncoderModel  # noqa: PLC0415

    from .frozen_encoders import LatentEncoder, build_latent_encoder, build_prompt_encoder  # noqa: PLC0415

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
    tracker = _LiveBytes(block)
    with _faking(_new_fake_mode(symbolic_scalars=True)) as mode:
        _to_fake(network, mode, lambda p: config.torch_dtype)
        _to_fake(codec, mode, lambda p: encoder_dtype)
        _to_fake(text_encoder, mode, lambda p: encoder_dtype)
        weights = [_storage_bytes(list(m.parameters()), block) for m in (network, codec, text_encoder)]
        buffers = _storage_bytes([*network.buffers(), *codec.buffers(), *text_encoder.buffers()], block)
        height, width = config.image_size
        with tracker, torch.no_grad():
            frame = torch.rand(1, 3, 1, height, width)  # the tiled cameras
            latents = codec(frame).float()
            with _autocast(config, "cpu"):
                ids = torch.zeros(1, config.text_max_length, dtype=torch.long)
                mask = torch.ones_like(ids)
                text = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                state = None if config.state_dim is None else torch.randn(1, config.state_dim)
                context = network.build_context(text * mask.unsqueeze(-1).to(text.dtype), state)
                noise = torch.randn(1, config.chunk_size, config.action_dim)
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


# ----------------------------------------------------------------------------------------------------------
# Measurement (the same step, for real)


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
    resident = _storage_bytes([*layout.parameters(), *layout.buffers(), *_optimizer_state(optimizer)], 1)

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


# ----------------------------------------------------------------------------------------------------------
# The command


def _gib(nbytes: int) -> str:
    """Bytes in GiB, or in MiB / KiB below one (the test presets)."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes / 2**10:.2f} KiB"


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def format_training(plan: TrainingPlan, lora_rank: int) -> str:
    """A Markdown table of ``plan`` and the largest batch that fits its capacity."""
    flags = RECIPE_FLAGS[plan.recipe].replace("<rank>", str(lora_rank)) or "every weight trained"
    frozen = plan.parameters - plan.trainable
    b = plan.batch_size
    rows = [
        (
            f"weights: {_count(plan.trainable)} trainable (fp32 masters), {_count(frozen)} frozen ({plan.dtype})",
            "",
            _gib(plan.parameter_bytes),
        ),
        ("buffers (RoPE tables)", "", _gib(plan.buffer_bytes)),
        (f"optimizer state ({OPTIMIZER_NAMES[plan.optimizer_type]})", "", _gib(plan.optimizer_bytes)),
        ("gradients (fp32; all alive when backward ends)", "", _gib(plan.gradient_bytes)),
        ("activations (alive when the forward ends)", _gib(plan.activations_per_sample), _gib(plan.activations)),
        ("step peak (traced: activations, gradients, temporaries)", "", _gib(plan.step_peak)),
    ]
    if plan.context_bytes:
        rows.append(("CUDA context (`CUDA_CONTEXT_BYTES`)", "", _gib(plan.context_bytes)))
    rows.append(
        ("**total** = weights + buffers + optimizer state + step peak + context", "", f"**{_gib(plan.total)}**")
    )
    lines = [
        f"#### Training, recipe `{plan.recipe}` ({flags}): {_count(plan.parameters)} weights, "
        f"{_count(plan.trainable)} trainable",
        "",
        f"| memory | per sample | batch {b} |",
        "|---|---:|---:|",
        *(f"| {name} | {per_sample} | {value} |" for name, per_sample, value in rows),
        "",
    ]
    if plan.capacity is not None:
        largest = plan.max_batch_size
        if largest:
            total = plan.resident_bytes + plan.traces[largest].peak
            at_least = "at least " if largest == MAX_BATCH_SIZE else ""
            lines.append(
                f"Largest batch that fits {_gib(plan.capacity)}: **{at_least}{largest}** (peak {_gib(total)})."
            )
        else:
            lines.append(f"Largest batch that fits {_gib(plan.capacity)}: **none**, batch 1 needs {_gib(plan.total)}.")
    return "\n".join(lines)


def format_measurement(plan: TrainingPlan, real: MeasuredStep) -> str:
    """The plan next to one real step (``measure_training_step``); the CUDA context is in neither."""
    rows = [
        ("weights, buffers, optimizer state", plan.resident_bytes - plan.context_bytes, real.resident),
        ("activations (alive when the forward ends)", plan.activations, real.activations),
        ("step peak", plan.step_peak, real.step_peak),
        ("total", plan.total - plan.context_bytes, real.resident + real.step_peak),
    ]
    return "\n".join(
        [
            f"| one real step on {plan.device}, batch {plan.batch_size} | planned | measured | planned / measured |",
            "|---|---:|---:|---:|",
            *(f"| {name} | {_gib(a)} | {_gib(b)} | {a / b:.3f} |" for name, a, b in rows),
        ]
    )


def format_inference(plan: InferencePlan, config: FastWAMConfig, capacity: int) -> str:
    """A Markdown table of ``plan`` and whether it fits ``capacity``."""
    rows = [
        (f"network weights: {_count(plan.parameters)} ({plan.dtype})", plan.parameter_bytes),
        ("buffers (RoPE tables, codec filters)", plan.buffer_bytes),
        (f"frame codec (`{config.video_codec}`): {_count(plan.codec_parameters)}", plan.codec_bytes),
        (f"text encoder (umT5): {_count(plan.text_parameters)}", plan.text_bytes),
        ("activations (traced peak of one chunk: codec, umT5, sampler)", plan.activations),
    ]
    if plan.context_bytes:
        rows.append(("CUDA context (`CUDA_CONTEXT_BYTES`)", plan.context_bytes))
    spare = capacity - plan.total
    verdict = f"yes, {_gib(spare)} to spare" if spare >= 0 else f"no, {_gib(-spare)} short"
    return "\n".join(
        [
            f"#### Inference (`predict_action_chunk`, {config.num_inference_steps} steps, batch 1)",
            "",
            "| memory | batch 1 |",
            "|---|---:|",
            *(f"| {name} | {_gib(value)} |" for name, value in rows),
            f"| **total** | **{_gib(plan.total)}** |",
            "",
            f"Batch 1 fits {_gib(capacity)}: **{verdict}**.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lerobot-fastwam memory",
        description="Plan the accelerator memory of training (per recipe) and inference, traced on the CPU.",
    )
    parser.add_argument("--preset", default="wan2.2-ti2v-5b", choices=sorted(PRESETS))
    parser.add_argument("--recipe", nargs="+", default=list(RECIPES), choices=RECIPES, help="training recipes")
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size per device")
    parser.add_argument(
        "--gpu-memory-gb", type=float, default=24.0, help="accelerator memory in GiB, as cards are sold (24, 80)"
    )
    parser.add_argument("--lora-rank", type=int, default=16, help="--peft.r of the lora recipe")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where it will run")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"], help="compute dtype")
    parser.add_argument(
        "--optimizer",
        default="adamw",
        choices=OPTIMIZER_TYPES,
        help="--policy.optimizer_type (adamw_8bit: bitsandbytes)",
    )
    parser.add_argument("--variant", default="fastwam", choices=VARIANTS)
    parser.add_argument("--num-layers", type=int, default=None, help="override the preset's layer count")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="tiled image")
    parser.add_argument(
        "--measure", action="store_true", help="also run one real training step per recipe on --device and compare"
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "lora_rank", "num_layers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    if args.gpu_memory_gb <= 0:
        parser.error(f"--gpu-memory-gb must be positive, got {args.gpu_memory_gb}.")
    if args.measure and args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--measure --device cuda needs a CUDA device; use --device cpu to measure on this machine.")
    overrides = {
        "variant": args.variant,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optimizer_type": args.optimizer,
    }
    for name in ("dtype", "num_layers", "image_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        config = planning_config(args.preset, **overrides)
    except ValueError as err:
        parser.error(str(err))
    capacity = int(args.gpu_memory_gb * GIB)
    height, width = config.image_size
    layers = f"{config.num_layers} layer" + "s" * (config.num_layers != 1)
    print(
        f"### Fast-WAM memory plan: preset `{args.preset}` ({layers}, {height}x{width} image, "
        f"{config.num_video_frames} frames, chunk {config.chunk_size}, variant `{config.variant}`, gradient "
        f"checkpointing {'on' if config.gradient_checkpointing else 'off'}), {args.device}, compute dtype "
        f"{config.dtype}\n"
    )
    for recipe in args.recipe:
        plan = plan_training(
            config, recipe, batch_size=args.batch_size, capacity=capacity, device=args.device, lora_rank=args.lora_rank
        )
        print(format_training(plan, args.lora_rank) + "\n")
        if args.measure:
            real = measure_training_step(config, recipe, args.batch_size, device=args.device, lora_rank=args.lora_rank)
            print(format_measurement(plan, real) + "\n")
    print(format_inference(plan_inference(config, device=args.device), config, capacity))
