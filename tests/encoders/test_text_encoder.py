"""The offline text encoder (random frozen umT5, in-memory tokenizer) tells instructions apart."""

import torch

from lerobot_fastwam.configuration_fastwam import FastWAMConfig
from lerobot_fastwam.encoders.prompt_encoder import build_prompt_encoder
from lerobot_fastwam.sim.metaworld import task_descriptions


def test_every_meta_world_instruction_gets_its_own_context():
    config = FastWAMConfig(preset="cpu")
    encoder = build_prompt_encoder(config)
    tasks = sorted(set(task_descriptions().values()))
    contexts = encoder(tasks)  # [tasks, L, text_dim]; no instruction is cut (text_max_length suffices)
    assert contexts.shape == (len(tasks), config.text_max_length, config.text_dim)
    flat = contexts.flatten(1)
    distance = torch.cdist(flat, flat)
    off_diagonal = distance[~torch.eye(len(tasks), dtype=torch.bool)]
    assert off_diagonal.min() > 0.1 * flat.norm(dim=1).mean()  # clearly apart, not rounding noise
    torch.testing.assert_close(encoder(tasks[:1]), build_prompt_encoder(config)(tasks[:1]))  # frozen, seeded
