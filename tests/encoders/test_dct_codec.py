"""The weight-free DCT codec: the Wan2.2 VAE's shape, an orthonormal projection that keeps the image."""

import torch

from lerobot_fastwam.encoders.dct_codec import DCTVideoCodec, codec_filters
from lerobot_fastwam.encoders.latent_encoder import LatentEncoder


def square_at(row: int, col: int, size: int = 128, half: int = 8) -> torch.Tensor:
    """A [1, 3, 1, H, W] frame in [0, 1]: a bright square on grey."""
    frame = torch.full((1, 3, 1, size, size), 0.4)
    frame[..., row - half : row + half, col - half : col + half] = torch.tensor([0.9, 0.7, 0.2]).view(1, 3, 1, 1, 1)
    return frame


def test_filters_are_orthonormal():
    filters = codec_filters().flatten(1).double()
    torch.testing.assert_close(filters @ filters.T, torch.eye(48, dtype=torch.float64), atol=1e-5, rtol=0)


def test_the_vae_shape_with_a_causal_first_frame():
    codec = DCTVideoCodec()
    clip = torch.rand(2, 3, 9, 64, 128) * 2 - 1
    latents = codec.encode(clip)
    assert latents.shape == (2, 48, 3, 4, 8)
    # The first latent frame is the first frame alone; the next is the mean of frames 1-4.
    torch.testing.assert_close(latents[:, :, :1], codec.encode(clip[:, :, :1]))
    torch.testing.assert_close(latents[:, :, 1:2], codec.encode(clip[:, :, 1:5].mean(2, keepdim=True)))
    assert codec.decode(latents).shape == clip.shape


def test_decoding_then_encoding_gives_the_latents_back():
    codec = DCTVideoCodec()
    clip = torch.rand(1, 3, 5, 32, 32) * 0.6 - 0.3  # decoded frames stay inside [-1, 1]: no clipping
    latents = codec.encode(clip)
    torch.testing.assert_close(codec.encode(codec.decode(latents)), latents, atol=1e-5, rtol=0)


def test_latents_keep_where_an_object_is():
    encoder = LatentEncoder.dct()
    for row, col in [(24, 24), (40, 96), (100, 60)]:
        decoded = encoder.decode(encoder(square_at(row, col)))[0, :, 0]
        brightest = torch.nonzero(decoded[0] == decoded[0].max())[0]  # red channel: the square
        assert abs(int(brightest[0]) - row) <= 8 and abs(int(brightest[1]) - col) <= 8
    moved = (encoder(square_at(24, 24)) - encoder(square_at(24, 40))).norm()
    assert moved > 0.5 * encoder(square_at(24, 24)).norm()
