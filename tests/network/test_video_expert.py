"""The video expert inside the MoT loop computes exactly what diffusers' WanTransformer3DModel computes."""

import torch
from diffusers import WanTransformer3DModel

from lerobot_fastwam.network.mot import ExpertStream, MixtureOfTransformers
from lerobot_fastwam.network.video_expert import embed_video, unembed_video

from ..helpers import make_policy


def _reference(video):
    reference = WanTransformer3DModel.from_config(video.config)
    reference.load_state_dict(video.state_dict())
    return reference.eval()


def _ours(model, latents, frame_t, context, mask):
    """Our layer loop over the video tokens alone, under ``mask``: the model's own ("fastwam"), or
    "video_bidirectional" (the same experts in a loop where the first frame also reads the future, as in Wan)."""
    emb = embed_video(model.video, latents, frame_t, context)
    mot = model.mot
    if mask != mot.mask:
        mot = MixtureOfTransformers(video=model.video, action=model.action, mask=mask)
    stream = ExpertStream(emb.tokens, emb.modulation, emb.rope, emb.context)
    tokens_per_frame = emb.tokens.shape[1] // latents.shape[2]
    xv, xa = mot.joint(stream, None, tokens_per_frame)
    assert xa is None
    return unembed_video(model.video, xv, emb)


def _per_token(frame_t, tokens_per_frame):
    return frame_t.repeat_interleave(tokens_per_frame, dim=1)


@torch.no_grad()
def test_single_first_frame_equals_diffusers():
    model = make_policy().model.eval()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 48, 1, 4, 8, generator=g)  # 1 latent frame, 2x4 tokens
    context = torch.randn(2, 17, 32, generator=g)
    frame_t = torch.zeros(2, 1)  # a single frame: both masks are plain self-attention
    ours = _ours(model, latents, frame_t, context, mask="fastwam")
    ref = _reference(model.video)(latents, _per_token(frame_t, 8), context).sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_several_frames_with_full_video_attention_equal_diffusers():
    model = make_policy().model.eval()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 48, 3, 4, 8, generator=g)
    context = torch.randn(2, 17, 32, generator=g)
    frame_t = torch.tensor([[0.0, 731.0, 731.0], [0.0, 52.0, 52.0]])  # per frame, first frame clean
    ours = _ours(model, latents, frame_t, context, mask="video_bidirectional")
    ref = _reference(model.video)(latents, _per_token(frame_t, 8), context).sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # With the Fast-WAM mask the first frame no longer sees the future, so the outputs differ.
    masked = _ours(model, latents, frame_t, context, mask="fastwam")
    assert not torch.allclose(masked, ref, atol=1e-4)
