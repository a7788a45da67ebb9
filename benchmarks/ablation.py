"""The paper's co-training ablation at toy scale: video co-training (``video_loss_weight`` 1) against none (0).

Runs ``lerobot-fastwam demo`` for every task x seed x weight (the recorded data of a task is shared by its
runs, under ``OUTPUT``), keeps every run's ``report.json`` in ``docs/ablation_runs/<task>_w<weight>_s<seed>.json``
and writes the table of all kept runs to ``docs/results.md`` (between the ``ablation`` markers).

    python benchmarks/ablation.py --tasks button-press-topdown-v3,drawer-close-v3 --seeds 1000,1001,1002 \
        --output outputs/ablation [demo options, e.g. --steps 1000]

A run already kept in ``docs/ablation_runs`` is not run again, so an interrupted sweep resumes, also in
another checkout: add seeds with ``--seeds`` and the table grows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from results_block import write_block

from lerobot_fastwam.tools.demo import run as run_demo

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = DOCS / "results.md"
RUNS = DOCS / "ablation_runs"
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="handle-press-v3,button-press-v3")
    parser.add_argument("--seeds", default="1000,1001,1002")
    parser.add_argument("--weights", default="1,0", help="video_loss_weight values to compare")
    parser.add_argument("--output", type=Path, default=Path("outputs/ablation"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args, demo_args = parser.parse_known_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.weights.split(",")]

    tasks = args.tasks.split(",")
    reports: dict[tuple[str, float], list[dict]] = {(task, w): [] for w in weights for task in tasks}
    RUNS.mkdir(parents=True, exist_ok=True)
    # Seeds outermost: an interrupted sweep still has every task and weight at the seeds it finished.
    for seed in seeds:
        for weight in weights:
            for task in tasks:
                kept = RUNS / f"{task}_w{weight:g}_s{seed}.json"
                if not kept.exists():
                    out = args.output / task / f"w{weight:g}_s{seed}"
                    report = run_demo(
                        [
                            "--task",
                            task,
                            "--output",
                            str(out),
                            "--data",
                            str(args.output / task / "data"),
                            "--seed",
                            str(seed),
                            "--video-loss-weight",
                            str(weight),
                            *demo_args,
                        ]
                    )
                    kept.write_text(json.dumps(report, indent=2))
    for kept in sorted(RUNS.glob("*.json")):  # every kept run, this sweep's and earlier ones
        report = json.loads(kept.read_text())
        key = (report["tasks"][0], float(report["video_loss_weight"]))
        reports.setdefault(key, []).append(report)
    write_table(args, reports, demo_args)


def _mean_spread(values: list[float], fmt: str) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(spread, fmt)}"


def write_table(args, reports, demo_args) -> None:
    lines = [
        f"Command: `python benchmarks/ablation.py --tasks {args.tasks} --weights {args.weights} --seeds ...`"
        + (f" with `{' '.join(demo_args)}`" if demo_args else "")
        + "; every run kept in `docs/ablation_runs/` is in the table, one success value per seed under 'per seed'.",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU cores, no GPU.",
        "",
        "| task | video_loss_weight | seeds | success (mean ± sd) | per seed | image dependence | chunk MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, weight), runs in reports.items():
        if not runs:
            continue
        success = [r["success_rate"] for r in runs]
        lines.append(
            f"| {task} | {weight:g} | {len(runs)} | {_mean_spread([100 * s for s in success], '.0f')} % | "
            f"{', '.join(f'{100 * s:.0f}' for s in success)} | "
            f"{_mean_spread([r['image_dependence'] for r in runs], '.2f')} | "
            f"{_mean_spread([r['probes']['policy_mse'] for r in runs], '.4f')} |"
        )
    print(write_block(args.results, BEGIN, END, lines, "## Video co-training vs none"))


if __name__ == "__main__":
    main()
