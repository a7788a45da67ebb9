"""The action chunk at 1, 2 and 10 steps against LeRobot's built-in at its 10, at the paper's widths.

Both policies are built with random weights at the paper's widths (Wan2.2-TI2V-5B video expert, 1024-wide
action expert) with ``--num-layers`` layers and the small random VAE / umT5 of the offline builds, and get the
same two-camera batch, repeated to each batch size. In one run the calls alternate (plugin at 1, 2 and 10 steps,
built-in at 10), so a change of machine load hits all alike; the table gives each median and its ratio to the
built-in's 10-step chunk.

    HF_HUB_OFFLINE=1 python benchmarks/bench_few_step.py --num-layers 6 --batch-sizes 1 4 --iters 20 \
        --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
from pathlib import Path

import torch
from bench_policy import (
    CHUNK_SIZE,
    arch_spec,
    build_builtin,
    build_plugin,
    environment,
    inference_batch,
    time_calls,
)

CAMERAS = 2
PLUGIN_STEPS = (1, 2, 10)
BUILTIN_STEPS = 10


def chunk_call(policy, batch: dict, steps: int | None = None):
    def call():
        if steps is not None:
            policy.config.num_inference_steps = steps
        policy.reset()
        with torch.no_grad():
            policy.predict_action_chunk(batch)

    return call


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--output", type=Path, default=None, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    spec = {**arch_spec("5b"), "num_layers": args.num_layers}
    torch.manual_seed(0)
    # A few-step policy: its step-size embedding runs too.
    plugin = build_plugin("5b", spec, CAMERAS, "cpu", "float32", 10, action_consistency_weight=1.0).eval()
    builtin = build_builtin(spec, CAMERAS, "cpu", "float32", BUILTIN_STEPS).eval()
    single = inference_batch(spec, CAMERAS, "cpu", seed=0)
    medians: dict[int, dict[str, float]] = {}
    for batch_size in args.batch_sizes:
        batch = {
            k: (v.expand(batch_size, *v.shape[1:]).contiguous() if torch.is_tensor(v) else v * batch_size)
            for k, v in single.items()
        }
        calls = {f"plugin {n}": chunk_call(plugin, batch, n) for n in PLUGIN_STEPS}
        calls[f"built-in {BUILTIN_STEPS}"] = chunk_call(builtin, batch)
        times = time_calls(calls, args.warmup, args.iters, "cpu")
        medians[batch_size] = {name: 1000 * statistics.median(t) for name, t in times.items()}
        print(batch_size, {k: round(v, 1) for k, v in medians[batch_size].items()}, flush=True)
    reference = f"built-in {BUILTIN_STEPS}"
    lines = [
        f"### Few-step chunk at the paper's widths, {args.num_layers} layers, CPU "
        f"({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        "- command: `python benchmarks/bench_few_step.py " + shlex.join(sys.argv[1:] if argv is None else argv) + "`",
        f"- device: {environment(argparse.Namespace(device='cpu'))}",
        f"- `predict_action_chunk`, float32, eager, {CAMERAS} cameras (224x448 tiled), chunk {CHUNK_SIZE}; median of "
        f"{args.iters} alternating calls after {args.warmup}; ratio to the built-in's {BUILTIN_STEPS}-step chunk",
        "",
        "| batch | " + " | ".join(f"plugin {n} step{'s' * (n > 1)}" for n in PLUGIN_STEPS) + f" | {reference} steps |",
        "|---:|" + "---:|" * (len(PLUGIN_STEPS) + 1),
    ]
    for batch_size, row in medians.items():
        cells = [f"{row[f'plugin {n}']:.0f} ms ({row[f'plugin {n}'] / row[reference]:.2f}x)" for n in PLUGIN_STEPS]
        lines.append(f"| {batch_size} | " + " | ".join(cells) + f" | {row[reference]:.0f} ms |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        with args.output.open("a") as f:
            f.write("\n" + report)
    return medians


if __name__ == "__main__":
    main()
