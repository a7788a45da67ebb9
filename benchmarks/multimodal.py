"""The multimodal check: does one step keep two demonstrated modes apart, half the time each?

Trains a small Fast-WAM on one observation whose demonstrated chunks go +1 or -1 on the first action axis, 50/50
(``lerobot_fastwam.testing.bimodal``), with plain flow matching (``action_consistency_weight`` 0) and with the
few-step objective, then samples 256 chunks at 1, 2, 4 and 10 steps and reports the fraction within 0.2 (RMS) of
a mode and the fraction nearer +1. Each finished run is kept in ``docs/few_step_runs/multimodal_c<weight>.json``;
the table goes to ``docs/results.md`` between the ``multimodal`` markers.

    python benchmarks/multimodal.py --weights 0,4 --train-steps 1600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from results_block import write_block

from lerobot_fastwam import FastWAMConfig, FastWAMPolicy, default_features
from lerobot_fastwam.testing.bimodal import mode_statistics, sample_chunks, train_bimodal

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = DOCS / "results.md"
RUNS = DOCS / "few_step_runs"
BEGIN, END = "<!-- multimodal:begin -->", "<!-- multimodal:end -->"
STEPS = (1, 2, 4, 10)
# The tiny preset with a wider action expert: 16-step chunks of 4 actions, no state, no video loss (the check is
# about the action sampler; the clean first frame is still encoded and read).
MODEL = dict(
    preset="tiny",
    chunk_size=16,
    n_action_steps=8,
    action_hidden_dim=64,
    action_ffn_dim=128,
    video_loss_weight=0.0,
    device="cpu",
)


def build(weight: float) -> FastWAMPolicy:
    inputs, outputs = default_features(4, None, (32, 64))
    torch.manual_seed(0)
    config = FastWAMConfig(
        input_features=inputs, output_features=outputs, image_size=(32, 64), action_consistency_weight=weight, **MODEL
    )
    return FastWAMPolicy(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="0,4", help="action_consistency_weight values")
    parser.add_argument("--train-steps", type=int, default=1600)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for weight in (float(w) for w in args.weights.split(",")):
        kept = RUNS / f"multimodal_c{weight:g}.json"
        if kept.exists():
            continue
        policy = build(weight)
        start = time.time()
        logs = train_bimodal(policy, args.train_steps)
        run = {
            "action_consistency_weight": weight,
            "train_steps": args.train_steps,
            "train_seconds": round(time.time() - start, 1),
            "final_loss_action": sum(entry["loss_action"] for entry in logs[-50:]) / 50,
            "by_steps": {n: mode_statistics(sample_chunks(policy, n)) for n in STEPS},
        }
        kept.write_text(json.dumps(run, indent=2))
    write_table()


def write_table() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("multimodal_c*.json"))]
    lines = [
        "Command: `python benchmarks/multimodal.py --weights 0,4 --train-steps 1600` (CPU, one thread); 256 chunks "
        "per row from fresh noise; 'on a mode': within 0.2 RMS of +1 or -1; '+1 share': nearer +1 (0.5 is balanced).",
        "",
        "| action_consistency_weight | train steps | "
        + " | ".join(f"{n} step{'s' * (n > 1)}: on a mode, +1 share" for n in STEPS)
        + " |",
        "|---|---|" + "---|" * len(STEPS),
    ]
    for run in runs:
        cells = [
            f"{100 * s['near_mode']:.0f}%, {s['plus_fraction']:.2f}" for s in (run["by_steps"][str(n)] for n in STEPS)
        ]
        lines.append(f"| {run['action_consistency_weight']:g} | {run['train_steps']} | " + " | ".join(cells) + " |")
    print(write_block(RESULTS, BEGIN, END, lines, "## Few-step actions: the multimodal check"))


if __name__ == "__main__":
    main()
