"""The video expert inside the MoT loop computes exactly what diffusers' WanTransformer3DModel computes."""

import torch
from diffusers import WanTransformer3DModel

from lerobot_fastwam.video_expert import embed_video, unembed_video

from .conftest import make_policy


def _reference(video):
    reference = WanTransformer3DModel.from_config(video.config)
    reference.load_state_dict(video.state_dict())
    return reference.eval()


def _ours(model, latents, frame_t, context, isolate_first_frame):
    emb = embed_video(model.video, latents, frame_t, context)
    from lerobot_fastwam.mot import ExpertStream

    stream = ExpertStream(emb.tokens, emb.modulation, emb.rope, emb.context)
    tokens_per_frame = emb.tokens.shape[1] // latents.shape[2]
    xv, xa = model.mot.joint(stream, None, tokens_per_frame, isolate_first_frame=isolate_first_frame)
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
    frame_t = torch.zeros(2, 1)
    ours = _ours(model, latents, frame_t, context, isolate_first_frame=True)
    ref = _reference(model.video)(latents, _per_token(frame_t, 8), context).sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_several_frames_with_full_video_attention_equal_diffusers():
    model = make_policy().model.eval()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 48, 3, 4, 8, generator=g)
    context = torch.randn(2, 17, 32, generator=g)
    frame_t = torch.tensor([[0.0, 731.0, 731.0], [0.0, 52.0, 52.0]])  # first frame clean, per-token timesteps
    ours = _ours(model, latents, frame_t, context, isolate_first_frame=False)
    ref = _reference(model.video)(latents, _per_token(frame_t, 8), context).sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # With the Fast-WAM mask the first frame no longer sees the future, so the outputs differ.
    masked = _ours(model, latents, frame_t, context, isolate_first_frame=True)
    assert not torch.allclose(masked, ref, atol=1e-4)
