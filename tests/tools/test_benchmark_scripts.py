"""The GPU benchmark script keeps working where no GPU is: a CPU smoke run at the tiny preset, whose recipes
train what they say they train."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_gpu_benchmark_runs_on_cpu_and_its_recipes_freeze_what_they_say(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("bench_gpu", None)
    import bench_gpu

    output = tmp_path / "report.md"
    argv = ["--device", "cpu", "--preset", "tiny", "--dtype", "float32", "--loops", "eager", "--iters", "2"]
    loops, recipes = bench_gpu.main([*argv, "--train-iters", "1", "--train-warmup", "1", "--output", str(output)])
    assert [(r["loop"], r["steps"]) for r in loops] == [("eager", 10), ("eager", 1)]
    assert all(r["chunk_ms"] > 0 for r in loops)
    trained = {r["recipe"]: r["trained"] for r in recipes}
    assert all(isinstance(r["step_ms"], float) for r in recipes)
    assert trained["full"] > trained["frozen-video"] == trained["frozen-video-8bit"] > 0
    assert 0 < trained["lora"] < trained["full"]
    text = output.read_text()
    assert "| eager | 1 |" in text and "| frozen-video-8bit | 1 |" in text
    assert "python benchmarks/bench_gpu.py --device cpu" in text


def test_few_step_benchmark_times_each_step_count_against_the_builtin(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("bench_few_step", None)
    import bench_few_step

    medians = bench_few_step.main(["--num-layers", "1", "--batch-sizes", "1", "--iters", "1", "--warmup", "0"])
    assert set(medians[1]) == {"plugin 1", "plugin 2", "plugin 10", "built-in 10"}
    assert all(value > 0 for value in medians[1].values())
