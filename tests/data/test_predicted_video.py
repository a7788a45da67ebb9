"""The imagined video is laid out to be watched: each imagined frame next to the frame it was imagined from, both
labelled, held for a replanning period (``data.predicted_video``; LeRobot writes it at the control rate)."""

import torch

from lerobot_fastwam.data.predicted_video import labelled_chunks

PER_CHUNK, STRIDE, HOLD, H, W = 5, 4, 10, 32, 128  # a label needs about 110 pixels


def test_each_imagined_frame_sits_next_to_its_chunks_current_frame_held_and_labelled():
    chunks = 2
    frames = torch.rand(3, chunks * PER_CHUNK, H, W)
    video = labelled_chunks(frames, PER_CHUNK, STRIDE, HOLD)
    band = video.shape[1] - H
    assert video.dtype == torch.uint8 and video.shape == (chunks * (PER_CHUNK - 1) * HOLD, band + H, 2 * W, 3)
    assert band > 0 and video.shape[1] % 2 == 0  # LeRobot's H.264 writer needs an even height
    pictures = (frames.permute(1, 2, 3, 0) * 255).round().to(torch.uint8)
    for chunk in range(chunks):
        for k in range(1, PER_CHUNK):
            first = (chunk * (PER_CHUNK - 1) + k - 1) * HOLD
            held = video[first : first + HOLD]
            assert (held == held[0]).all()  # one picture per replanning period
            assert torch.equal(held[0, band:, :W], pictures[chunk * PER_CHUNK])  # now, left
            assert torch.equal(held[0, band:, W:], pictures[chunk * PER_CHUNK + k])  # imagined, right
    labels = video[:, :band]
    assert labels.any()  # written in the band above the pictures
    assert not torch.equal(labels[0, :, :W], labels[HOLD * (PER_CHUNK - 1), :, :W])  # "chunk 1" -> "chunk 2"
    assert not torch.equal(labels[0, :, W:], labels[HOLD, :, W:])  # "+4 frames" -> "+8 frames"


def test_a_policy_without_imagined_frames_shows_its_current_frame():
    video = labelled_chunks(torch.rand(3, 3, H, W), 1, STRIDE, HOLD)  # num_video_frames=1: three chunks
    assert video.shape[0] == 3 * HOLD
