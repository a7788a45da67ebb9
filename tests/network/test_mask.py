"""The attention masks: computed mask-free, identical to their dense references, and leak-free."""

import pytest
import torch
import torch.nn.functional as F

from lerobot_fastwam.network.attention import MASKS, dense_reference_mask, mot_attention

from ..helpers import make_policy


@pytest.mark.parametrize("mask_name", MASKS)
def test_mask_free_attention_equals_dense_masked_attention(mask_name):
    g = torch.Generator().manual_seed(0)
    n0, nf, na, heads, dim = 5, 10, 7, 3, 8
    lv = (n0 + nf) * (2 if mask_name == "idm" else 1)  # IDM: the noisy and the conditioning copy
    q, k, v = (torch.randn(2, lv + na, heads, dim, generator=g) for _ in range(3))
    video_out, action_out = mot_attention(
        (q[:, :lv], k[:, :lv], v[:, :lv]), (q[:, lv:], k[:, lv:], v[:, lv:]), first_frame_len=n0, mask=mask_name
    )
    mask = dense_reference_mask(n0, nf, na, mask=mask_name)
    dense = (
        F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        .transpose(1, 2)
        .flatten(2)
    )
    torch.testing.assert_close(torch.cat([video_out, action_out], dim=1), dense, rtol=1e-5, atol=1e-6)


def test_dense_reference_mask_is_the_paper_table():
    m = dense_reference_mask(1, 2, 1)  # [F0, Ff, Ff, A]
    expected = torch.tensor(
        [
            [1, 0, 0, 0],  # F0 sees F0
            [1, 1, 1, 0],  # Ff sees F0, Ff
            [1, 1, 1, 0],
            [1, 0, 0, 1],  # A sees F0 and A, never future video
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    bidirectional = dense_reference_mask(1, 2, 1, mask="video_bidirectional")
    expected[0, 1:3] = True  # the one difference: F0 also sees Ff
    assert torch.equal(bidirectional, expected)


def test_dense_reference_masks_of_joint_and_idm_are_the_paper_tables():
    joint = dense_reference_mask(1, 2, 1, mask="joint")  # [F0, Ff, Ff, A]
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(joint, expected)  # the one difference from Fast-WAM: A sees Ff
    idm = dense_reference_mask(1, 1, 1, mask="idm")  # [F0, Ff, F0c, Ffc, A]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],  # F0 sees F0
            [1, 1, 0, 0, 0],  # Ff sees F0, Ff
            [0, 0, 1, 0, 0],  # the conditioning copy: the same mask, never the noisy copy
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],  # A sees the conditioning copy and A only
        ],
        dtype=torch.bool,
    )
    assert torch.equal(idm, expected)


def test_unknown_mask_is_refused():
    with pytest.raises(ValueError, match="mask must be one of"):
        dense_reference_mask(1, 2, 1, mask="causal")


@torch.no_grad()
def test_actions_never_see_future_video():
    model = make_policy().model.eval()
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 48, 3, 2, 4, generator=g)
    context = torch.randn(2, 17, 32, generator=g)
    actions = torch.randn(2, 32, 7, generator=g)
    frame_t = torch.tensor([[0.0, 500.0, 500.0]] * 2)
    action_t = torch.tensor([300.0, 800.0])
    _, reference = model.velocity(latents, frame_t, context, actions, action_t)

    future_changed = latents.clone()
    future_changed[:, :, 1:] = torch.randn_like(future_changed[:, :, 1:]) * 5
    video_pred, same = model.velocity(future_changed, frame_t, context, actions, action_t)
    assert torch.equal(same, reference)

    first_changed = latents.clone()
    first_changed[:, :, 0] += 1.0
    _, different = model.velocity(first_changed, frame_t, context, actions, action_t)
    assert (different - reference).abs().max() > 1e-4


def test_action_loss_ignores_future_frames_but_video_loss_does_not():
    policy = make_policy()
    model = policy.model
    g = torch.Generator().manual_seed(4)
    latents = torch.randn(2, 48, 3, 2, 4, generator=g)
    context = torch.randn(2, 17, 32, generator=g)
    actions = torch.randn(2, 32, 7, generator=g)
    changed = latents.clone()
    changed[:, :, 1:] += 2.0
    torch.manual_seed(0)
    a = model.compute_loss(latents, context, actions)
    torch.manual_seed(0)
    b = model.compute_loss(changed, context, actions)
    torch.testing.assert_close(a.action, b.action, rtol=0, atol=0)
    assert not torch.allclose(a.video, b.video)
