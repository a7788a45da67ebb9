"""Peak host memory of building the paper-size (5B + 1B) policy from a checkpoint, against its weight bytes.

The policy is built with its parameters on the meta device and the checkpoint's tensors are assigned in
place, so loading should peak near the size of the weights themselves (no random initialisation first, no
second copy). The checkpoint is synthetic: random bf16 weights in the plugin's layout, small random frozen
encoders (``use_pretrained_wan=False``), written tensor by tensor.

    python benchmarks/load_memory.py --workdir /tmp/fastwam_8l --num-layers 8   # paper widths, 8 of 30 layers

The load runs in a fresh process; its peak resident set size (``ru_maxrss``) is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lerobot_fastwam.configuration_fastwam import FastWAMConfig, default_features  # noqa: E402
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy  # noqa: E402


def paper_config(num_layers: int) -> FastWAMConfig:
    """The paper's widths (3072 / 1024, 24 x 128 heads, FFN 14336 / 4096); ``num_layers`` 30 is the 5B model."""
    inputs, outputs = default_features(action_dim=7, state_dim=8, image_size=(224, 448), cameras=2)
    return FastWAMConfig(
        input_features=inputs,
        output_features=outputs,
        device="cpu",
        dtype="bfloat16",
        use_pretrained_wan=False,
        push_to_hub=False,
        num_layers=num_layers,
    )


def write_checkpoint(path: Path, num_layers: int) -> int:
    """Random bf16 weights for every tensor the policy expects; returns the network's weight bytes."""
    FastWAMPolicy._build_for_checkpoint = True  # parameters stay on the meta device
    try:
        policy = FastWAMPolicy(paper_config(num_layers))
    finally:
        FastWAMPolicy._build_for_checkpoint = False
    path.mkdir(parents=True, exist_ok=True)
    policy.config._save_pretrained(path)
    tensors, network_bytes = {}, 0
    generator = torch.Generator().manual_seed(0)
    for key, value in policy.state_dict().items():
        if key == "prompt_encoder.encoder.encoder.embed_tokens.weight":
            continue  # tied to prompt_encoder.encoder.shared.weight; stored once, as save_pretrained does
        if value.is_meta:
            value = (torch.randn(value.shape, generator=generator) * 0.02).to(torch.bfloat16)
            network_bytes += value.numel() * value.element_size()
        tensors[key] = value.contiguous()
    save_file(tensors, str(path / "model.safetensors"))
    return network_bytes


def _status_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def load_and_report(path: Path) -> dict:
    anon_before = _status_gib("RssAnon")
    start = time.perf_counter()
    policy = FastWAMPolicy.from_pretrained(path)
    seconds = time.perf_counter() - start
    network_bytes = sum(p.numel() * p.element_size() for p in policy.model.parameters())
    encoders = [policy.latent_encoder, policy.prompt_encoder]
    encoder_bytes = sum(p.numel() * p.element_size() for m in encoders for p in m.parameters())
    return {
        "load_s": round(seconds, 1),
        "frozen_encoders_gib": round(encoder_bytes / 2**30, 2),  # built at construction, not from the file
        "params": sum(p.numel() for p in policy.model.parameters()),
        "network_gib": round(network_bytes / 2**30, 2),
        "checkpoint_gib": round((path / "model.safetensors").stat().st_size / 2**30, 2),
        # Process memory that is not file pages (the checkpoint is memory-mapped while it is read, and those
        # clean pages are counted in RSS but reclaimable): its growth is what loading really allocates.
        "anon_growth_gib": round(_status_gib("RssAnon") - anon_before, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def builtin_construction_report(num_layers: int) -> dict:
    """LeRobot's built-in policy at the same size: construction alone (no checkpoint), bf16."""
    from lerobot_fastwam.testing.builtin_offline import build_builtin_policy  # noqa: PLC0415

    anon_before = _status_gib("RssAnon")
    start = time.perf_counter()
    policy = build_builtin_policy(
        7,
        8,
        (224, 448),
        2,
        num_layers=num_layers,
        num_heads=24,
        head_dim=128,
        video_ffn_dim=14336,
        action_hidden_dim=1024,
        action_ffn_dim=4096,
        text_dim=4096,
        freq_dim=256,
        dtype="bfloat16",
        text_max_length=128,
        seed=None,
    )
    params = sum(p.numel() for p in policy.get_optim_params())
    return {
        "construct_s": round(time.perf_counter() - start, 1),
        "trainable_params": params,
        "network_gib_bf16": round(params * 2 / 2**30, 2),
        "anon_growth_gib": round(_status_gib("RssAnon") - anon_before, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument(
        "--num-layers",
        type=int,
        default=30,
        help="30: the full model (~12 GB; safetensors' writer needs ~2x that in RAM)",
    )
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="also construct LeRobot's built-in policy at the same size (fresh process)",
    )
    parser.add_argument("--load-only", action="store_true", help="(internal) load and print JSON")
    parser.add_argument("--builtin-only", action="store_true", help="(internal) build the built-in, print JSON")
    args = parser.parse_args()
    if args.load_only:
        print(json.dumps(load_and_report(args.workdir)))
        return
    if args.builtin_only:
        print(json.dumps(builtin_construction_report(args.num_layers)))
        return
    if not (args.workdir / "model.safetensors").exists():
        start = time.perf_counter()
        size = write_checkpoint(args.workdir, args.num_layers)
        print(f"wrote {size / 2**30:.2f} GiB of bf16 network weights in {time.perf_counter() - start:.0f} s")
    base = [sys.executable, __file__, "--workdir", str(args.workdir), "--num-layers", str(args.num_layers)]
    out = subprocess.run([*base, "--load-only"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print("plugin from_pretrained:", json.dumps(result))
    network_growth = result["anon_growth_gib"] - result["frozen_encoders_gib"]
    print(f"  allocated for the network / checkpoint size: {network_growth / result['checkpoint_gib']:.2f}x")
    if args.builtin:
        out = subprocess.run([*base, "--builtin-only"], capture_output=True, text=True, check=True)
        built = json.loads(out.stdout.strip().splitlines()[-1])
        print("built-in construction:", json.dumps(built))
        print(f"  peak RSS / its bf16 weights: {built['peak_rss_gib'] / built['network_gib_bf16']:.2f}x")


if __name__ == "__main__":
    main()
