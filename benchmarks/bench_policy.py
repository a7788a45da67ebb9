"""Side-by-side speed of the lerobot_fastwam plugin and LeRobot's built-in ``lerobot.policies.fastwam``.

Both policies are built with random weights at the same architecture (same layers, heads, head dim, FFN
widths, text/frequency dims, same random VAE and umT5 sizes; the table's "trainable params" column shows the
counts match) and fed the same LeRobot-style batch (cameras ``observation.images.cam<i>`` as float in
[0, 1], ``observation.state``, ``task`` strings; for training also 9 frames per camera, ``action`` and
``action_is_pad``). For each config it measures

- one action chunk: ``predict_action_chunk`` at batch 1 (each policy's cached path: the first latent frame
  is prefilled once, then only the action expert runs for each of the 10 denoising steps), median of
  ``--iters`` calls after ``--warmup`` calls;
- one training step: ``forward`` + ``backward`` + grad-norm clip (1.0, as ``lerobot-train`` does) + AdamW
  (lr 1e-4, betas (0.9, 0.95), wd 0.01) step, median of ``--train-iters`` steps after ``--train-warmup``;

and the ratio plugin / built-in for each (below 1: the plugin is faster). Each policy is built, measured and
freed in turn, so only one policy is in memory at a time.

Both policies run their own full ``predict_action_chunk`` / ``forward``, including VAE encoding and prompt
handling: the plugin serves a repeated task string from its prompt-embedding cache, the built-in runs its
text encoder on every call. Those are the policies' own behaviours, so they are timed as they are.

CPU (run here):
    HF_HUB_OFFLINE=1 python benchmarks/bench_policy.py --config tiny small --output docs/benchmarks.md

GPU, paper-size model (random weights; 5B video expert + 1B action expert):
    HF_HUB_OFFLINE=1 python benchmarks/bench_policy.py --device cuda --config 5b --dtype bfloat16

``--output`` appends a dated markdown section (command, device, tables), so successive runs accumulate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin; the built-in stays importable directly)
from benchmarks.builtin_offline import build_builtin_policy  # noqa: E402
from lerobot_fastwam.configuration_fastwam import PRESETS, FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402

ACTION_DIM = 7
STATE_DIM = 8
CHUNK_SIZE = 32
MODEL_VIDEO_FRAMES = 9  # frames the video expert sees (1 + 2 * 4 -> 3 latent frames)
VIDEO_FRAME_STRIDE = 4  # dataset frames between two model frames
TASKS = ("pick up the red block and put it in the bowl", "open the top drawer")

ARCH_FIELDS = (
    "num_layers", "num_heads", "head_dim", "video_ffn_dim", "action_hidden_dim", "action_ffn_dim", "text_dim",
    "freq_dim", "image_size", "text_max_length", "random_vae_base_dim", "random_text_encoder_layers",
)


# ------------------------------------------------------------------------------------------------------
# Configs
def arch_spec(name: str) -> dict[str, Any]:
    """Architecture numbers of a config: the plugin's presets, or its 5B defaults for ``5b``."""
    defaults = {f.name: f.default for f in dataclasses.fields(FastWAMConfig)}
    spec = {key: defaults[key] for key in ARCH_FIELDS}
    if name != "5b":
        spec.update({k: v for k, v in PRESETS[name].items() if k in ARCH_FIELDS})
    spec["image_size"] = tuple(spec["image_size"])
    return spec


def build_plugin(name: str, spec: dict, cameras: int, device: str, dtype: str, steps: int) -> FastWAMPolicy:
    inputs, outputs = default_features(ACTION_DIM, STATE_DIM, spec["image_size"], cameras)
    config = FastWAMConfig(
        preset=None if name == "5b" else name,
        input_features=inputs,
        output_features=outputs,
        device=device,
        chunk_size=CHUNK_SIZE,
        num_video_frames=MODEL_VIDEO_FRAMES,
        video_frame_stride=VIDEO_FRAME_STRIDE,
        num_inference_steps=steps,
        pretrained_model_id=None,  # random weights, random frozen encoders: no download
    )
    # A preset re-applies its own value to any field still equal to the 5B default, so an explicit
    # dtype="bfloat16" would come back as the preset's float32: set the requested dtype afterwards.
    config.dtype = dtype
    for key, value in spec.items():
        got = tuple(getattr(config, key)) if key == "image_size" else getattr(config, key)
        if got != value:
            raise RuntimeError(f"plugin config {key}={got!r}, expected {value!r}")
    return FastWAMPolicy(config).to(device)


def build_builtin(spec: dict, cameras: int, device: str, dtype: str, steps: int):
    return build_builtin_policy(
        ACTION_DIM, STATE_DIM, spec["image_size"], cameras,
        num_layers=spec["num_layers"], num_heads=spec["num_heads"], head_dim=spec["head_dim"],
        video_ffn_dim=spec["video_ffn_dim"], action_hidden_dim=spec["action_hidden_dim"],
        action_ffn_dim=spec["action_ffn_dim"], text_dim=spec["text_dim"], freq_dim=spec["freq_dim"],
        device=device, dtype=dtype, chunk_size=CHUNK_SIZE, model_video_frames=MODEL_VIDEO_FRAMES,
        video_frame_stride=VIDEO_FRAME_STRIDE, text_max_length=spec["text_max_length"],
        vae_base_dim=spec["random_vae_base_dim"], text_encoder_layers=spec["random_text_encoder_layers"],
        num_inference_steps=steps, seed=None,
    )


# ------------------------------------------------------------------------------------------------------
# Batches (as LeRobot hands them to a policy after its preprocessor)
def camera_keys(cameras: int) -> list[str]:
    return [f"observation.images.cam{i}" for i in range(cameras)]


def inference_batch(spec: dict, cameras: int, device: str, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    height, width = spec["image_size"]
    batch: dict[str, Any] = {
        key: torch.rand(1, 3, height, width // cameras, generator=g).to(device) for key in camera_keys(cameras)
    }
    batch["observation.state"] = torch.randn(1, STATE_DIM, generator=g).to(device)
    batch["task"] = [TASKS[0]]
    return batch


def training_batch(spec: dict, cameras: int, batch_size: int, device: str, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed + 1)
    height, width = spec["image_size"]
    frames = MODEL_VIDEO_FRAMES
    batch: dict[str, Any] = {}
    for key in camera_keys(cameras):
        batch[key] = torch.rand(batch_size, frames, 3, height, width // cameras, generator=g).to(device)
        batch[f"{key}_is_pad"] = torch.zeros(batch_size, frames, dtype=torch.bool, device=device)
    # observation_delta_indices applies to every observation key, so the state also has a time axis.
    batch["observation.state"] = torch.randn(batch_size, frames, STATE_DIM, generator=g).to(device)
    batch["action"] = torch.randn(batch_size, CHUNK_SIZE, ACTION_DIM, generator=g).to(device)
    batch["action_is_pad"] = torch.zeros(batch_size, CHUNK_SIZE, dtype=torch.bool, device=device)
    batch["task"] = [TASKS[i % len(TASKS)] for i in range(batch_size)]
    return batch


# ------------------------------------------------------------------------------------------------------
# Timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], warmup: int, iters: int, device: str) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


@dataclasses.dataclass
class Measurement:
    trainable_params: int
    latency: list[float] | None = None  # seconds per action chunk
    train: list[float] | None = None  # seconds per training step
    train_error: str | None = None
    peak_mem_gib: float | None = None


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_policy(policy, spec: dict, args: argparse.Namespace) -> Measurement:
    device = args.device
    params = list(policy.get_optim_params())
    result = Measurement(trainable_params=sum(p.numel() for p in params))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    obs = inference_batch(spec, args.cameras, device, args.seed)
    policy.reset()
    result.latency = time_calls(lambda: policy.predict_action_chunk(obs), args.warmup, args.iters, device)
    if args.profile:
        profile_chunk(policy, obs, device)

    if args.train_iters > 0:
        batch = training_batch(spec, args.cameras, args.train_batch, device, args.seed)
        optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
        policy.train()

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = policy.forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

        try:
            result.train = time_calls(train_step, args.train_warmup, args.train_iters, device)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            result.train_error = "OOM"
        finally:
            optimizer.zero_grad(set_to_none=True)
            del optimizer
    if device.startswith("cuda"):
        result.peak_mem_gib = torch.cuda.max_memory_allocated() / 2**30
    return result


def profile_chunk(policy, obs: dict, device: str, rows: int = 15) -> None:
    """Print the ops that take the time in one action chunk (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        policy.predict_action_chunk(obs)
        _sync(device)
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(f"\n--- profile: {type(policy).__module__} predict_action_chunk ---")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------
# Report
def _ms(values: list[float] | None) -> float | None:
    return None if not values else statistics.median(values) * 1e3


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def environment(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        model = platform.processor() or "unknown CPU"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        where = f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    import diffusers  # noqa: PLC0415
    import lerobot  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    return (
        f"{where}; torch {torch.__version__}, lerobot {getattr(lerobot, '__version__', '?')}, "
        f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}"
    )


def render(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    steps = args.steps
    lines = [
        f"### Fast-WAM plugin vs built-in: {', '.join(args.config)} "
        f"({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- device: {environment(args)}",
        f"- settings: dtype {args.dtype}; {args.cameras} camera(s); state {STATE_DIM}, action {ACTION_DIM}, "
        f"chunk {CHUNK_SIZE}, {MODEL_VIDEO_FRAMES} video frames; action chunk at batch 1 with {steps} denoising "
        f"steps, median of {args.iters} after {args.warmup} warm-up; training step (forward + backward + clip "
        f"+ AdamW) at batch {args.train_batch}, median of {args.train_iters} after {args.train_warmup} warm-up",
        "",
        "| config | image (HxW) | trainable params | chunk plugin (ms) | chunk built-in (ms) | chunk ratio "
        "| train step plugin (ms) | train step built-in (ms) | train ratio | train plugin (samples/s) "
        "| train built-in (samples/s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        plug, built = row["plugin"], row["builtin"]
        params = (
            f"{plug.trainable_params:,}" if plug.trainable_params == built.trainable_params
            else f"{plug.trainable_params:,} vs {built.trainable_params:,} (MISMATCH)"
        )
        cells = [row["config"], "x".join(map(str, row["image_size"])), params]
        lat_p, lat_b = _ms(plug.latency), _ms(built.latency)
        cells += [_fmt(lat_p), _fmt(lat_b), _ratio(lat_p, lat_b)]
        tr_p = plug.train_error or _ms(plug.train)
        tr_b = built.train_error or _ms(built.train)
        num = lambda v: v if isinstance(v, float) else None  # noqa: E731
        cells += [
            tr_p if isinstance(tr_p, str) else _fmt(tr_p),
            tr_b if isinstance(tr_b, str) else _fmt(tr_b),
            _ratio(num(tr_p), num(tr_b)),
        ]
        sps = lambda v: None if not isinstance(v, float) else args.train_batch / (v / 1e3)  # noqa: E731
        cells += [_fmt(sps(tr_p), 2), _fmt(sps(tr_b), 2)]
        lines.append("| " + " | ".join(cells) + " |")

    gpu = any(r[p].peak_mem_gib is not None for r in rows for p in ("plugin", "builtin"))
    lines += [
        "",
        "Spread (min / median / max, ms):",
        "",
        "| config | policy | action chunk | training step |" + (" peak GPU mem (GiB) |" if gpu else ""),
        "|---|---|---|---|" + ("---:|" if gpu else ""),
    ]
    for row in rows:
        for key, label in (("plugin", "plugin"), ("builtin", "built-in")):
            m: Measurement = row[key]

            def spread(values: list[float] | None, error: str | None = None) -> str:
                if error:
                    return error
                if not values:
                    return "-"
                return " / ".join(f"{v * 1e3:,.1f}" for v in (min(values), statistics.median(values), max(values)))

            line = f"| {row['config']} | {label} | {spread(m.latency)} | {spread(m.train, m.train_error)} |"
            if gpu:
                line += f" {_fmt(m.peak_mem_gib, 1)} |"
            lines.append(line)
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "5b"],
                        help="architecture sizes: the plugin's presets, or 5b (paper size; needs a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cameras", type=int, default=2, choices=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per action chunk")
    parser.add_argument("--warmup", type=int, default=3, help="untimed action chunks first")
    parser.add_argument("--iters", type=int, default=20, help="timed action chunks")
    parser.add_argument("--train-batch", type=int, default=2, help="training batch size")
    parser.add_argument("--train-warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--train-iters", type=int, default=10, help="timed training steps (0: skip training)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of one action chunk of each policy")
    parser.add_argument("--output", type=Path, default=None, help="append the markdown report to this file")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device} requested but CUDA is not available on this machine.")
    elif args.device != "cpu":
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}.")
    if "5b" in args.config and not args.device.startswith("cuda"):
        parser.error("--config 5b builds two ~6 B-parameter models; run it with --device cuda.")
    if args.device == "cpu" and args.dtype != "float32":
        warnings.warn("bfloat16/float16 on CPU is slow and not what either policy is tuned for.", stacklevel=1)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_policy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*Disabling autocast.*")
    warnings.filterwarnings("ignore", message=".*torch_dtype.*from_pretrained.*")

    rows = []
    for name in args.config:
        spec = arch_spec(name)
        row: dict[str, Any] = {"config": name, "image_size": spec["image_size"]}
        builders = {
            "plugin": lambda: build_plugin(name, spec, args.cameras, args.device, args.dtype, args.steps),  # noqa: B023
            "builtin": lambda: build_builtin(spec, args.cameras, args.device, args.dtype, args.steps),  # noqa: B023
        }
        for key, build in builders.items():
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            policy = build()
            built_s = time.perf_counter() - start
            row[key] = measure_policy(policy, spec, args)
            m = row[key]
            print(
                f"[{name}] {key:8s} built in {built_s:5.1f}s  params {m.trainable_params:,}  "
                f"chunk {_fmt(_ms(m.latency))} ms  train {m.train_error or _fmt(_ms(m.train))} ms",
                flush=True,
            )
            del policy
            free(args.device)
        rows.append(row)

    report = render(rows, args, command)
    print()
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a") as f:
            f.write("\n" + report)
        print(f"appended to {args.output}")
    return rows


if __name__ == "__main__":
    main()
