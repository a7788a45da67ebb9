"""How the memory planner prints: the ``lerobot-fastwam memory`` command and its Markdown tables."""

from __future__ import annotations

import argparse

import torch

from ...configuration_fastwam import OPTIMIZER_TYPES, PRESETS, VARIANTS, FastWAMConfig
from ..help_format import DefaultsHelpFormatter
from .plan import (
    GIB,
    MAX_BATCH_SIZE,
    OPTIMIZER_NAMES,
    RECIPE_FLAGS,
    RECIPES,
    InferencePlan,
    MeasuredStep,
    TrainingPlan,
    measure_training_step,
    plan_inference,
    plan_training,
    planning_config,
)


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
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--preset", default="wan2.2-ti2v-5b", choices=sorted(PRESETS), help="model architecture")
    parser.add_argument("--recipe", nargs="+", default=list(RECIPES), choices=RECIPES, help="training recipes")
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size per device")
    parser.add_argument(
        "--gpu-memory-gb", type=float, default=24.0, help="accelerator memory in GiB, as cards are sold (24, 80)"
    )
    parser.add_argument("--lora-rank", type=int, default=16, help="--peft.r of the lora recipe")
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="--policy.gradient_checkpointing",
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where it will run")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float16", "float32"],
        help="compute dtype (default: the preset's)",
    )
    parser.add_argument(
        "--optimizer",
        default="adamw",
        choices=OPTIMIZER_TYPES,
        help="--policy.optimizer_type (adamw_8bit: bitsandbytes)",
    )
    parser.add_argument("--variant", default="fastwam", choices=VARIANTS, help="--policy.variant")
    parser.add_argument("--num-layers", type=int, default=None, help="override the preset's layer count")
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="tiled image (default: the preset's)"
    )
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
