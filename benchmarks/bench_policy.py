"""Side-by-side speed of the lerobot_fastwam plugin and LeRobot's built-in ``lerobot.policies.fastwam``.

Both policies are built with random weights at the same architecture (same layers, heads, head dim, FFN
widths, text/frequency dims, same random VAE and umT5 sizes; the "trainable params" column shows the counts
match) and are fed the same LeRobot-style batch, as a policy receives it after its preprocessor: cameras
``observation.images.cam<i>`` as float in [0, 1], ``observation.state``, ``task`` strings; for training
9 frames per camera (``[B, 9, 3, H, W]``), ``*_is_pad`` masks, ``action`` ``[B, 32, 7]``, ``action_is_pad``.
For each config it measures

- one action chunk: ``predict_action_chunk`` at batch 1 through each policy's cached path (the clean first
  frame is prefilled once, then only the action expert runs each of the 10 denoising steps), median of
  ``--iters`` calls after ``--warmup`` calls;
- one training step: ``forward`` + ``backward`` + grad-norm clip (1.0, as ``lerobot-train`` does) + each
  policy's own optimizer preset (AdamW)
  (lr 1e-4, betas (0.9, 0.95), wd 0.01) step, median of ``--train-iters`` steps after ``--train-warmup``;

and the ratio plugin / built-in (below 1: the plugin is faster). On CPU both policies stay in memory and
their calls alternate, so a change in machine load hits both alike; on CUDA (the 5B models) each policy is
built, measured and freed in turn, and a training step that runs out of memory is reported as "OOM".

Each call is the policy's own full ``predict_action_chunk`` / ``forward``, VAE and prompt handling included:
the plugin serves a repeated task string from its prompt-embedding cache, the built-in runs its text encoder
on every call. Those are the policies' own behaviours, so they are timed as they are.

CPU:
    HF_HUB_OFFLINE=1 python benchmarks/bench_policy.py --config tiny small --output docs/benchmarks.md

GPU, paper-size model (random weights: 5B video expert + 1B action expert, small random VAE / umT5):
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

import torch  # noqa: E402

import lerobot_fastwam  # noqa: E402,F401  (registers the plugin; the built-in stays importable directly)
from lerobot_fastwam.configuration_fastwam import PRESETS, FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402
from lerobot_fastwam.testing.builtin_offline import build_builtin_policy  # noqa: E402

ACTION_DIM = 7
STATE_DIM = 8
CHUNK_SIZE = 32
ACTION_LOOPS = {  # --action-loop -> how the report names it
    "eager": "eager",
    "compiled": "compiled (torch.compile, compile_action_step=true, cuda_graph=false)",
    "cuda-graph": "compiled and replayed as one CUDA graph (compile_action_step=true, cuda_graph=true)",
}
MODEL_VIDEO_FRAMES = 9  # frames the video expert sees (1 + 2 * 4 -> 3 latent frames)
VIDEO_FRAME_STRIDE = 4  # dataset frames between two model frames
TASKS = ("pick up the red block and put it in the bowl", "open the top drawer")

ARCH_FIELDS = (
    "num_layers",
    "num_heads",
    "head_dim",
    "video_ffn_dim",
    "action_hidden_dim",
    "action_ffn_dim",
    "text_dim",
    "freq_dim",
    "image_size",
    "text_max_length",
    "random_vae_base_dim",
    "random_text_encoder_layers",
)
POLICIES = ("plugin", "builtin")


# ------------------------------------------------------------------------------------------------------
# Configs
CONFIGS = {"tiny": "tiny", "small": "small", "5b": "wan2.2-ti2v-5b"}  # benchmark name -> plugin preset


def arch_spec(name: str) -> dict[str, Any]:
    """Architecture numbers of a config, read from the plugin's presets (``5b``: the paper's model)."""
    preset = PRESETS[CONFIGS[name]]
    spec = {key: preset[key] for key in ARCH_FIELDS}
    spec["image_size"] = tuple(spec["image_size"])
    return spec


def build_plugin(
    name: str, spec: dict, cameras: int, device: str, dtype: str, steps: int, action_loop: str = "eager", **overrides
) -> FastWAMPolicy:
    """The plugin at ``spec`` (its preset's numbers, ``num_layers`` as the spec says); ``overrides``: other fields."""
    inputs, outputs = default_features(ACTION_DIM, STATE_DIM, spec["image_size"], cameras)
    config = FastWAMConfig(
        preset=CONFIGS[name],
        num_layers=spec["num_layers"],
        input_features=inputs,
        output_features=outputs,
        device=device,
        dtype=dtype,
        chunk_size=CHUNK_SIZE,
        num_video_frames=MODEL_VIDEO_FRAMES,
        video_frame_stride=VIDEO_FRAME_STRIDE,
        num_inference_steps=steps,
        use_pretrained_wan=False,  # random weights and random frozen encoders: no download
        compile_action_step=action_loop in ("compiled", "cuda-graph"),
        cuda_graph=action_loop == "cuda-graph",
        **overrides,
    )
    for key, value in spec.items():
        got = tuple(getattr(config, key)) if key == "image_size" else getattr(config, key)
        if got != value:
            raise RuntimeError(f"plugin config {key}={got!r}, expected {value!r}")
    policy = FastWAMPolicy(config).to(device)
    if dtype != "float32":
        # A fresh policy keeps fp32 master weights (it is built for training), while a policy loaded from a
        # checkpoint, the deployment path, holds its network in the compute dtype
        # (FastWAMPolicy._load_as_safetensor). Time the action chunk like the latter; the training step's
        # get_optim_params() turns the trainable weights back into fp32 masters, as in lerobot-train.
        compute = getattr(torch, dtype)
        for param in policy.model.parameters():
            param.data = param.data.to(compute)
    return policy


def build_builtin(spec: dict, cameras: int, device: str, dtype: str, steps: int):
    return build_builtin_policy(
        ACTION_DIM,
        STATE_DIM,
        spec["image_size"],
        cameras,
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        head_dim=spec["head_dim"],
        video_ffn_dim=spec["video_ffn_dim"],
        action_hidden_dim=spec["action_hidden_dim"],
        action_ffn_dim=spec["action_ffn_dim"],
        text_dim=spec["text_dim"],
        freq_dim=spec["freq_dim"],
        device=device,
        dtype=dtype,
        chunk_size=CHUNK_SIZE,
        model_video_frames=MODEL_VIDEO_FRAMES,
        video_frame_stride=VIDEO_FRAME_STRIDE,
        text_max_length=spec["text_max_length"],
        vae_base_dim=spec["random_vae_base_dim"],
        text_encoder_layers=spec["random_text_encoder_layers"],
        num_inference_steps=steps,
        seed=None,
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


def time_calls(fns: dict[str, Callable[[], Any]], warmup: int, iters: int, device: str) -> dict[str, list[float]]:
    """Seconds per call of each function, ``iters`` timed calls after ``warmup`` untimed ones.

    With several functions the calls alternate (and the order flips every round), so a change in machine
    load during the run hits every function alike instead of biasing whichever ran last.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else names[::-1]:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


@dataclasses.dataclass
class Measurement:
    trainable_params: int = 0
    build_s: float = 0.0
    latency: list[float] | None = None  # seconds per action chunk
    train: list[float] | None = None  # seconds per training step
    train_error: str | None = None
    peak_mem_gib: float | None = None


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def chunk_fn(policy, obs: dict) -> Callable[[], Any]:
    policy.reset()
    return lambda: policy.predict_action_chunk(obs)


class TrainStep:
    """forward + backward + grad-norm clip + AdamW step, as one ``lerobot-train`` update does."""

    def __init__(self, policy, batch: dict):
        self.policy, self.batch = policy, batch
        self.params = list(policy.get_optim_params())
        # Each policy's own optimizer preset, as lerobot-train builds it (LeRobot's AdamW for the built-in, the
        # same update with PyTorch's fused kernel for the plugin).
        self.optimizer = policy.config.get_optimizer_preset().build(self.params)
        policy.train()  # once, as lerobot-train does; nothing switches it back during the timed steps

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.policy.forward(self.batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()


def measure(policies: dict[str, Any], spec: dict, args: argparse.Namespace) -> dict[str, Measurement]:
    """Action-chunk latency, then training-step time, of the given policies (interleaved if several)."""
    device = args.device
    results = {name: Measurement() for name in policies}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    obs = inference_batch(spec, args.cameras, device, args.seed)
    latency = time_calls({n: chunk_fn(p, obs) for n, p in policies.items()}, args.warmup, args.iters, device)
    for name, times in latency.items():
        results[name].latency = times
    if args.profile:
        for policy in policies.values():
            profile_chunk(policy, obs, device)

    if args.train_iters > 0:
        batch = training_batch(spec, args.cameras, args.train_batch, device, args.seed)
        steps: dict[str, TrainStep] = {}
        try:
            steps = {name: TrainStep(policy, batch) for name, policy in policies.items()}
            train = time_calls(steps, args.train_warmup, args.train_iters, device)
            for name, times in train.items():
                results[name].train = times
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            for name in policies:
                results[name].train_error = "OOM"
        finally:
            for step in steps.values():
                step.close()
            steps.clear()
            free(device)
    for name, policy in policies.items():
        results[name].trainable_params = sum(p.numel() for p in policy.get_optim_params())
    if device.startswith("cuda") and len(policies) == 1:
        results[next(iter(policies))].peak_mem_gib = torch.cuda.max_memory_allocated() / 2**30
    return results


def profile_chunk(policy, obs: dict, device: str, rows: int = 20) -> None:
    """Print the ops that take the time in one action chunk (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        policy.predict_action_chunk(obs)
        _sync(device)
    sort = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(f"\n--- profile: {type(policy).__module__} predict_action_chunk ---")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = arch_spec(name)
    builders = {
        "plugin": lambda: build_plugin(name, spec, args.cameras, args.device, args.dtype, args.steps, args.action_loop),
        "builtin": lambda: build_builtin(spec, args.cameras, args.device, args.dtype, args.steps),
    }

    def build(key: str):
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        policy = builders[key]()
        return policy, time.perf_counter() - start

    row: dict[str, Any] = {
        "config": name,
        "image_size": spec["image_size"],
        "text_max_length": spec["text_max_length"],
    }
    if args.interleave:
        built = {key: build(key) for key in POLICIES}
        results = measure({key: policy for key, (policy, _) in built.items()}, spec, args)
        for key in POLICIES:
            results[key].build_s = built[key][1]
        row.update(results)
        del built, results
        free(args.device)
    else:  # one policy in memory at a time (the 5B models on one GPU)
        for key in POLICIES:
            policy, build_s = build(key)
            row[key] = measure({key: policy}, spec, args)[key]
            row[key].build_s = build_s
            del policy
            free(args.device)
    for key in POLICIES:
        m = row[key]
        print(
            f"[{name}] {key:8s} built in {m.build_s:5.1f}s  params {m.trainable_params:,}  "
            f"chunk {_fmt(_ms(m.latency))} ms  train {m.train_error or _fmt(_ms(m.train))} ms",
            flush=True,
        )
    return row


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


def _train_cell(m: Measurement) -> tuple[str, float | None]:
    if m.train_error:
        return m.train_error, None
    value = _ms(m.train)
    return _fmt(value), value


def _spread(values: list[float] | None, error: str | None = None) -> str:
    if error:
        return error
    if not values:
        return "-"
    return " / ".join(f"{v * 1e3:,.1f}" for v in (min(values), statistics.median(values), max(values)))


def render(rows: list[dict], args: argparse.Namespace, command: str, load_before: float | None = None) -> str:
    mode = (
        "interleaved (both policies in memory, calls alternate)"
        if args.interleave
        else ("sequential (one policy in memory at a time)")
    )
    load = "" if load_before is None else f"; 1-min load average before the run {load_before:.2f}"
    lines = [
        f"### Fast-WAM plugin vs built-in: {', '.join(args.config)} "
        f"({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- command: `{command}`",
        f"- device: {environment(args)}{load}",
        f"- settings: {args.dtype}; plugin action step "
        f"{ACTION_LOOPS[args.action_loop]}; "
        f"{args.cameras} camera(s); state {STATE_DIM}, action {ACTION_DIM}, "
        f"chunk {CHUNK_SIZE}, {MODEL_VIDEO_FRAMES} video frames; action chunk = `predict_action_chunk` at "
        f"batch 1, {args.steps} denoising steps, median of {args.iters} after {args.warmup} warm-up; "
        f"training step = forward + backward + grad clip + AdamW step at batch {args.train_batch}, "
        f"median of {args.train_iters} after {args.train_warmup} warm-up; {mode}",
        "",
        "| config | image (HxW) | text tokens | trainable params | chunk plugin (ms) | chunk built-in (ms) "
        "| chunk ratio | train step plugin (ms) | train step built-in (ms) | train ratio "
        "| train plugin (samples/s) | train built-in (samples/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        plug, built = row["plugin"], row["builtin"]
        params = (
            f"{plug.trainable_params:,}"
            if plug.trainable_params == built.trainable_params
            else f"{plug.trainable_params:,} vs {built.trainable_params:,} (MISMATCH)"
        )
        lat_p, lat_b = _ms(plug.latency), _ms(built.latency)
        (tr_p_txt, tr_p), (tr_b_txt, tr_b) = _train_cell(plug), _train_cell(built)
        sps_p = None if tr_p is None else args.train_batch / (tr_p / 1e3)
        sps_b = None if tr_b is None else args.train_batch / (tr_b / 1e3)
        cells = [
            row["config"],
            "x".join(map(str, row["image_size"])),
            str(row["text_max_length"]),
            params,
            _fmt(lat_p),
            _fmt(lat_b),
            _ratio(lat_p, lat_b),
            tr_p_txt,
            tr_b_txt,
            _ratio(tr_p, tr_b),
            _fmt(sps_p, 2),
            _fmt(sps_b, 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    gpu = any(r[p].peak_mem_gib is not None for r in rows for p in POLICIES)
    lines += [
        "",
        "Ratio = plugin / built-in (below 1: the plugin is faster). Spread (min / median / max, ms):",
        "",
        "| config | policy | action chunk | training step |" + (" peak GPU mem (GiB) |" if gpu else ""),
        "|---|---|---|---|" + ("---:|" if gpu else ""),
    ]
    for row in rows:
        for key, label in (("plugin", "plugin"), ("builtin", "built-in")):
            m: Measurement = row[key]
            line = f"| {row['config']} | {label} | {_spread(m.latency)} | {_spread(m.train, m.train_error)} |"
            if gpu:
                line += f" {_fmt(m.peak_mem_gib, 1)} |"
            lines.append(line)
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        nargs="+",
        default=["tiny", "small"],
        choices=["tiny", "small", "5b"],
        help="architecture sizes: the plugin's presets, or 5b (paper size; needs a GPU)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cameras", type=int, default=2, choices=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per action chunk")
    parser.add_argument("--warmup", type=int, default=5, help="untimed action chunks first")
    parser.add_argument("--iters", type=int, default=50, help="timed action chunks")
    parser.add_argument("--train-batch", type=int, default=2, help="training batch size")
    parser.add_argument("--train-warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--train-iters", type=int, default=20, help="timed training steps (0: skip training)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep both policies in memory and alternate their calls (default: on for CPU, "
        "off for CUDA, where the two 5B models would not fit side by side for training)",
    )
    parser.add_argument(
        "--action-loop",
        default="eager",
        choices=list(ACTION_LOOPS),
        help="the plugin's action loop: eager, compiled (compile_action_step) or cuda-graph (compiled and replayed "
        "as one CUDA graph, cuda_graph; CUDA only). The warm-up chunks include compilation and capture.",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a torch.profiler table of one action chunk of each policy"
    )
    parser.add_argument("--output", type=Path, default=None, help="append the markdown report to this file")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device} requested but CUDA is not available on this machine.")
    elif args.device != "cpu":
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}.")
    if args.action_loop == "cuda-graph" and not args.device.startswith("cuda"):
        parser.error("--action-loop cuda-graph needs --device cuda.")
    if "5b" in args.config and not args.device.startswith("cuda"):
        parser.error("--config 5b builds two ~6 B-parameter models; run it with --device cuda.")
    if args.interleave is None:
        args.interleave = not args.device.startswith("cuda")
    if args.device == "cpu" and args.dtype != "float32":
        # The built-in keeps its timestep embedding in fp32 through torch.autocast("cuda", float32), which is
        # disabled on CPU, so its bf16/fp16 forward fails there (mat1 and mat2 dtype mismatch).
        parser.error("--dtype bfloat16/float16 needs --device cuda (the built-in's is CUDA-only).")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_policy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*Disabling autocast.*")
    warnings.filterwarnings("ignore", message=".*torch_dtype.*from_pretrained.*")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    rows = [run_config(name, args) for name in args.config]

    report = render(rows, args, command, load_before)
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
