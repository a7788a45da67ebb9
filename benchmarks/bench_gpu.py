"""What only a GPU shows: action-chunk latency of the plugin per action loop, and training step time and peak
memory per training recipe, at the paper's size by default (random weights: no download).

- **Action chunk** (``--loops``): ``predict_action_chunk`` at batch 1, network in the compute dtype as a loaded
  checkpoint holds it, after ``FastWAMPolicy.warm_up`` (the load-time compile / capture, timed separately):
  ``eager``, ``compiled`` (``compile_action_step``) and ``cuda-graph`` (compiled and the Euler loop replayed as
  one CUDA graph: the default on CUDA), at each of ``--steps`` denoising steps (below 4 steps the policy is
  a few-step one, ``action_consistency_weight=1``, as a user would train it). Median of ``--iters``; peak
  memory of the inference.
- **Training step** (``--recipes``): forward + backward + grad clip + the policy's optimizer step at
  ``--batch-size``, from cached latents and text contexts (the VAE and umT5 are not loaded, as with
  ``lerobot-fastwam cache``), median of ``--train-iters``; peak memory from the first step on (optimizer state
  included). Recipes (``RECIPES``, the flags in ``docs/training_recipes.md``):
  ``full`` (every weight trained), ``frozen-video`` (``freeze_video_expert``), ``frozen-video-8bit`` (and
  ``optimizer_type=adamw_8bit``), ``lora`` (LeRobot's ``--peft.method_type=LORA`` over a loaded checkpoint).
  A step that does not fit is reported as ``OOM``.

GPU (what to run when one is lent; about 10 minutes on an H100):

    python benchmarks/bench_gpu.py --output docs/benchmarks.md

CPU smoke run (a tiny preset, fp32; the test suite runs it so the script keeps working):

    python benchmarks/bench_gpu.py --device cpu --preset tiny --dtype float32 --loops eager --iters 2
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin's optimizer presets)
from lerobot_fastwam.configuration_fastwam import FEW_STEPS, PRESETS, FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import LATENTS_KEY, TEXT_CONTEXT_KEY, FastWAMPolicy  # noqa: E402

ACTION_DIM = STATE_DIM = 14  # ALOHA-sized, the largest robot in examples/robot_recipes.md
CAMERAS = 2
LOOPS = {"eager": (False, False), "compiled": (True, False), "cuda-graph": (True, True)}
RECIPES: dict[str, dict] = {  # config overrides (and "lora": the LoRA rank) of each training recipe
    "full": {},
    "frozen-video": {"freeze_video_expert": True},
    "frozen-video-8bit": {"freeze_video_expert": True, "optimizer_type": "adamw_8bit"},
    "lora": {"lora": 16},
}


def build(args, **overrides) -> FastWAMPolicy:
    inputs, outputs = default_features(ACTION_DIM, STATE_DIM, PRESETS[args.preset]["image_size"], CAMERAS)
    config = FastWAMConfig(
        preset=args.preset,
        input_features=inputs,
        output_features=outputs,
        device=args.device,
        dtype=args.dtype,
        use_pretrained_wan=False,  # random weights, random frozen encoders: nothing to download
        gradient_checkpointing=args.gradient_checkpointing,
        **overrides,
    )
    torch.manual_seed(0)
    return FastWAMPolicy(config).to(args.device)


def to_compute_dtype(policy: FastWAMPolicy, trainable: Callable[[str], bool] = lambda name: False) -> None:
    """Hold the network as a loaded checkpoint does: the compute dtype, except weights that will train."""
    dtype = policy.config.torch_dtype
    for name, param in policy.model.named_parameters():
        if not trainable(name):
            param.data = param.data.to(dtype)


def drop_frozen_encoders(policy: FastWAMPolicy) -> None:
    """Training from the latent cache never builds the VAE and umT5: free the random ones built here."""
    for name in ("latent_encoder", "prompt_encoder"):
        policy._modules.pop(name, None)
    free(policy.config.device)


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def observation(config: FastWAMConfig, device: str) -> dict:
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(1, 3, h, w, generator=g).to(device) for k, (h, w) in config.camera_tile_sizes.items()}
    batch["observation.state"] = torch.randn(1, STATE_DIM, generator=g).to(device)
    batch["task"] = ["pick up the cube"]
    return batch


def training_batch(config: FastWAMConfig, batch_size: int, device: str) -> dict:
    """A batch as the latent cache gives it: normalised latents and umT5 contexts instead of frames and tasks."""
    g = torch.Generator().manual_seed(2)
    h, w = (s // 16 for s in config.image_size)
    return {
        LATENTS_KEY: torch.randn(batch_size, config.latent_channels, config.num_latent_frames, h, w, generator=g),
        TEXT_CONTEXT_KEY: torch.randn(batch_size, config.text_max_length, config.text_dim, generator=g),
        "observation.state": torch.randn(batch_size, STATE_DIM, generator=g),
        "action": torch.randn(batch_size, config.chunk_size, ACTION_DIM, generator=g),
        "action_is_pad": torch.zeros(batch_size, config.chunk_size, dtype=torch.bool),
    }


def time_calls(fn: Callable[[], object], device: str, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_loop(args, loop: str, steps: int) -> dict:
    compile_step, graph = LOOPS[loop]
    few_step = {"action_consistency_weight": 1.0} if steps < FEW_STEPS else {}
    policy = build(
        args, compile_action_step=compile_step, cuda_graph=graph, num_inference_steps=steps, **few_step
    ).eval()
    to_compute_dtype(policy)
    free(args.device)
    obs = observation(policy.config, args.device)
    reset_peak(args.device)
    start = time.perf_counter()
    policy.warm_up()
    warm = time.perf_counter() - start
    if policy.model.eager_action_loop:
        raise RuntimeError(f"the {loop} action loop fell back to eager at warm-up: see the warning above")
    ms = time_calls(lambda: policy.predict_action_chunk(obs), args.device, args.warmup, args.iters)
    return {"loop": loop, "steps": steps, "chunk_ms": ms, "warm_up_s": warm, "peak_gib": peak_gib(args.device)}


def bench_recipe(args, recipe: str) -> dict:
    overrides = dict(RECIPES[recipe])
    rank = overrides.pop("lora", None)
    row = {"recipe": recipe, "batch": args.batch_size}
    try:
        policy = build(args, **overrides)
        drop_frozen_encoders(policy)
        if rank is not None:
            # A LoRA run fine-tunes a loaded checkpoint (LeRobot refuses LoRA from scratch): its network is in the
            # compute dtype; LeRobot's own wrap_with_peft then adds the adapters with the plugin's default targets.
            to_compute_dtype(policy)
            policy.config.pretrained_path = "benchmark"
            policy = policy.wrap_with_peft(peft_cli_overrides={"method_type": "LORA", "r": rank})
        policy.train()
        params = policy.get_optim_params()
        config = policy.config
        optimizer = config.get_optimizer_preset().build(params)
        row["trained"] = sum(p.numel() for p in params)
        batch = {k: v.to(args.device) for k, v in training_batch(config, args.batch_size, args.device).items()}

        def step() -> None:
            loss, _ = policy.forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.optimizer_grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        free(args.device)
        reset_peak(args.device)
        row["step_ms"] = time_calls(step, args.device, args.train_warmup, args.train_iters)
        row["peak_gib"] = peak_gib(args.device)
    except torch.OutOfMemoryError:
        row["step_ms"] = "OOM"
    return row


def environment(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}"
        )
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else (value if isinstance(value, str) else format(value, spec))


def report(args, loops: list[dict], recipes: list[dict], command: str) -> str:
    lines = [
        f"### GPU benchmark: {args.preset} ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- device: {environment(args.device)}",
        f"- settings: {args.dtype}; {CAMERAS} cameras tiled to the preset's image, state/action {STATE_DIM}, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}",
        "",
    ]
    if loops:
        lines += [
            "| action loop | steps | chunk at batch 1 (ms) | load-time warm-up (s) | peak memory (GiB) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['loop']} | {r['steps']} | {r['chunk_ms']:.1f} | {r['warm_up_s']:.1f} | {fmt(r['peak_gib'], '.2f')} |"
            for r in loops
        ]
        lines.append("")
    if recipes:
        lines += [
            "| recipe | batch | trained params | step (ms) | peak memory (GiB) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['recipe']} | {r['batch']} | {fmt(r.get('trained'), ',')} | {fmt(r['step_ms'], '.0f')} "
            f"| {fmt(r.get('peak_gib'), '.2f')} |"
            for r in recipes
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="wan2.2-ti2v-5b", choices=["wan2.2-ti2v-5b", "small", "tiny"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--loops", nargs="*", default=list(LOOPS), choices=list(LOOPS))
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 1], help="denoising steps per chunk")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True, help="per MoT layer"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--train-warmup", type=int, default=2)
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available here; for a CPU smoke run: --device cpu --preset tiny --dtype float32")
    if "cuda-graph" in args.loops and not args.device.startswith("cuda"):
        parser.error("--loops cuda-graph needs --device cuda.")
    command = "python benchmarks/bench_gpu.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    loops = []
    for loop in args.loops:
        for steps in args.steps:
            loops.append(bench_loop(args, loop, steps))
            free(args.device)
            print(loops[-1], flush=True)
    recipes = []
    for recipe in args.recipes:
        recipes.append(bench_recipe(args, recipe))
        free(args.device)
        print(recipes[-1], flush=True)
    text = report(args, loops, recipes, command)
    print(text)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + text)
    return loops, recipes


if __name__ == "__main__":
    main()
