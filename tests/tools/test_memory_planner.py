"""``lerobot-fastwam memory``: the plan against the network it plans for, and against real CPU training steps."""

import re

import pytest
import torch

from lerobot_fastwam.encoders.latent_encoder import build_latent_encoder
from lerobot_fastwam.encoders.prompt_encoder import build_prompt_encoder
from lerobot_fastwam.modeling_fastwam import FastWAMPolicy
from lerobot_fastwam.tools.cli import main
from lerobot_fastwam.tools.memory import plan as mp

# The paper's widths (video 3072 / FFN 14336, action 1024 / 4096, 24 x 128 heads) with one of the 30 layers, in
# fp32 on the CPU, at a 64x128 image (8 tokens per latent frame) so that a real step takes seconds.
PAPER_WIDTH_ONE_LAYER = {"num_layers": 1, "dtype": "float32", "image_size": (64, 128)}


@pytest.mark.parametrize(
    ("preset", "recipe", "overrides"),
    [
        ("tiny", "full", {}),
        ("small", "full", {}),
        ("small", "frozen-video", {"gradient_checkpointing": True}),
        ("small", "frozen-video", {"optimizer_type": "adamw_8bit"}),  # bitsandbytes' state, laid out by the plan
        ("wan2.2-ti2v-5b", "lora", PAPER_WIDTH_ONE_LAYER),
    ],
)
def test_plan_matches_a_real_cpu_step(preset, recipe, overrides):
    """The traced plan (fake tensors) against the allocator's own record of the same step run for real, at batch
    1 and 2. In these configs the activations are most of the step's peak, so a wrong activation count fails the
    peak check too."""
    config = mp.planning_config(preset, **overrides)
    plan = mp.plan_training(config, recipe, batch_size=2, device="cpu")
    one, two = (mp.measure_training_step(config, recipe, b) for b in (1, 2))
    assert plan.resident_bytes == two.resident
    assert plan.activations_per_sample == pytest.approx(two.activations - one.activations, rel=0.15)
    assert plan.activations == pytest.approx(two.activations, rel=0.15)
    for real, trace in ((one, plan.traces[1]), (two, plan.traces[2])):
        assert trace.peak == pytest.approx(real.step_peak, rel=0.15)
    assert plan.total == pytest.approx(two.resident + two.step_peak, rel=0.15)


def test_paper_model_counts_by_recipe():
    """Weights counted on the meta-built paper model: the count LeRobot's built-in fastwam reports at the same
    size (docs/benchmarks.md), and the frozen video expert of ``--policy.freeze_video_expert``."""
    config = mp.planning_config("wan2.2-ti2v-5b")
    full = mp.build_network(config, "full")
    assert sum(p.numel() for p in full.parameters() if p.requires_grad) == 6_020_710_599
    frozen = mp.build_network(config, "frozen-video")
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.mot.action.", "model.state_encoder.")) for n in trainable)
    expected = sum(p.numel() for p in [*frozen.model.action.parameters(), *frozen.model.state_encoder.parameters()])
    assert sum(p.numel() for p in frozen.parameters() if p.requires_grad) == expected


def test_lora_trains_what_the_default_targets_name():
    """peft's count (on the meta device) against r * (in + out) for every block Linear the plugin's default target
    pattern names, plus the fully trained robot projections."""
    config = mp.planning_config("small")
    rank = 8
    targets = FastWAMPolicy._get_default_peft_targets(None)
    base = mp.build_network(config, "full")
    linears = [m for n, m in base.named_modules() if re.fullmatch(targets["target_modules"], n)]
    assert linears and all(isinstance(m, torch.nn.Linear) for m in linears)
    expected = sum(rank * (m.in_features + m.out_features) for m in linears)
    expected += sum(p.numel() for name in targets["modules_to_save"] for p in base.get_submodule(name).parameters())
    lora = mp.build_network(config, "lora", lora_rank=rank)
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == expected


def test_frozen_encoders_of_the_paper_model():
    codec, text, dtype = mp.inference_encoders(mp.planning_config("wan2.2-ti2v-5b"))
    assert dtype == torch.bfloat16
    assert sum(p.numel() for p in codec.parameters()) == pytest.approx(0.70e9, rel=0.01)  # reference section 2
    assert sum(p.numel() for p in text.parameters()) == pytest.approx(5.68e9, rel=0.01)  # umT5-XXL's encoder


def test_inference_plan_counts_the_encoders_the_policy_builds():
    config = mp.planning_config("tiny")
    plan = mp.plan_inference(config, device="cpu")
    assert plan.codec_parameters == sum(p.numel() for p in build_latent_encoder(config).parameters())
    assert plan.text_parameters == sum(p.numel() for p in build_prompt_encoder(config).parameters())
    assert plan.parameter_bytes == 4 * plan.parameters  # fp32 preset
    assert 0 < plan.activations < plan.total


def test_largest_batch_is_where_the_traced_peak_crosses_the_capacity():
    config = mp.planning_config("tiny")
    three = mp.plan_training(config, "lora", batch_size=3, device="cpu")
    plan = mp.plan_training(config, "lora", capacity=three.total, device="cpu")
    assert plan.max_batch_size == 3


@pytest.mark.parametrize("guess", [1, 3, 37, 38, 500, 5000])
def test_largest_fitting_search(guess):
    assert mp._largest_fitting(lambda b: b <= 37, guess, limit=4096) == 37
    assert mp._largest_fitting(lambda b: False, guess, limit=4096) == 0
    assert mp._largest_fitting(lambda b: True, guess, limit=100) == 100


def test_cuda_plan_adds_the_context_and_rounds_allocations():
    plan = mp.plan_training(mp.planning_config("tiny"), "full", device="cuda")
    assert plan.context_bytes == mp.CUDA_CONTEXT_BYTES
    assert plan.parameter_bytes % mp.CUDA_BLOCK_BYTES == 0 and plan.parameter_bytes > 4 * plan.parameters


def test_bad_input_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        mp.planning_config("huge")
    with pytest.raises(ValueError, match="Unknown recipe 'qlora'"):
        mp.build_network(mp.planning_config("tiny"), "qlora")
    with pytest.raises(ValueError, match="device must be"):
        mp.plan_training(mp.planning_config("tiny"), "full", device="tpu")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--recipe", "qlora"], "invalid choice: 'qlora'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--gpu-memory-gb", "-1"], "--gpu-memory-gb must be positive"),
    ],
)
def test_cli_refuses_bad_options(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["memory", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_prints_training_and_inference_tables(capsys):
    main(["memory", "--preset", "tiny", "--recipe", "frozen-video", "--batch-size", "2", "--gpu-memory-gb", "0.5"])
    out = capsys.readouterr().out
    assert "recipe `frozen-video` (--policy.freeze_video_expert=true)" in out
    assert "| activations (alive when the forward ends) |" in out
    assert "Largest batch that fits 512.00 MiB: **none**" in out  # the CUDA context alone fills it
    assert "#### Inference" in out and "Batch 1 fits 512.00 MiB: **no" in out
