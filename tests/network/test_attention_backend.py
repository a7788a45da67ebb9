"""Attention backends: SDPA by default, xformers where it runs, a clear fallback where it does not."""

import logging

import pytest
import torch

from lerobot_fastwam.network.attention import attend, resolve_backend

from ..helpers import make_policy


def test_sdpa_is_the_default():
    assert resolve_backend("sdpa", "cpu") == "sdpa"


def test_xformers_request_without_a_usable_kernel_falls_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_backend("xformers", "cpu") == "sdpa"
    assert "falling back to torch SDPA" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need a CUDA device")
def test_xformers_equals_sdpa():
    pytest.importorskip("xformers")
    assert resolve_backend("xformers", "cuda") == "xformers"
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 77, 4, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    torch.testing.assert_close(attend(q, k, v, "xformers"), attend(q, k, v, "sdpa"), rtol=2e-2, atol=2e-2)


def test_the_model_gets_its_resolved_backend_at_construction(caplog):
    with caplog.at_level(logging.WARNING):
        policy = make_policy(attention_backend="xformers")  # config.device is the CPU: no xformers kernel
    assert policy.model.mot.attention_backend == "sdpa"
    assert "falling back to torch SDPA" in caplog.text
