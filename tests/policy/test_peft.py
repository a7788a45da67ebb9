"""LoRA through LeRobot's own PEFT path (`lerobot-train --peft.method_type=LORA`) with the plugin's defaults."""

from dataclasses import asdict

import pytest
import torch

from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

from ..helpers import make_policy, observation, training_batch

peft = pytest.importorskip("peft")


def test_lora_defaults_train_only_adapters_and_the_robot_projections(tmp_path):
    from lerobot.configs.default import PeftConfig

    make_policy(seed=1).save_pretrained(tmp_path)
    base = FastWAMPolicy.from_pretrained(tmp_path)
    base.config.pretrained_path = tmp_path
    batch = observation(base.config, batch_size=1)
    before = base.predict_action_chunk(batch)
    wrapped = base.wrap_with_peft(peft_cli_overrides=asdict(PeftConfig(method_type="LORA", r=4)))

    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    assert any(".mot.video.blocks.0.attn1.to_q.lora_A" in n for n in names)
    assert any(".mot.action.blocks.1.ffn.net.2.lora_B" in n for n in names)
    assert any("state_encoder.modules_to_save" in n for n in names)
    torch.testing.assert_close(wrapped.predict_action_chunk(batch), before)  # LoRA starts as the identity

    wrapped.train()
    loss, _ = wrapped.forward(training_batch(base.config))
    loss.backward()
    frozen = [n for n, p in wrapped.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen
    assert all(p.grad is not None for n, p in wrapped.named_parameters() if "lora_B" in n)
