"""Per-chunk latency of the paper's four models (``--policy.variant``), one network with random weights.

For each variant (``fastwam``, ``joint``, ``idm``, ``no_cotrain``) the same random weights (one seed, the same
architecture: the variants differ in mask and sampler only) are built at ``--preset``, and two things are timed
at batch 1, median of ``--iters`` calls after ``--warmup``:

- **policy chunk**: ``predict_action_chunk``, the whole call (current frame VAE-encoded, cached prompt, the
  variant's sampler);
- **network only**: the variant's sampler (``FastWAM.sample``) on precomputed latents and context, the closest
  to the paper's "model forward only" latency.

The ratios to ``fastwam`` are the paper's comparison: on an RTX 5090D at 384x320 it reports Fast-WAM 190 ms,
Joint 580 ms (3.1x), IDM 810 ms (4.3x). On CPU the calls of the four variants alternate, so a change in
machine load hits them alike; on CUDA each variant is built, measured and freed in turn.

CPU (``small`` preset, as recorded in docs/benchmarks.md):
    HF_HUB_OFFLINE=1 python benchmarks/variants.py --preset small --output docs/benchmarks.md

GPU, paper-size model (random 5B video + 1B action expert, small random VAE / umT5; not run yet):
    HF_HUB_OFFLINE=1 python benchmarks/variants.py --device cuda --preset wan2.2-ti2v-5b --dtype bfloat16 \\
        --iters 20 --warmup 3 --output docs/benchmarks.md

``--output`` replaces the section between ``<!-- variants:begin -->`` and ``<!-- variants:end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import shlex
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_policy import environment, time_calls  # noqa: E402  (benchmarks/, the script's directory)

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin)
from lerobot_fastwam.configuration_fastwam import PRESETS, VARIANTS, FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402

BEGIN, END = "<!-- variants:begin -->", "<!-- variants:end -->"
ACTION_DIM, STATE_DIM, CAMERAS = 7, 8, 2
TASK = "pick up the red block and put it in the bowl"
PAPER_MS = {"fastwam": 190.0, "joint": 580.0, "idm": 810.0}  # RTX 5090D, 384x320, model forward only


def build(variant: str, args: argparse.Namespace) -> FastWAMPolicy:
    inputs, outputs = default_features(ACTION_DIM, STATE_DIM, PRESETS[args.preset]["image_size"], CAMERAS)
    config = FastWAMConfig(
        preset=args.preset,
        variant=variant,
        input_features=inputs,
        output_features=outputs,
        device=args.device,
        dtype=args.dtype,
        num_inference_steps=args.steps,
        use_pretrained_wan=False,  # random weights and random frozen encoders: no download
    )
    torch.manual_seed(0)  # the same weights for every variant
    policy = FastWAMPolicy(config).to(args.device).eval()
    if args.dtype != "float32":  # hold the network in the compute dtype, as a loaded checkpoint does
        for param in policy.model.parameters():
            param.data = param.data.to(config.torch_dtype)
    return policy


def calls(policy: FastWAMPolicy, args: argparse.Namespace) -> dict[str, object]:
    """The two timed calls of one policy: its whole ``predict_action_chunk`` and its sampler alone."""
    height, width = policy.config.image_size
    g = torch.Generator().manual_seed(0)
    batch = {
        key: torch.rand(1, 3, height, width // CAMERAS, generator=g).to(args.device)
        for key in policy.config.ordered_camera_keys
    }
    batch["observation.state"] = torch.randn(1, STATE_DIM, generator=g).to(args.device)
    batch["task"] = [TASK]
    model, steps = policy.model, args.steps
    with torch.no_grad():
        first = policy._current_latents(batch)
        with policy._autocast():
            context = policy._context(batch, 1)
        noise = policy._initial_noise(1, first.device)
        future_noise = policy._future_noise(first) if model.samples_future else None

    def network():
        with torch.no_grad(), policy._autocast():
            model.sample(first, context, noise, steps, future_noise)

    return {"chunk": lambda: policy.predict_action_chunk(batch), "network": network}


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """variant -> {"chunk": median seconds, "network": median seconds}."""
    results: dict[str, dict[str, float]] = {}
    if args.device.startswith("cuda"):  # one paper-size model in memory at a time
        for variant in args.variants:
            policy = build(variant, args)
            times = time_calls(calls(policy, args), args.warmup, args.iters, args.device)
            results[variant] = {name: statistics.median(values) for name, values in times.items()}
            print(variant, {k: f"{v * 1e3:.1f} ms" for k, v in results[variant].items()}, flush=True)
            del policy
            gc.collect()
            torch.cuda.empty_cache()
        return results
    fns = {}
    for variant in args.variants:
        for name, fn in calls(build(variant, args), args).items():
            fns[(variant, name)] = fn
    times = time_calls(fns, args.warmup, args.iters, args.device)
    for (variant, name), values in times.items():
        results.setdefault(variant, {})[name] = statistics.median(values)
    return results


def render(results: dict[str, dict[str, float]], args: argparse.Namespace, command: str) -> str:
    config = FastWAMConfig(preset=args.preset)
    base = results.get("fastwam")
    lines = [
        BEGIN,
        f"### The four variants: latency per action chunk ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- machine: {environment(args)}; 1-min load average before the run {args.load_before:.2f}",
        f"- settings: preset `{args.preset}` ({config.num_layers} layers, {config.num_heads}x{config.head_dim} heads, "
        f"image {config.image_size[0]}x{config.image_size[1]} from {CAMERAS} cameras, 3 latent frames), "
        f"{args.dtype}, random weights (the same for every variant), batch 1, chunk 32, "
        f"{args.steps} denoising steps (Joint: {args.steps} joint steps; IDM: {args.steps} video + {args.steps} "
        f"action steps), median of {args.iters} calls after {args.warmup} warm-up, the variants' calls "
        + ("measured one variant at a time" if args.device.startswith("cuda") else "alternating"),
        "",
        "| variant | policy chunk (ms) | ratio | network only (ms) | ratio | paper (RTX 5090D, model only) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in args.variants:
        row = results[variant]
        paper = PAPER_MS.get(variant)
        paper_cell = (
            "as Fast-WAM" if variant == "no_cotrain" else f"{paper:.0f} ms ({paper / PAPER_MS['fastwam']:.1f}x)"
        )
        cells = [f"`{variant}`"]
        for name in ("chunk", "network"):
            cells += [f"{row[name] * 1e3:,.1f}", f"{row[name] / base[name]:.2f}x" if base else "-"]
        lines.append("| " + " | ".join([*cells, paper_cell]) + " |")
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, help="markdown file whose variants section is replaced")
    args = parser.parse_args()
    if "fastwam" not in args.variants:
        args.variants.insert(0, "fastwam")  # the ratios' reference
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = f"{threads}HF_HUB_OFFLINE=1 python benchmarks/variants.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    args.load_before = os.getloadavg()[0]
    block = render(measure(args), args, command)
    print(block)
    if args.output:
        text = args.output.read_text() if args.output.exists() else ""
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        args.output.write_text(text)


if __name__ == "__main__":
    main()
