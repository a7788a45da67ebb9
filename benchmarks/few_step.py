"""Few-step actions on Meta-World: success at 1, 2, 4 and 10 action steps, with and without the few-step objective.

For every task x ``action_consistency_weight``: ``lerobot-fastwam demo`` trains (its recorded data shared by the
task's runs, under ``OUTPUT``) and evaluates at the checkpoint's 10 steps; then ``lerobot-eval`` evaluates the same
checkpoint with ``--policy.num_inference_steps=N`` on the same seeds. Every finished evaluation is kept in
``docs/few_step_runs/<task>_c<weight>_s<seed>_n<steps>.json`` and never run again (an interrupted sweep resumes; a
kept demo run is reused for the step counts still missing); the table of all kept runs goes to ``docs/results.md``
between the ``few-step`` markers.

    python benchmarks/few_step.py --tasks button-press-topdown-v3 --weights 0,1 --steps 1,2,4,10 \
        --output outputs/few_step [demo options]
"""

from __future__ import annotations

import argparse
import json
import platform
import types
from pathlib import Path

from results_block import write_block

from lerobot_fastwam.tools.demo import evaluate
from lerobot_fastwam.tools.demo import run as run_demo

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = DOCS / "results.md"
RUNS = DOCS / "few_step_runs"
BEGIN, END = "<!-- few-step:begin -->", "<!-- few-step:end -->"
TRAINED_STEPS = 10  # the demo trains and evaluates at the default num_inference_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="button-press-topdown-v3")
    parser.add_argument("--weights", default="0,1", help="action_consistency_weight values to compare")
    parser.add_argument("--steps", default="1,2,4,10", help="num_inference_steps to evaluate")
    parser.add_argument(
        "--expert", default="scripted", help="the demo's --expert (around-wall: the bimodal reach-wall-v3 task)"
    )
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--train-steps", type=int, default=1000, help="the demo's --steps (named in the runs if not 1000)"
    )
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("outputs/few_step"))
    args, demo_args = parser.parse_known_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        label = task if args.expert == "scripted" else f"{task}+{args.expert}"  # the table's task column
        for weight in (float(w) for w in args.weights.split(",")):
            run = f"c{weight:g}_s{args.seed}" + (f"_t{args.train_steps}" if args.train_steps != 1000 else "")
            name, out = f"{label}_{run}", args.output / label / run
            for steps in (int(n) for n in args.steps.split(",")):
                kept = RUNS / f"{name}_n{steps}.json"
                if kept.exists():
                    continue
                report_file = out / "report.json"
                if not report_file.exists():
                    run_demo(
                        [
                            *("--task", task, "--output", str(out), "--data", str(args.output / label / "data")),
                            f"--expert={args.expert}",
                            *("--seed", str(args.seed), "--eval-episodes", str(args.eval_episodes)),
                            f"--steps={args.train_steps}",
                            f"--policy.action_consistency_weight={weight:g}",
                            *demo_args,
                        ]
                    )
                report = json.loads(report_file.read_text())
                if steps == TRAINED_STEPS:
                    result = {k: report[k] for k in ("success_rate", "n_eval_episodes", "eval_seconds")}
                else:
                    eval_args = types.SimpleNamespace(
                        device="cpu", tasks=[task], episode_length=500, eval_episodes=args.eval_episodes, seed=args.seed
                    )
                    result = evaluate(
                        eval_args,
                        Path(report["checkpoint"]),
                        out / f"eval_n{steps}",
                        out / f"eval_n{steps}.log",
                        (f"--policy.num_inference_steps={steps}",),
                    )
                    result.pop("video_paths")
                kept.write_text(
                    json.dumps(
                        {
                            "task": label,
                            "action_consistency_weight": weight,
                            "seed": args.seed,
                            "train_steps": args.train_steps,
                            "num_inference_steps": steps,
                            **result,
                            "image_dependence": report["image_dependence"],
                            "train_seconds": report["train_seconds"],
                            "demo_command": report["command"],
                        },
                        indent=2,
                    )
                )
    write_table()


def write_table() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_s*_n*.json"))]  # not the multimodal runs
    groups: dict[tuple[str, float, int, int], dict[int, dict]] = {}
    for run in runs:
        key = (run["task"], run["action_consistency_weight"], run["seed"], run.get("train_steps", 1000))
        groups.setdefault(key, {})[run["num_inference_steps"]] = run
    all_steps = sorted({run["num_inference_steps"] for run in runs})
    lines = [
        "Command: `python benchmarks/few_step.py --tasks <task> --weights 0,1 --steps "
        + ",".join(map(str, all_steps))
        + "`; each row is one trained checkpoint (`lerobot-fastwam demo --steps <train steps>`), evaluated by "
        "`lerobot-eval`"
        " on the same 20 seeds at each step count; every evaluation is kept in `docs/few_step_runs/`.",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU cores, no GPU.",
        "",
        "| task | action_consistency_weight | seed | train steps | "
        + " | ".join(f"{n} step{'s' * (n > 1)}" for n in all_steps)
        + " | image dependence |",
        "|---|---|---|---|" + "---|" * len(all_steps) + "---|",
    ]
    for (task, weight, seed, train_steps), by_steps in sorted(groups.items()):
        cells = [f"{100 * by_steps[n]['success_rate']:.0f}%" if n in by_steps else "" for n in all_steps]
        dependence = next(iter(by_steps.values()))["image_dependence"]
        row = f"| {task} | {weight:g} | {seed} | {train_steps} | "
        lines.append(row + " | ".join(cells) + f" | {dependence:.2f} |")
    print(write_block(RESULTS, BEGIN, END, lines, "## Few-step actions: success at 1, 2, 4 and 10 steps"))


if __name__ == "__main__":
    main()
